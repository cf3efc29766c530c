"""Classifier-free guidance on the action: `objective.action_dropout` trains frames under "no
action", and `sampler.action_guidance` w samples each frame from v_none + w (v - v_none).
w = 0 is blind to the frame's own action, w = 1 is the plain sampler, and the KV cache gives
what recomputing the context gives at any w."""

from __future__ import annotations

import pytest
import torch

from worldforge.config import ConfigError, load_config
from worldforge.models.config import ObjectiveConfig, SamplerConfig
from worldforge.models.flops import rollout_flops
from worldforge.models.objective import drop_actions
from worldforge.models.streaming import rollout


def guided(make_world_model, w: float, **fields):
    return make_world_model(
        sampler=SamplerConfig(steps=2, solver="ancestral", action_guidance=w),
        objective=ObjectiveConfig(prediction="x0", residual=True, action_dropout=0.1),
        **fields,
    )


def frames_and_actions(seed: int = 0, length: int = 8, discrete: bool = True):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand((2, 4, 3, 32, 32), generator=generator) * 2 - 1
    if discrete:
        actions = torch.randint(0, 6, (2, length), generator=generator)
    else:
        actions = torch.rand((2, length, 2), generator=generator) * 2 - 1
    return frames, actions


@pytest.mark.parametrize("discrete", [True, False])
def test_a_dropped_frame_gets_no_action_and_the_others_keep_theirs(make_world_model, discrete):
    fields = {} if discrete else {"action_space": "continuous", "action_dim": 2}
    model = make_world_model(**fields)
    _, actions = frames_and_actions(length=64, discrete=discrete)
    condition = model.action_condition(actions, 64)
    dropped = drop_actions(model, condition, 0.5, torch.Generator().manual_seed(1))
    none = model.no_action(condition)
    frame_dims = tuple(range(2, condition.ndim))
    is_none = (dropped == none).all(dim=frame_dims)
    kept = (dropped == condition).all(dim=frame_dims)
    assert bool((is_none | kept).all())  # a frame's action is replaced whole, or not at all
    changed = is_none & ~(condition == none).all(dim=frame_dims)  # frame 0 has no action anyway
    assert 0.35 < changed[:, 1:].float().mean() < 0.65
    assert torch.equal(drop_actions(model, condition, 0.0), condition)


def test_guidance_zero_draws_a_frame_blind_to_its_own_action_and_one_follows_it(make_world_model):
    frames, actions = frames_and_actions()
    other = actions.clone()
    other[:, 3:] = (actions[:, 3:] + 3) % 6  # the same context, other actions for the new frames
    outputs = {}
    for w in (0.0, 1.0):
        model = guided(make_world_model, w)
        for name, taken in (("recorded", actions), ("other", other)):
            generator = torch.Generator().manual_seed(5)
            outputs[w, name] = rollout(model, frames, taken, horizon=3, generator=generator).frames
    # The first new frame is drawn blind to its action; later ones see the frames before them
    # committed with their actions, which guidance leaves alone.
    torch.testing.assert_close(outputs[0.0, "recorded"][:, 0], outputs[0.0, "other"][:, 0])
    assert (outputs[0.0, "recorded"][:, 1:] - outputs[0.0, "other"][:, 1:]).abs().max() > 1e-4
    assert (outputs[1.0, "recorded"][:, 0] - outputs[1.0, "other"][:, 0]).abs().max() > 1e-3


def test_guidance_extrapolates_the_actions_effect_linearly(make_world_model):
    """v(w) = v_none + w (v - v_none): w = 3 moves three times as far from w = 0 as w = 1 does."""
    frames, actions = frames_and_actions()
    models = {w: guided(make_world_model, w) for w in (0.0, 1.0, 3.0)}
    context = models[1.0].tokenizer.encode(frames)
    condition = models[1.0].action_condition(actions, 5)
    x = torch.randn((2, 1, *context.shape[2:]), generator=torch.Generator().manual_seed(2))
    latents = torch.cat([context, x], dim=1)
    levels = torch.cat([torch.zeros(2, 4), torch.full((2, 1), 0.6)], dim=1)
    anchor = models[1.0].anchors(latents)
    v = {w: m.guided_velocity(latents, levels, condition, anchor=anchor)[:, -1] for w, m in models.items()}
    torch.testing.assert_close(v[3.0] - v[0.0], 3 * (v[1.0] - v[0.0]), rtol=1e-4, atol=1e-5)
    assert (v[1.0] - v[0.0]).abs().max() > 1e-4


def test_the_cache_gives_what_recomputing_gives_under_guidance(make_world_model):
    frames, actions = frames_and_actions(length=10)
    model = guided(make_world_model, 2.5)
    cached = rollout(model, frames, actions, 5, generator=torch.Generator().manual_seed(3))
    recomputed = rollout(model, frames, actions, 5, use_cache=False, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(cached.frames, recomputed.frames, rtol=1e-4, atol=1e-4)


def test_guidance_doubles_the_denoising_flops(make_world_model):
    plain, twice = rollout_flops(guided(make_world_model, 1.0)), rollout_flops(guided(make_world_model, 2.0))
    assert twice["denoise"] == 2 * plain["denoise"] and twice["commit"] == plain["commit"]


def test_guidance_without_action_dropout_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"sampler.action_guidance=2.0 needs objective.action_dropout > 0"):
        load_config("tiny", ["sampler.action_guidance=2"])
    assert load_config("tiny", ["sampler.action_guidance=2", "objective.action_dropout=0.1"])
