"""One bounded HTTP exchange on urllib3, the box's only HTTP client library.

`requests` added a fifth of the CPU of every GetRewards (session merging, environment proxy and
netrc lookups) and 4 MiB of memory to a process that talks to one host it knows; urllib3 (which
`requests` runs on anyway) is enough. `exchange` sends one request and reads the whole answer
within a size cap and a time limit counted from the start (a socket timeout alone lets a host
that trickles bytes hold a call for ever); `Answer` carries what the callers read of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

MAX_ANSWER_BYTES = 4 * 1024 * 1024  # no host answer is near this; a hostile one is cut here


class HttpFailure(Exception):
    """No usable answer: a connection problem, a timeout, or an answer over the size cap."""

    def __init__(self, reason: str, timeout: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.timeout = timeout
        self.status = status


@dataclass
class Answer:
    status_code: int
    reason: str
    headers: urllib3.HTTPHeaderDict
    content: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


def new_pool(ca_file: str | None = None, maxsize: int = 8) -> urllib3.PoolManager:
    """A thread-safe pool, TLS always verified (against `ca_file` when given, else the
    system's store), no retries (the callers decide), no redirects followed."""
    return urllib3.PoolManager(
        num_pools=4,
        maxsize=maxsize,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_file,
        retries=False,
    )


def exchange(
    pool: urllib3.PoolManager,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout_s: float,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> Answer:
    started = time.monotonic()
    try:
        reply = pool.request(
            method,
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            preload_content=False,
            redirect=False,
        )
    except NewConnectionError as exc:  # a subclass of urllib3's timeout, for history's sake
        raise HttpFailure(reason(exc)) from None
    except (Urllib3Timeout, TimeoutError):
        raise HttpFailure(f"no answer within {timeout_s:g} s", timeout=True) from None
    except (HTTPError, OSError) as exc:
        raise HttpFailure(reason(exc)) from None
    try:
        content = bytearray()
        for chunk in reply.stream(64 * 1024):
            content += chunk
            if len(content) > max_bytes:
                raise HttpFailure(f"answer over {max_bytes} bytes", status=reply.status)
            if time.monotonic() - started > timeout_s:
                raise HttpFailure(f"no whole answer within {timeout_s:g} s", timeout=True)
    except (Urllib3Timeout, TimeoutError):
        raise HttpFailure(f"no whole answer within {timeout_s:g} s", timeout=True) from None
    except (HTTPError, OSError) as exc:
        raise HttpFailure(reason(exc)) from None
    finally:
        reply.release_conn()
    return Answer(reply.status, reply.reason or "", reply.headers, bytes(content))


def json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def reason(exc: BaseException) -> str:
    """A short, plain reason for a failed exchange."""
    text = str(exc)
    for hint in ("Connection refused", "Name or service not known", "certificate verify failed"):
        if hint in text:
            return hint.lower()
    return type(exc).__name__
