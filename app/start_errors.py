"""What stops the service from starting, said with its fix: which listener and port, which
setting. The CLI names the setting in the configuration file, the demo its own option."""

from __future__ import annotations

import errno


class StartError(Exception):
    """Why the box cannot start, and the setting (`key`) that fixes it."""

    def __init__(self, problem: str, remedy: str, key: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.remedy = remedy
        self.key = key

    def advice(self, setting: str = "") -> str:
        """'<problem>. <remedy> with <setting>.'; `setting` says where `key` is changed."""
        return f"{self.problem}. {self.remedy} with {setting or self.key}."


def cannot_listen(what: str, address: str, error: OSError, key: str) -> StartError:
    """A listener's port that cannot be opened; `key` moves it."""
    remedy = "Stop the other program, or choose another port"
    return StartError(bind_problem(what, address, error), remedy, key)


def bind_problem(what: str, address: str, error: OSError) -> str:
    """'the POS listener cannot open 127.0.0.1:9000: port 9000 is in use (...)'."""
    host, _, port = address.rpartition(":")
    reasons = {
        errno.EADDRINUSE: f"port {port} is in use (another program, or another connectbox, "
        "listens there)",
        errno.EACCES: f"no permission for port {port} (ports below 1024 need privileges)",
        errno.EADDRNOTAVAIL: f"this machine has no address {host.strip('[]')}",
    }
    reason = reasons.get(error.errno or 0, error.strerror or str(error))
    return f"the {what} cannot open {address}: {reason}"
