"""Shared fixtures of the model tests: a tiny world model on 32x32 frames and moving-square clips."""

from __future__ import annotations

import pytest
import torch

from worldforge.models.config import ModelConfig, ObjectiveConfig, SamplerConfig, TokenizerConfig
from worldforge.models.world_model import WorldModel

FRAME_SIZE = 32
NUM_ACTIONS = 5  # stay, up, down, left, right
MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])


def moving_squares(
    batch: int, frames: int, size: int = FRAME_SIZE, seed: int = 0, step: int = 4, square: int = 8
):
    """Clips of a coloured square on a dark background, moved by the actions.

    Returns frames (B, T, 3, size, size) in [-1, 1] and actions (B, T) int64; action t moves the
    square between frame t and frame t + 1 (the data convention)."""
    generator = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, NUM_ACTIONS, (batch, frames), generator=generator)
    position = torch.randint(0, size - square, (batch, 2), generator=generator)
    colour = torch.rand(batch, 3, generator=generator) * 1.5 - 0.5
    clips = torch.full((batch, frames, 3, size, size), -1.0)
    for t in range(frames):
        for b in range(batch):
            y, x = position[b].tolist()
            clips[b, t, :, y : y + square, x : x + square] = colour[b, :, None, None]
        position = (position + step * MOVES[actions[:, t]]).clamp(0, size - square)
    return clips, actions


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Replace every weight by noise: a fresh DiT is zero at its AdaLN gates and output, which
    would make causality and cache tests pass trivially."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def tiny_model(
    tokenizer: TokenizerConfig | None = None,
    sampler: SamplerConfig | None = None,
    objective: ObjectiveConfig | None = None,
    **model_fields,
) -> WorldModel:
    torch.manual_seed(0)
    fields = {"preset": "tiny", "num_actions": NUM_ACTIONS, **model_fields}
    return WorldModel.from_config(
        tokenizer or TokenizerConfig(frame_size=(FRAME_SIZE, FRAME_SIZE)),
        ModelConfig(**fields),
        objective or ObjectiveConfig(),
        sampler or SamplerConfig(steps=3),
    ).eval()


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors here are tiny: intra-op threads only add synchronisation, and on a busy machine
    OpenMP barriers stall (this suite: 15 s with one thread, over 3 minutes with two when the
    2 cores were shared with other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Factories as fixtures, so test modules need not import this conftest by name.
@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def make_clips():
    return moving_squares


@pytest.fixture
def random_weights():
    return randomize
