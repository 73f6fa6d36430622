"""The live server's guard: the token, the Host and Origin headers, JSON-only POSTs, and client
paths that resolve only inside the served directories."""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_plus

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Where a request may carry the token (names, not secrets).
TOKEN_COOKIE = "vanishing_token"  # noqa: S105
TOKEN_HEADER = "x-token"  # noqa: S105


ACCESS = logging.getLogger("vanishing.live.access")
# On every response: only the page's own files may run or style it (index.html and static/ have
# no inline script or style), it is framed by no other page, no type is sniffed, and no address
# (with its ?token=) is sent on as a referrer.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
}


class Refused(Exception):
    """A request the API refuses: its HTTP status and the one-line reason sent as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host headers that name this server: 127.0.0.1, localhost or `host`, at `port`."""
    names = {"127.0.0.1", "localhost", f"[{host}]" if ":" in host else host}
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:  # a browser leaves the default port out
        hosts |= names
    return frozenset(hosts)


def given_token(request: Request) -> str:
    """The token the request carries: ?token=, the X-Token header or the cookie ('' if none)."""
    return (
        request.query_params.get("token")
        or request.headers.get(TOKEN_HEADER)
        or request.cookies.get(TOKEN_COOKIE)
        or ""
    )


class Guard:
    """ASGI middleware refusing, before any route runs: a foreign Host header (400, DNS
    rebinding), a missing or wrong token (403), and a POST from another origin or not of
    application/json (403: a plain HTML form cannot send JSON)."""

    def __init__(self, app: ASGIApp, token: str, hosts: frozenset[str]) -> None:
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        try:
            self.check(Request(scope))
        except Refused as refused:
            response = JSONResponse({"error": refused.message}, status_code=refused.status)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, request: Request) -> None:
        host = request.headers.get("host", "")
        if host not in self.hosts:
            raise Refused(
                400, f"unexpected Host header {host!r}: this server answers only to itself"
            )
        if not secrets.compare_digest(given_token(request).encode(), self.token.encode()):
            raise Refused(403, "missing or wrong token: open the URL the server printed")
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin is not None and origin.removeprefix("http://") not in self.hosts:
                raise Refused(403, f"cross-origin request from {origin!r} refused")
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise Refused(403, f"a POST must be application/json, got {kind or 'none'!r}")


class Served:
    """ASGI middleware around every request, outside the Guard: SECURITY_HEADERS on every
    response, one access-log line per request (`access_line`: the token never in it), and a
    one-line 500 for an error that no route caught."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as e:
            line = traceback.format_exception_only(type(e), e)[-1].strip()
            ACCESS.error("internal error: %s, in %s", line, self.request_line(scope))
            if status:  # the response has begun: the server closes the connection
                raise
            response = JSONResponse({"error": f"internal error: {line}"}, status_code=500)
            await response(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            ACCESS.info("%s %s %.1f ms", self.request_line(scope), status, seconds * 1000)

    def request_line(self, scope: Scope) -> str:
        """`client METHOD path?query`, the token's value left out (`access_line`)."""
        client = scope.get("client") or ("-", 0)
        return access_line(
            str(client[0]),
            scope["method"],
            scope["path"],
            scope.get("query_string", b""),
            self.token,
        )


def access_line(client: str, method: str, path: str, query: bytes, token: str) -> str:
    """A request as the access log writes it: the path and the query decoded, `token=`'s value
    and the token anywhere else written `***`, and characters that are not printable escaped
    (a request cannot write lines of its own into the log)."""
    pieces = []
    for piece in query.decode("latin-1").split("&") if query else []:
        key, equals, value = (unquote_plus(part) for part in piece.partition("="))
        pieces.append(f"{key}{equals}{'***' if key.strip().lower() == 'token' else value}")
    text = path + ("?" + "&".join(pieces) if pieces else "")
    if token:
        text = text.replace(token, "***")
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return f"{client} {method} {shown}"


def run_path(roots: Sequence[Path], root: int, run_dir: Path) -> str:
    """A run directory as the client names it: its root's index, then its path below the root."""
    relative = run_dir.relative_to(roots[root]).as_posix()
    return str(root) if relative == "." else f"{root}/{relative}"


def resolve(roots: Sequence[Path], given: str) -> Path:
    """The directory a client path (`<root index>/<relative path>`) names, inside its root
    (`roots` are resolved): '..', an absolute path, a bad index or a symlink leading out are
    refused (400), a directory that does not exist is 404."""
    parts = PurePosixPath(given).parts
    if not parts or given.startswith("/") or "\\" in given or ".." in parts:
        raise Refused(400, f"bad path {given!r}: expected <root index>/<path inside it>")
    index, *rest = parts
    if not (index.isascii() and index.isdecimal()) or int(index) >= len(roots):
        raise Refused(400, f"bad path {given!r}: no served directory {index!r}")
    if "\0" in given:
        raise Refused(400, f"bad path {given!r}: a NUL character")
    root = roots[int(index)]
    path = root.joinpath(*rest).resolve()
    if not path.is_relative_to(root):
        raise Refused(400, f"bad path {given!r}: it leads outside the served directory")
    if not path.is_dir():
        raise Refused(404, f"no such run directory: {given!r}")
    return path


def record_file(run_dir: Path, name: str) -> Path | None:
    """A record file of a served run directory, or None where it is a symlink: records are never
    links, and one could lead outside the served directories."""
    path = run_dir / name
    return None if path.is_symlink() else path
