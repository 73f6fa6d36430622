"""`vanishing live`'s server: the app on uvicorn, its URL with the token, and a shutdown that
stops the training first (the runs left resume later)."""

from __future__ import annotations

import logging
import secrets
import signal
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from vanishing.frontends.live.app import LiveState, create_app
from vanishing.jobs.common import ensure_writable

GRACE_SECONDS = 5  # uvicorn's wait for open connections once the streams have been ended
JOIN_SECONDS = 30  # the most a job's thread is waited for (the executor stops within a step)


class LiveServer(uvicorn.Server):
    """uvicorn's server, which on Ctrl-C or SIGTERM first ends the event streams and tells the
    training to stop: uvicorn waits for open connections before it shuts down, and a stream
    stays open while its runs train."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's, but the signal is not raised again once the server has shut down: a
        stopped server is the normal end of `vanishing live`, exit code 0."""
        self.on_exit()
        if self.should_exit and sig == signal.SIGINT:  # a second Ctrl-C: stop waiting
            self.force_exit = True
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one, read back from the socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - only compared
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/?token={token}"


def serve(
    dirs: Sequence[Path | str],
    out: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    open_browser: bool = True,
    workers: int | None = None,
    data_options: dict[str, Any] | None = None,
) -> int:
    """Serve the live page until Ctrl-C or SIGTERM; then stop every job, wait for its thread
    (the executor kills its children) and return 0."""
    ensure_writable(Path(out))  # the CLI's train and compare check, before listening
    token = secrets.token_urlsafe(24)
    try:
        sock = bind(host, port)
    except OSError as e:
        from vanishing.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    port = sock.getsockname()[1]
    app = create_app(
        dirs, out, token=token, host=host, port=port, workers=workers, data_options=data_options
    )
    state: LiveState = app.state.live
    config = uvicorn.Config(  # the access log is the app's own (`safety.Served`): no token
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    server = LiveServer(config, on_exit=state.interrupt)
    url = url_of(host, port, token)
    print(f"vanishing live: serving {', '.join(map(str, state.roots))}", file=sys.stderr)
    print(url, flush=True)
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    log = logging.getLogger("vanishing.live")  # the access log and the runs it cannot read
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vanishing live: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        server.run(sockets=[sock])
    finally:
        state.close(JOIN_SECONDS)
        sock.close()
        log.removeHandler(handler)
    return 0
