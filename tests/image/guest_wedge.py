"""Runs INSIDE the booted development image (tests/image/test_boot.py copies nothing: the image
build installs this file in /usr/lib/connectbox/tests/): a keyboard-wedge card reader made with
/dev/uinput (python-evdev UInput) types one swipe, as a USB wedge would.

    /opt/connectbox/current/venv/bin/python guest_wedge.py TEXT

The device is named "Connect Box test wedge": the development image's udev rule links it to
/dev/connectbox/test-wedge, which its configuration binds to register 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from evdev import UInput
from evdev import ecodes as e

sys.path.insert(0, str(Path(__file__).parent))
from test_keyboard_reader import KEYMAP, typing  # noqa: E402  (the same US key map)

LINK = Path("/dev/connectbox/test-wedge")


def main(text: str) -> int:
    codes = sorted({code for code, _shift in KEYMAP.values()} | {e.KEY_LEFTSHIFT})
    with UInput(
        {e.EV_KEY: codes}, name="Connect Box test wedge", vendor=0x0801, product=0x0002
    ) as ui:
        deadline = time.monotonic() + 10
        while not LINK.exists():
            if time.monotonic() > deadline:
                print(f"no {LINK}: the udev rule did not match")
                return 1
            time.sleep(0.1)
        print(f"wedge {ui.device.path if ui.device else '?'} is {LINK}")
        time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 4.0)  # the service opens it
        for code, value in typing(text.replace("\\r", "\r")):
            ui.write(e.EV_KEY, code, value)
            ui.syn()
            time.sleep(0.002)
        time.sleep(1.0)  # the idle gap ends the frame before the device goes away
    print("typed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
