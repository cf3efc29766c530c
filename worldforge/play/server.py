"""The play page's server: one HTML page, its info, and a WebSocket that streams frames.

Protocol (JSON messages on /ws): the page sends {"type": "start", "episode": i, "mode":
"play"|"replay", "seed": s} and gets {"type": "context", "frames": [png...]}, the recorded context;
then each {"type": "step", "action": a} (a: an action index, or a vector for continuous actions;
ignored in replay) gets one {"type": "frame", "frame": png, "index", "action", "label", "ms",
"truth": png|null, "done"}. The page sends its next step when a frame arrives, so frames stream
as fast as the model makes them (or at the dataset's frame rate, if the page caps it). A bad
message gets {"type": "error", "message": ...} and the connection stays open.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from importlib import resources

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from PIL import Image

from worldforge.core.runtime import free_port
from worldforge.play.session import Player, PlayError, Run

log = logging.getLogger(__name__)


def png(frame: np.ndarray) -> str:
    """uint8 (H, W, 3) -> a data: URL of its PNG."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def page() -> str:
    return resources.files("worldforge.play").joinpath("page.html").read_text(encoding="utf-8")


def create_app(player: Player) -> FastAPI:
    app = FastAPI(title="worldforge play", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page()

    @app.get("/api/info")
    def info() -> dict:
        return player.info()

    @app.websocket("/ws")
    async def stream(socket: WebSocket) -> None:
        await socket.accept()
        run: Run | None = None
        try:
            while True:
                message = await socket.receive_json()
                try:
                    kind = message.get("type") if isinstance(message, dict) else None
                    if kind == "start":
                        run = await run_in_threadpool(
                            player.begin,
                            int(message.get("episode", 0)),
                            str(message.get("mode", "play")),
                            int(message.get("seed", 0)),
                        )
                        await socket.send_json({"type": "context", "frames": [png(f) for f in run.context]})
                    elif kind == "step":
                        if run is None:
                            raise PlayError("send a start message before the first step")
                        step = await run_in_threadpool(run.step, message.get("action"))
                        await socket.send_json(
                            {
                                "type": "frame",
                                "index": step.index,
                                "frame": png(step.frame),
                                "truth": None if step.truth is None else png(step.truth),
                                "action": step.action,
                                "label": step.label,
                                "ms": step.seconds * 1000,
                                "done": step.done,
                            }
                        )
                    else:
                        raise PlayError(f"message type {kind!r}: expected 'start' or 'step'")
                except (PlayError, ValueError, TypeError) as error:
                    await socket.send_json({"type": "error", "message": str(error)})
        except WebSocketDisconnect:
            log.debug("play page disconnected")

    return app


def serve(player: Player, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the page until interrupted (Ctrl-C, twice to skip waiting for open connections).
    The app has no startup or shutdown work, so uvicorn's lifespan protocol is off: a second
    Ctrl-C then ends the process without a traceback."""
    import uvicorn

    try:
        uvicorn.run(create_app(player), host=host, port=port, log_level="warning", lifespan="off")
    except KeyboardInterrupt:
        log.info("play server stopped")


def serve_in_background(player: Player, host: str = "127.0.0.1", timeout: float = 30.0):
    """Serve the page from a daemon thread on a free port of `host` (a browser test, a benchmark, a
    notebook). Returns (url, server, thread); stop it with `server.should_exit = True` and
    `thread.join()`. Raises TimeoutError when uvicorn has not started within `timeout` seconds."""
    import uvicorn

    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(create_app(player), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise TimeoutError(f"the play server on {host}:{port} did not start within {timeout:.0f} s")
        time.sleep(0.05)
    return f"http://{host}:{port}/", server, thread
