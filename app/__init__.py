"""Connect Box: the running service (POS server, host relay, status page)."""

__version__ = "0.1.0"
