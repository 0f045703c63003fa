"""The HTTP core: ``PUT {url}/files/{file_id}``, body streamed from the spool file.

``file_id`` is stable for a file, so a repeated PUT is the same request to the same URL and the core
must treat it as idempotent (the contract, ``docs/http-core.md``): a repeated PUT of a file id it
already holds answers success, and 409 means only that the reporting task is not in preparation, with
the code ``TASK_NOT_IN_PREPARATION`` in its body. The status decides what the pipeline does: 2xx
delivered; 409 with that code retried for a while; a 409 without it breaks the contract (it may be a
core that holds the file from an attempt whose answer was lost) and is retried, never read as a
rejection; other 4xx rejected with the core's message; 5xx, timeouts, refused or broken connections
(and 408/425/429, which HTTP itself defines as "try again later") kept and retried; a redirect means
the route's url is wrong: ``Misconfigured``, which ends in ``RouteBroken`` after a few tries.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from urllib.parse import quote

import aiofiles
import httpx

from gateway.config import HttpRoute
from gateway.forward.base import (
    CHUNK_BYTES,
    Digest,
    Misconfigured,
    Outbound,
    Rejected,
    TaskNotReady,
    Transient,
)
from gateway.text import visible

MESSAGE_CHARS = 500
"""How much of the core's message a rejection keeps."""

_RESPONSE_BYTES = 64 * 1024  # read no more of a response body than a message needs
_TRY_LATER = frozenset({408, 425, 429})
TASK_NOT_IN_PREPARATION = "TASK_NOT_IN_PREPARATION"


class HttpForwarder:
    """One connection pool per route; ``aclose`` releases it."""

    def __init__(self, route: HttpRoute) -> None:
        self.base = route.url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=route.timeout_seconds, follow_redirects=False)

    def url_for(self, item: Outbound) -> str:
        return f"{self.base}/files/{quote(item.file_id, safe='')}"

    async def send(self, item: Outbound) -> str:
        url = self.url_for(item)
        try:
            async with (
                aclosing(_body(item)) as body,
                self._client.stream("PUT", url, content=body, headers=_headers(item)) as response,
            ):
                text = await _read_some(response)
        except httpx.TimeoutException as exc:
            what = type(exc).__name__
            raise Transient(f"PUT {url}: no answer within the route's timeout ({what})") from exc
        except httpx.TransportError as exc:
            raise Transient(f"PUT {url}: {type(exc).__name__}: {exc or 'connection failed'}") from exc
        return _outcome(url, response, text)

    async def aclose(self) -> None:
        await self._client.aclose()


def _headers(item: Outbound) -> dict[str, str]:
    return {
        "X-Station": item.station,
        "X-Transfer-Code": item.transfer_code,
        "X-Institution": item.institution,
        "X-Table": item.table,
        "X-Data-Date": item.data_date,
        "X-Batch": item.batch,
        "X-Mode": item.mode,
        "X-SHA256": item.sha256.lower(),
        "X-File-Name": quote(item.name, safe=""),  # UTF-8 percent-encoded; valid names are unchanged
        "Content-Length": str(item.size),
        "Content-Type": "application/octet-stream",
    }


async def _body(item: Outbound) -> AsyncGenerator[bytes]:
    """The file in chunks; the last one is held back until the whole file matched its sha256 and size.

    A file changed since validation therefore raises before the body is complete, and the core never
    receives a full request for it.
    """
    digest = Digest(item)
    pending = b""
    async with aiofiles.open(item.path, "rb") as f:
        while chunk := await f.read(CHUNK_BYTES):
            digest.update(chunk)
            if pending:
                yield pending
            pending = chunk
    digest.verify()
    if pending:
        yield pending


async def _read_some(response: httpx.Response) -> str:
    """The start of the response body as text (enough for a message), tolerant of bad encodings."""
    data = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= _RESPONSE_BYTES:
                break
    except httpx.DecodingError:
        pass  # keep what was decoded: the status alone still decides
    return data[:_RESPONSE_BYTES].decode("utf-8", "replace")


def _outcome(url: str, response: httpx.Response, text: str) -> str:
    status = response.status_code
    if 200 <= status < 300:
        return f"PUT {url}: {status}"
    code, message = _parse(text)
    message = message[:MESSAGE_CHARS]
    said = f"HTTP {status} {response.reason_phrase}".strip()
    if status == 409 and code == TASK_NOT_IN_PREPARATION:
        raise TaskNotReady(message or said)
    if status == 409:
        raise Transient(
            f"PUT {url}: {said} without code {TASK_NOT_IN_PREPARATION}: the contract reserves 409 for the "
            f"task state (a file id the core holds must answer success); retried"
            + (f": {message}" if message else "")
        )
    if 400 <= status < 500 and status not in _TRY_LATER:
        raise Rejected("CORE_REJECTED", message or said, status=status)
    if 300 <= status < 400:
        where = response.headers.get("Location", "?")
        raise Misconfigured(f"PUT {url}: {said}, redirected to {visible(where)[:200]}; fix the route's url")
    raise Transient(f"PUT {url}: {said}" + (f": {message}" if message else ""))


def _parse(text: str) -> tuple[str | None, str]:
    """The core's ``code`` and ``message`` from a JSON body, else no code and the body as the message."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, text.strip()
    code = data.get("code")
    message = data.get("message")
    return (
        code if isinstance(code, str) else None,
        message.strip() if isinstance(message, str) else text.strip(),
    )
