"""What every request to the app must pass before a route sees it.

- `Host` must name this server (loopback, or the address given with `--host`): a page on
  another site that rebinds its DNS name to 127.0.0.1 sends its own name and is refused.
- Requests that change state (POST, ...) must come from the app's own pages: a foreign
  `Origin` or a cross-site `Sec-Fetch-Site` is refused, and bodies must be declared JSON
  (a plain HTML form cannot send that without the browser asking first).
- Bodies are capped; a larger one is refused before it is read into memory.
- Off loopback every API call and output file needs the token printed at start (the page
  keeps it in a same-site cookie once opened with `?token=...`).

Written as plain ASGI so that it stands in front of everything, static files included.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::", ""})
MAX_BODY_BYTES = 64 * 1024  # a generate request is a few hundred bytes
TOKEN_COOKIE = "sdm_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROTECTED_PREFIXES = ("/api/", "/outputs/")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    return host.strip("[]") in LOOPBACK_HOSTS or host.startswith("127.")


def new_token() -> str:
    return secrets.token_urlsafe(18)


@dataclass
class AccessPolicy:
    """Who may talk to the app: the hosts it answers to and the token off loopback."""

    bind_host: str = "127.0.0.1"
    token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES

    def host_allowed(self, host: str) -> bool:
        name = _host_name(host)
        if is_loopback(name):
            return True
        bind = self.bind_host.strip("[]")
        if bind in UNSPECIFIED_HOSTS:
            return True  # bound to every address: any name may reach it, the token guards it
        return name == bind


def _host_name(host: str) -> str:
    """`[::1]:8000` -> `::1`, `example.org:80` -> `example.org`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    def __init__(self, app: Callable[..., Awaitable[None]], policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _reply(send, *refusal)
            return
        cookie = self._token_cookie(scope)
        await self.app(
            scope, _capped(receive, self.policy.max_body_bytes), _with_cookie(send, cookie)
        )

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if not self.policy.host_allowed(host):
            return 421, f"this server does not answer to the host {host!r}"
        method, path = scope["method"], scope["path"]
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                return 403, "requests from another site are refused"
            if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return 403, "requests from another site are refused"
            if headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return 415, "send the body as application/json"
        length = headers.get("content-length")
        if length is not None and (
            not length.isdigit() or int(length) > self.policy.max_body_bytes
        ):
            return 413, f"the request body is over {self.policy.max_body_bytes} bytes"
        needs_token = self.policy.token is not None and path.startswith(PROTECTED_PREFIXES)
        if needs_token and not self._has_token(scope, headers):
            return 401, "this server needs its token: open the address it printed at start"
        return None

    def _given_tokens(self, scope: Scope, headers: dict[str, str]) -> list[str]:
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            given.append(authorization[7:].strip())
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookies = SimpleCookie()
        if TOKEN_COOKIE in cookies:
            given.append(cookies[TOKEN_COOKIE].value)
        return given

    def _has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        token = self.policy.token or ""
        return any(hmac.compare_digest(g, token) for g in self._given_tokens(scope, headers))

    def _token_cookie(self, scope: Scope) -> str | None:
        """A page opened with the right ?token= keeps it for its own later requests."""
        if self.policy.token is None:
            return None
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        if any(hmac.compare_digest(g, self.policy.token) for g in given):
            return f"{TOKEN_COOKIE}={self.policy.token}; Path=/; HttpOnly; SameSite=Strict"
        return None


class BodyTooLarge(HTTPException):
    """Raised while a route reads a body past the limit (FastAPI passes HTTP errors on)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes")


def _capped(receive: Receive, limit: int) -> Receive:
    """Counts a body sent without Content-Length (chunked) and stops it at the limit."""
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


def _with_cookie(send: Send, cookie: str | None) -> Send:
    if cookie is None:
        return send

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message["headers"], (b"set-cookie", cookie.encode())],
            }
        await send(message)

    return wrapped


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
