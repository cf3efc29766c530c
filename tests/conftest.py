"""Shared test setup: every test runs against its own project root in a temp dir.

Real components only: the MLflow store is a SQLite file under the temp root, DVC repos and
remotes are temp folders, Prefect runs its ephemeral API with a home of its own.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Set before any test imports prefect/deepspeed; these only steer where things go and keep
# everything offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# One Prefect home (profiles, result cache, ephemeral database) for the session, never ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="worldforge-tests-prefect-")

# DVC and Prefect bind their log handlers to the sys.stdout/sys.stderr of the moment they are
# imported. Imported here, that is pytest's stream for the whole session; imported first inside a
# CliRunner invocation, it would be the runner's stream, closed when the invocation ends, and every
# later log call in the session would fail.
import dvc  # noqa: F401
from prefect.logging.handlers import PrefectConsoleHandler

# Prefect's console handler is rebuilt (bound to the sys.stderr of that moment) whenever an
# ephemeral server starts, which in a CLI test is CliRunner's stream, closed after the invocation.
# Tests write its records to whatever sys.stderr is current instead.
_console_emit = PrefectConsoleHandler.emit


def _emit_to_current_stderr(self, record):
    self.stream = self.console.file = sys.stderr
    _console_emit(self, record)


PrefectConsoleHandler.emit = _emit_to_current_stderr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding `slow` tests run first, the rest in their usual order: with two workers
    (`make test`), each taking whole files, the long files then end up on both, and the short ones
    fill in after, so neither worker is left alone on a long file at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh project root with an embedded SQLite MLflow store and a local DVC remote."""
    from worldforge.core.project import Project

    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("WORLDFORGE_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WORLDFORGE_DVC_REMOTE", raising=False)
    return Project.current(root)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread for every test: the models here are tiny, and on a loaded 2-core
    machine OpenMP threads mostly spin-wait for each other (a rollout gets ~10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite store (migrations take seconds): copy it, never use it."""
    import mlflow

    path = tmp_path_factory.getbasetemp() / "mlflow-template.db"
    if not path.exists():
        mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def tiny_config(*overrides: str):
    """The `tiny` preset (configs/tiny.yaml: 32x32 frames, 16 short episodes, a 2-block DiT), with
    dotted overrides; later ones win. The one test-scale config every area's tests start from."""
    from worldforge.config import load_config

    return load_config("tiny", list(overrides))


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    """`tiny_config(*overrides)`: the test-scale config factory."""
    return tiny_config


@pytest.fixture
def tracked_project(project, mlflow_template: Path):
    """`project` with its own copy of the migrated template MLflow store."""
    shutil.copy(mlflow_template, project.mlflow_db)
    return project


@pytest.fixture(scope="session")
def make_dataset(tmp_path_factory: pytest.TempPathFactory):
    """`make_dataset(*overrides) -> Path`: the `tiny` preset's simulator dataset with dotted data
    overrides (episode count, splits, shard size), built once per session for each distinct set of
    overrides and not DVC-tracked. The one dataset fixture: every area's tests ask it for the scale
    they need. Read-only: copy a dataset to change it."""
    from worldforge.data.shards import build_dataset

    built: dict[tuple[str, ...], Path] = {}

    def dataset(*overrides: str) -> Path:
        key = tuple(overrides)
        if key not in built:
            out = tmp_path_factory.mktemp("sim-dataset") / "sim"
            build_dataset(tiny_config(*overrides), out, track=False, progress=False)
            built[key] = out
        return built[key]

    return dataset


@pytest.fixture(scope="session")
def tiny_dataset(make_dataset) -> Path:
    """The `tiny` preset's dataset as it is: 16 episodes of 16 frames at 32x32, 6 windows per shard.
    (The data and training tests override this fixture with their shard size / episode count.)"""
    return make_dataset()


def randomize(model, seed: int = 0, std: float = 0.1):
    """Replace every weight of `model` by seeded noise: a fresh DiT has shut AdaLN gates and a zero
    output layer, so it would output nothing a test could tell apart (causality and cache tests
    would pass trivially)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def tiny_world_model(
    seed: int = 0,
    steps: int = 2,
    *,
    noise: float | None = 0.05,
    tokenizer=None,
    objective=None,
    sampler=None,
    **model_fields,
):
    """A tiny world model (32x32 frames, the `tiny` DiT preset, 6 actions; `model_fields` override
    the ModelConfig) in eval mode. Its weights are seeded noise of std `noise` (see `randomize`), or
    the initialisation when `noise` is None (for tests that train it)."""
    import torch

    from worldforge.models.config import ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
    from worldforge.models.world_model import WorldModel

    torch.manual_seed(seed)
    model = WorldModel.from_config(
        tokenizer or TokenizerConfig(frame_size=(32, 32)),
        ModelConfig(**{"preset": "tiny", "num_actions": 6, **model_fields}),
        objective or ObjectiveConfig(),
        sampler or SamplerConfig(steps=steps),
    )
    if noise is not None:
        randomize(model, seed, noise)
    return model.eval()


@pytest.fixture(scope="session")
def make_world_model():
    """`make_world_model(seed=0, steps=2, *, noise=0.05, tokenizer=None, objective=None,
    sampler=None, **model_fields)`: the test-scale world model factory."""
    return tiny_world_model


@pytest.fixture
def random_weights():
    """`random_weights(model, seed=0, std=0.1)`: see `randomize`."""
    return randomize


# The world and model of `trained_world_model`: the simulator with one ball at 32x32, episodes of
# 24 frames; the quickstart's architecture at a smaller size.
TRAINED_WORLD = {"objects": 1, "action_repeat": 0.8, "resolution": 32, "episode_frames": 24, "seed": 7}


@pytest.fixture(scope="session")
def trained_world():
    """The simulator settings `trained_world_model` was trained on (`TRAINED_WORLD`)."""
    return dict(TRAINED_WORLD)


def shared_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that every process of this test run sees: under pytest-xdist (`make test` runs two
    workers) the workers' temp folders share a parent; without it, the session's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def trained_world_model(tmp_path_factory: pytest.TempPathFactory):
    """A small world model trained briefly (400 steps, about a minute on one core) on 96 simulator
    episodes of `TRAINED_WORLD` (seed 7, episodes 0-95): enough to move the agent the way the
    actions push it. The quickstart's architecture at a smaller size (conv stem and head around
    the DiT, the two previous frames stacked at the input, residual x0 prediction, 1 sampling
    step), without the quickstart's motion field (`model.warp`). Session-scoped and shared: do not
    train it further. Trained once per test run: the first worker to need it trains it and saves
    its weights (safetensors), the others wait for them and load them."""
    from filelock import FileLock
    from safetensors.torch import load_model, save_model

    weights = shared_temp(tmp_path_factory) / "trained-world-model.safetensors"
    with FileLock(f"{weights}.lock"):
        model = untrained_world_model()
        if weights.exists():
            load_model(model, str(weights))
        else:
            train_world_model(model)
            save_model(model, str(weights))
    return model.eval()


def untrained_world_model():
    """`trained_world_model`'s architecture, freshly initialised."""
    import torch

    from worldforge.data.sources.simulator import ACTIONS
    from worldforge.models.config import ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
    from worldforge.models.world_model import WorldModel

    size = TRAINED_WORLD["resolution"]
    torch.manual_seed(0)
    return WorldModel.from_config(
        TokenizerConfig(frame_size=(size, size), patch_size=1),
        ModelConfig(
            preset="tiny",
            depth=2,
            width=64,
            heads=2,
            patch_size=8,
            context_window=4,
            num_actions=len(ACTIONS),
            stem="conv",
            stem_channels=16,
            stack_previous=2,
            warp=False,  # with it, 400 steps moved the agent right in only 3 of the play test's 6 episodes
        ),
        ObjectiveConfig(prediction="x0", residual=True, loss="x0", logit_mean=3.0),
        SamplerConfig(steps=1),
    )


