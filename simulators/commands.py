"""The `connectbox` commands this distribution adds (entry-point group `connectbox.commands`).

`app/cli.py` lists the group: where the simulators are not installed (the production image),
`connectbox` does not offer these commands at all. Each entry is a `Command`: its one-line help
and where its `main(argv) -> int` lives, imported only when the command runs, so listing the
commands costs `connectbox run` nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    help: str
    target: str  # "package.module:function", the function taking the rest of the command line

    def main(self, argv: list[str]) -> int:
        module, _, name = self.target.partition(":")
        return int(getattr(importlib.import_module(module), name)(argv) or 0)


DEMO = Command("reference host + box + simulated POS on loopback", "simulators.demo:main")
HOST_SIM = Command("run the reference central host", "simulators.host.cli:main")
POS_SIM = Command("play scripted sales as a POS", "simulators.pos.cli:main")
READER_SIM = Command(
    "a virtual serial card reader on a pseudo-terminal", "simulators.readers.cli:main"
)
