"""Sampling draws frames, not their mean: where the next frame is uncertain, a few-step sample of a
briefly trained model is sharp while its one-step prediction (the conditional mean) is a blur.

The clips are `moving_squares` with the actions hidden from the model (every action given as 0):
from the context alone the square may move to any of five places, so the mean next frame is five
faint squares and only a sample can be a square."""

from __future__ import annotations

import pytest
import torch

from worldforge.evaluation import metrics
from worldforge.models.config import ObjectiveConfig
from worldforge.models.sampler import ancestral, euler, timesteps
from worldforge.models.streaming import rollout


def test_ancestral_one_step_is_the_predicted_clean_frame_and_later_steps_draw_fresh_noise():
    target = torch.full((2, 1, 3, 4, 4), 0.5)

    def velocity(x, t):  # the exact velocity toward `target` from x at level t
        return (x - target) / t

    noise = torch.randn(2, 1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ancestral(velocity, noise, 1), euler(velocity, noise, 1))
    torch.testing.assert_close(ancestral(velocity, noise, 4, generator=torch.Generator().manual_seed(1)), target)
    seen = []

    def recording(x, t):
        seen.append((t, x.clone()))
        return velocity(x, t)

    ancestral(recording, noise, 3, generator=torch.Generator().manual_seed(1))
    assert [t for t, _ in seen] == pytest.approx(timesteps(3)[:-1])
    second_input = seen[1][1]
    deterministic = (1 - seen[1][0]) * target + seen[1][0] * noise  # what Euler would feed it
    assert not torch.allclose(second_input, deterministic)  # fresh noise, not the starting noise


@pytest.fixture(scope="module")
def uncertain_model(make_world_model, make_clips, train_on):
    """A tiny model trained 200 steps on squares whose moves it is not told (about 30 s on a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # Noise levels spread over (0, 1), so that the low levels, where detail is drawn, are trained.
    objective = ObjectiveConfig(prediction="x0", loss="x0", logit_mean=0.0, logit_std=1.5)
    model = make_world_model(noise=None, steps=3, num_actions=5, objective=objective).train()
    frames, actions = make_clips(16, 4, step=4, square=8)
    train_on(model, frames, torch.zeros_like(actions), 200)  # the model is not told where the square goes
    torch.set_num_threads(threads)
    return model.eval()


@pytest.mark.parametrize("solver", ["euler", "ancestral"])
def test_few_step_samples_of_a_briefly_trained_model_are_sharper_than_its_one_step_mean(
    uncertain_model, make_clips, solver
):
    held_out, _ = make_clips(16, 4, seed=1, step=4, square=8)
    zeros = torch.zeros(16, 4, dtype=torch.long)

    def sharpness(steps: int) -> float:
        result = rollout(
            uncertain_model,
            held_out[:, :3],
            zeros,
            1,
            steps=steps,
            solver=solver,
            generator=torch.Generator().manual_seed(0),
        )
        return float(metrics.sharpness(result.frames, held_out[:, 3:])[0])

    mean, sampled = sharpness(1), sharpness(8)
    assert mean < 0.5  # the one-step prediction averages the possible squares (0.12 when written)
    assert sampled > 2 * mean  # the samples draw one of them (0.37 Euler, 0.41 ancestral)
