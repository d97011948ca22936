"""The security baseline: bearer tokens, the ``Host`` and ``Origin`` checks, and the body cap.

A token is the caller's identity: a job belongs to the token that made it (its owner id is a hash
of the token, never the token itself), and another token asking for it gets 404, as for a job that
does not exist. ``Host`` is checked against the names the server answers to (a DNS-rebinding page
sends its own name), and ``Origin``, where a browser sends one, must be the server's own origin or
one allowed by ``--allow-origin`` (a cross-site page cannot drive the API with a visitor's token).
The body cap is enforced on ``Content-Length`` and again on the bytes actually received.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import ServeError, is_loopback

ANONYMOUS = "anonymous"
MIN_TOKEN_CHARS = 16
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def owner_id(token: str) -> str:
    """The id a token's jobs are filed under (a hash: the store never holds a token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]


def load_tokens(path: Path) -> dict[str, str]:
    """Read a token file: one token per line, blank lines and ``#`` comments ignored.

    Returns:
        Token -> owner id.

    Raises:
        ServeError: An unreadable file, no token, or a token shorter than 16 characters.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"--token-file {path}: cannot read it ({exc})") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise ServeError(f"--token-file {path}: holds no token (one per line)")
    short = [i + 1 for i, token in enumerate(tokens) if len(token) < MIN_TOKEN_CHARS or " " in token]
    if short:
        raise ServeError(f"--token-file {path}: token(s) {short} are shorter than {MIN_TOKEN_CHARS} characters or "
                         "contain spaces (make one with: python -c 'import secrets; print(secrets.token_urlsafe())')")
    return {token: owner_id(token) for token in tokens}


def caller(authorization: str | None, tokens: dict[str, str] | None) -> str | None:
    """The owner id of a request's ``Authorization: Bearer`` token; None when it is missing or wrong.

    Args:
        authorization: The header's value.
        tokens: Token -> owner id; None when the service runs without authentication.
    """
    if tokens is None:
        return ANONYMOUS
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    given_bytes = given.strip().encode("utf-8")
    found = None
    for token, owner in tokens.items():  # every token compared, in constant time each
        if hmac.compare_digest(token.encode("utf-8"), given_bytes):
            found = owner
    return found


@dataclass(frozen=True)
class Gate:
    """Which ``Host`` names and ``Origin`` values the server accepts.

    Attributes:
        hosts: Host names (lower case, no port).
        origins: Extra allowed origins (``scheme://host[:port]``).
        scheme: ``https`` with TLS, else ``http``.
    """

    hosts: frozenset[str]
    origins: frozenset[str]
    scheme: str

    @classmethod
    def build(cls, bind: str, extra_hosts: Iterable[str] = (), origins: Iterable[str] = (),
              tls: bool = False) -> Gate:
        """The gate of a server bound to ``bind``: its own name, localhost on loopback, and the extras."""
        hosts = {bind.strip("[]").lower(), *(h.strip("[]").lower() for h in extra_hosts)}
        if is_loopback(bind) or bind in ("0.0.0.0", "::"):
            hosts.update(_LOOPBACK_NAMES)
        if bind in ("0.0.0.0", "::"):  # every interface: the machine's own names too
            hosts.update(name.lower() for name in (socket.gethostname(), socket.getfqdn()))
        return cls(frozenset(hosts), frozenset(o.rstrip("/").lower() for o in origins), "https" if tls else "http")

    def host_ok(self, host: str | None) -> bool:
        """Whether a ``Host`` header names this server."""
        if not host:
            return False
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:8000
            name = name[1 : name.find("]")] if "]" in name else name
        else:
            name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        return name in self.hosts

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Whether a request's ``Origin`` (absent for non-browser clients) may call the API."""
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        return host is not None and origin == f"{self.scheme}://{host.strip().lower()}"


class GateMiddleware:
    """ASGI middleware: foreign ``Host`` -> 400, foreign ``Origin`` -> 403, a body over the cap -> 413.

    Args:
        app: The application behind it.
        gate: The accepted hosts and origins.
        max_body: The body cap in bytes.
    """

    def __init__(self, app: ASGIApp, gate: Gate, max_body: int) -> None:
        self.app, self.gate, self.max_body = app, gate, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host")
        if not self.gate.host_ok(host):
            await _refuse(send, 400, f"Host header {host!r} is not a name of this server (start it with "
                          "--allow-host NAME to accept it)")
            return
        if not self.gate.origin_ok(headers.get("origin"), host):
            await _refuse(send, 403, f"cross-site request from origin {headers.get('origin')!r} refused "
                          "(allow it with --allow-origin)")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _refuse(send, 413, f"request body of {length} bytes is over the limit of {self.max_body} bytes "
                          "(--max-body-mb)")
            return
        await self.app(scope, _capped(receive, self.max_body), send)


class BodyTooLarge(Exception):
    """A streamed body passed the cap (raised from ``receive``; the app turns it into 413)."""


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"request body is over the limit of {limit} bytes (--max-body-mb)")
        return message

    return wrapped


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
