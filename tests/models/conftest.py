"""Shared fixtures of the model tests: the root tiny world-model factory at these tests' defaults,
and moving-square clips."""

from __future__ import annotations

import functools

import pytest
import torch

from worldforge.models.objective import flow_matching_loss

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


# Factories as fixtures, so test modules need not import this conftest by name.
@pytest.fixture
def make_model(make_world_model):
    """The root factory at the model tests' defaults: initial weights (wrap in `random_weights` for
    noise), the 5 actions of `moving_squares`, 3 sampling steps."""
    return functools.partial(make_world_model, noise=None, steps=3, num_actions=NUM_ACTIONS)


@pytest.fixture(scope="session")
def make_clips():
    return moving_squares


def train_on_batch(model, frames: torch.Tensor, actions: torch.Tensor, steps: int, lr: float = 2e-3) -> None:
    """`steps` AdamW steps of the model's own flow-matching loss (fresh noise each step) on one batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = flow_matching_loss(model, frames, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="session")
def train_on():
    return train_on_batch
