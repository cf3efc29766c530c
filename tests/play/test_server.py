"""The play server over HTTP and its WebSocket, with FastAPI's test client (no browser)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from worldforge.play.server import create_app
from worldforge.play.session import Player


def decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


@pytest.fixture
def client(package, held_out_dataset):
    return TestClient(
        create_app(Player.open(package, held_out_dataset, episodes=3, context_frames=3, name="tiny v1"))
    )


def test_the_page_and_its_info(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="generated"' in page.text and "/ws" in page.text
    info = client.get("/api/info").json()
    assert info["model"] == "tiny v1" and len(info["episodes"]) == 3 and info["frame_size"] == [32, 32]


def test_frames_stream_one_per_step_with_the_action_that_made_them(client):
    with client.websocket_connect("/ws") as socket:
        socket.send_json({"type": "start", "episode": 0, "mode": "play"})
        context = socket.receive_json()
        assert context["type"] == "context" and len(context["frames"]) == 3
        assert decode(context["frames"][0]).shape == (32, 32, 3)
        for index, action in enumerate([4, 4, 1], start=1):
            socket.send_json({"type": "step", "action": action})
            frame = socket.receive_json()
            assert (frame["type"], frame["index"], frame["action"]) == ("frame", index, action)
            assert frame["label"] == ["up", "right"][action == 4] and frame["truth"] is None
            assert decode(frame["frame"]).shape == (32, 32, 3) and frame["ms"] > 0


def test_replay_sends_the_recorded_frame_beside(client):
    with client.websocket_connect("/ws") as socket:
        socket.send_json({"type": "start", "episode": 1, "mode": "replay"})
        socket.receive_json()
        socket.send_json({"type": "step"})
        frame = socket.receive_json()
        assert decode(frame["truth"]).shape == (32, 32, 3) and frame["done"] is False


def test_a_bad_message_gets_an_error_and_the_connection_stays_open(client):
    with client.websocket_connect("/ws") as socket:
        socket.send_json({"type": "step", "action": 1})
        assert "start message" in socket.receive_json()["message"]
        socket.send_json({"type": "start", "episode": 9})
        assert "episode 9" in socket.receive_json()["message"]
        socket.send_json({"type": "start"})
        socket.receive_json()
        socket.send_json({"type": "step", "action": 17})
        assert "[0, 6)" in socket.receive_json()["message"]
        socket.send_json({"type": "step", "action": 0})
        assert socket.receive_json()["index"] == 1
