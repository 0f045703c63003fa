"""Request-level protections: CSRF tokens, the per-address login throttle, and response headers."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def csrf_token(session: dict[str, object]) -> str:
    """The session's CSRF token (synchronizer pattern), made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok(session: dict[str, object], submitted: object) -> bool:
    token = session.get("csrf")
    return isinstance(token, str) and isinstance(submitted, str) and hmac.compare_digest(token, submitted)


class Throttle:
    """At most ``limit`` login attempts per client address in any ``window`` seconds.

    Beside the per-account lock-out: that one stops guessing one account's password, this one stops one
    address from trying many accounts.
    """

    def __init__(self, limit: int = 20, window: float = 300) -> None:
        self._limit = limit
        self._window = window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:  # forget idle addresses rather than grow without bound
                self._seen = {a: q for a, q in self._seen.items() if q and q[-1] > now - self._window}
            times = self._seen.setdefault(address, deque())
            while times and times[0] <= now - self._window:
                times.popleft()
            if len(times) >= self._limit:
                return False
            times.append(now)
            return True


class SecurityHeaders:
    """Adds the same protective headers to every response (no framing, no sniffing, no caching)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in _HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        await self.app(scope, receive, with_headers)