def train_world_model(model) -> None:
    """400 AdamW steps of 8 clips of 6 frames from 96 recorded episodes of `TRAINED_WORLD`."""
    import numpy as np
    import torch

    from worldforge.data.config import SimulatorConfig
    from worldforge.data.sources.simulator import record_episode
    from worldforge.models.objective import flow_matching_loss

    world = SimulatorConfig(objects=TRAINED_WORLD["objects"], action_repeat=TRAINED_WORLD["action_repeat"])
    size, length, clip = TRAINED_WORLD["resolution"], TRAINED_WORLD["episode_frames"], 6
    recorded = [record_episode(world, size, length, seed=TRAINED_WORLD["seed"], index=i) for i in range(96)]
    frames = torch.stack(
        [torch.from_numpy(e.frames).permute(0, 3, 1, 2).float() / 127.5 - 1 for e in recorded]
    )
    actions = torch.from_numpy(np.stack([e.actions for e in recorded]))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.dit.parameters(), lr=2e-3)
    model.train()
    for _ in range(400):
        episode = torch.randint(len(frames), (8,), generator=generator)
        start = torch.randint(length - clip + 1, (8,), generator=generator)
        index = start[:, None] + torch.arange(clip)
        loss, _ = flow_matching_loss(model, frames[episode[:, None], index], actions[episode[:, None], index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)


def encode_video(path: Path, frames: int = 48, fps: int = 30, size=(64, 80)) -> None:
    """A white square moving right by a pixel a frame over a dark gradient: `frames` frames of
    (H, W) = size at `fps`, encoded with PyAV (the `video` extra)."""
    import av
    import numpy as np

    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 2] = np.linspace(20, 90, width, dtype=np.uint8)
            image[20:36, t : t + 16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def write_video():
    """`write_video(path, frames=48, fps=30, size=(64, 80))`: see `encode_video`."""
    pytest.importorskip("av", reason="the video extra (PyAV) is not installed")
    return encode_video


def zero3_config_partitioning_everything(folder: Path) -> Path:
    """infra/deepspeed/zero3.json with no parameter kept whole, written into `folder`: the tiny
    models' parameters all lie below the default persistence threshold, so ZeRO-3 would leave them
    unpartitioned and a test would exercise nothing."""
    import json

    from worldforge.training.deepspeed_config import resolve_deepspeed_file

    tree = json.loads(resolve_deepspeed_file("zero3").read_text())
    tree["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = Path(folder) / "zero3-partition-all.json"
    path.write_text(json.dumps(tree))
    return path


@pytest.fixture(scope="session")
def zero3_partition_all():
    """`zero3_partition_all(folder) -> Path`: see `zero3_config_partitioning_everything`."""
    return zero3_config_partitioning_everything
