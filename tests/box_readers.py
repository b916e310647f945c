"""Waiting for a test box's readers to settle, for tests that swipe on a virtual reader."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tests.waiting import wait_for

if TYPE_CHECKING:
    from app.box import Box

BANNER_WINDOW_S = 0.5  # SerialReader's default: a frame this soon after opening is a banner


def wait_until_reading(box: Box, path: str, timeout: float = 10.0) -> None:
    """Until `box` reads frames from `path` for good.

    Soon after start-up the box's management thread applies the reference host's device config,
    whose reader bindings (a vendor match) make the reader service reopen every reader. A swipe
    before that rebind is done, or within the sign-on banner window of the reopened port, would
    be lost: so wait for the rebind itself, then for the port to be open, then past the window.
    """
    readers = box.readers

    def settled() -> bool:
        state = readers.states.get(path)
        return (
            any(b.match for b in readers.bindings)  # the provider's bindings are in
            and readers.phase == "running"
            and state is not None
            and state.state == "connected"
        )

    assert wait_for(settled, timeout), (readers.bindings, readers.snapshot())
    # A lower bound, not a hope: "connected" is reported after the port opened, so a swipe
    # written this long after it starts after the banner window, however slow the machine.
    time.sleep(BANNER_WINDOW_S + 0.1)
