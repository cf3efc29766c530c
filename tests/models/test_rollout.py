"""Rollout: a KV-cached rollout equals recomputing from scratch, memory stays within the window."""

import pytest
import torch

from worldforge.models.attention import KVCache
from worldforge.models.config import ModelConfigError, ObjectiveConfig, SamplerConfig, TokenizerConfig
from worldforge.models.flops import flops_per_frame, rollout_flops
from worldforge.models.streaming import LatentStream, rollout


def generate(model, frames, actions, context, horizon, **kwargs):
    return rollout(
        model, frames[:, :context], actions, horizon, generator=torch.Generator().manual_seed(0), **kwargs
    )


def test_rollout_returns_frames_in_range_and_timings(make_model, random_weights, make_clips):
    model = random_weights(make_model())
    frames, actions = make_clips(2, 7)
    result = generate(model, frames, actions, context=3, horizon=4)
    assert result.frames.shape == (2, 4, 3, 32, 32)
    assert result.frames.min() >= -1 and result.frames.max() <= 1
    assert result.latents.shape == (2, 4, 192, 4, 4)
    assert 0 < result.denoise_seconds <= result.total_seconds


@pytest.mark.parametrize("window", [16, 3])  # longer than the rollout, and shorter: old frames drop out
@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("residual", [False, True])
def test_rollout_with_cache_equals_recompute(
    make_model, random_weights, make_clips, window, solver, residual
):
    objective = ObjectiveConfig(prediction="x0", residual=residual)
    model = random_weights(make_model(context_window=window, objective=objective))
    frames, actions = make_clips(2, 9)
    cached = generate(model, frames, actions, context=3, horizon=6, solver=solver)
    recomputed = generate(model, frames, actions, context=3, horizon=6, solver=solver, use_cache=False)
    torch.testing.assert_close(cached.latents, recomputed.latents, rtol=1e-4, atol=1e-4)
    assert recomputed.peak_cache_frames == 0


CONV_STEM = {"stem": "conv", "patch_size": 4, "stack_previous": 2}
PIXELS = TokenizerConfig(frame_size=(32, 32), patch_size=1)  # latents are the frames: the stem patchifies


@pytest.mark.parametrize("window", [16, 3])
def test_conv_stem_with_stacked_previous_frame_rolls_out_the_same_with_cache(
    make_model, random_weights, make_clips, window
):
    objective = ObjectiveConfig(prediction="x0", residual=True)
    model = random_weights(
        make_model(tokenizer=PIXELS, objective=objective, context_window=window, **CONV_STEM)
    )
    frames, actions = make_clips(2, 9)
    cached = generate(model, frames, actions, context=3, horizon=6)
    recomputed = generate(model, frames, actions, context=3, horizon=6, use_cache=False)
    # float rounding only: random weights at full resolution amplify it a little more than patches do
    torch.testing.assert_close(cached.latents, recomputed.latents, rtol=1e-3, atol=5e-4)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_a_frame_committed_with_the_next_ones_first_step_gives_the_frames_of_a_commit_of_its_own(
    make_model, random_weights, make_clips, guidance
):
    """`LatentStream.next` commits the previous frame inside its first DiT call; a stream that
    commits it in a call of its own first (`commit()`) draws the same frames, with the context
    noised, the action guided, an ancestral solver and a window the rollout outgrows."""
    sampler = SamplerConfig(steps=3, solver="ancestral", context_noise=0.1, action_guidance=guidance)
    objective = ObjectiveConfig(prediction="x0", residual=True)
    model = random_weights(
        make_model(tokenizer=PIXELS, objective=objective, sampler=sampler, context_window=3, **CONV_STEM),
        std=0.05,
    )
    frames, actions = make_clips(2, 10)
    with torch.no_grad():
        context = model.tokenizer.encode(frames[:, :3])
        condition = model.action_condition(actions, 10)
        runs = []
        for separate in (False, True):
            stream = LatentStream(model, context, condition[:, :3], torch.Generator().manual_seed(0))
            drawn = []
            for j in range(3, 10):
                if separate and stream.pending is not None:
                    stream.commit()
                drawn.append(stream.next(condition[:, j : j + 1]))
            runs.append((torch.cat(drawn, dim=1), stream.peak))
    (fused, fused_peak), (apart, apart_peak) = runs
    # float rounding only (a batched matmul sums in another order), compounded over 7 frames
    torch.testing.assert_close(fused, apart, rtol=1e-3, atol=1e-3)
    assert (fused - apart).abs().mean() < 1e-6 * fused.abs().mean() + 1e-6
    assert fused_peak == apart_peak == 2
    assert fused.std() > 0.1  # random weights: frames that differ from step to step, not a constant


def test_commit_takes_a_count_of_leading_frames(make_model, random_weights, make_clips):
    model = random_weights(make_model())
    frames, actions = make_clips(1, 3)
    latents, condition = model.tokenizer.encode(frames), model.action_condition(actions, 3)
    levels = torch.zeros(1, 3)
    with pytest.raises(ModelConfigError, match="leading frames"):
        model.dit(latents, levels, condition, model.dit.new_cache(), commit=True)
    with pytest.raises(ModelConfigError, match="leading frames"):
        model.dit(latents, levels, condition, commit=1)  # nothing to commit to
    cache = model.dit.new_cache()
    with torch.no_grad():
        out = model.dit(latents, levels, condition, cache, commit=2)
        assert out.shape[1] == 1 and cache.frames == 2
        assert model.dit(latents[:, 2:], levels[:, 2:], condition[:, 2:], cache, commit=1) is None
    assert cache.frames == 3


@pytest.mark.parametrize("window", [8, 3])
@pytest.mark.parametrize("fields", [{}, CONV_STEM], ids=["linear", "conv"])
def test_teacher_forced_pass_predicts_each_frame_as_a_cached_rollout_step(
    make_model, random_weights, make_clips, window, fields
):
    """The clean-context training pass (every frame twice: clean context, noisy target) gives each
    frame exactly the output a KV-cached rollout step gives it after the same context."""
    tokenizer = PIXELS if fields else None
    model = random_weights(make_model(tokenizer=tokenizer, context_window=window, **fields))
    frames, actions = make_clips(2, 6)
    with torch.no_grad():
        clean = model.tokenizer.encode(frames)  # (B, 6, c, h, w)
        condition = model.action_condition(actions, 6)
        noisy = torch.randn_like(clean)
        levels = torch.rand(2, 6)
        together = model.dit.forward_teacher_forced(noisy, levels, condition, clean)
        for f in range(1, 6):
            cache = model.dit.new_cache()
            anchors = model.anchors(clean)
            model.dit(
                clean[:, :f], torch.zeros(2, f), condition[:, :f], cache, commit=f, anchor=anchors[:, :f]
            )
            step = model.dit(
                noisy[:, f : f + 1],
                levels[:, f : f + 1],
                condition[:, f : f + 1],
                cache,
                anchor=anchors[:, f : f + 1],
            )
            torch.testing.assert_close(together[:, f : f + 1], step, rtol=1e-4, atol=1e-4)


def test_stacked_previous_frame_is_required():
    from worldforge.models.config import ModelConfig
    from worldforge.models.dit import WorldDiT

    dit = WorldDiT(ModelConfig(preset="tiny", depth=1, stack_previous=1), latent_channels=3)
    with pytest.raises(ModelConfigError, match="stack_previous"):
        dit(torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 2), torch.zeros(1, 2, 1, dtype=torch.long))


def test_untrained_residual_model_rolls_out_copy_last_frame(make_model, make_clips):
    model = make_model(objective=ObjectiveConfig(prediction="x0", residual=True))  # zero-initialised output
    frames, actions = make_clips(2, 8)
    result = generate(model, frames, actions, context=3, horizon=4)
    last = model.tokenizer.encode(frames[:, 2:3])  # (B, 1, c, h, w)
    torch.testing.assert_close(result.latents, last.expand_as(result.latents), rtol=0, atol=1e-5)


def test_residual_needs_x0_prediction():
    with pytest.raises(ValueError, match="residual needs"):
        ObjectiveConfig(prediction="velocity", residual=True)


def test_rollout_with_cache_equals_recompute_for_a_video_vae_and_noised_context(
    make_model, random_weights, make_clips
):
    tokenizer = TokenizerConfig(
        kind="vae",
        frame_size=(32, 32),
        spatial_compression=4,
        temporal_compression=2,
        base_channels=8,
        latent_channels=4,
    )
    sampler = SamplerConfig(steps=2, context_noise=0.1, decode_chunk=2)
    model = random_weights(make_model(tokenizer=tokenizer, sampler=sampler, context_window=3), std=0.05)
    frames, actions = make_clips(1, 9)
    cached = generate(model, frames, actions, context=3, horizon=6)
    recomputed = generate(model, frames, actions, context=3, horizon=6, use_cache=False)
    assert cached.frames.shape == (1, 6, 3, 32, 32) and cached.latents.shape == (1, 3, 4, 8, 8)
    torch.testing.assert_close(cached.frames, recomputed.frames, rtol=1e-4, atol=1e-4)


def test_kv_cache_never_holds_more_than_the_window(make_model, random_weights, make_clips, monkeypatch):
    window, tokens_per_frame = 3, 16
    model = random_weights(make_model(context_window=window))
    frames, actions = make_clips(1, 24)
    stored = []
    original = KVCache.store

    def record(self, index, keys, values, tokens):
        original(self, index, keys, values, tokens)
        stored.append(self.keys[index].shape[2])

    monkeypatch.setattr(KVCache, "store", record)
    result = generate(model, frames, actions, context=4, horizon=20)
    assert result.frames.shape[1] == 20
    assert result.peak_cache_frames == window - 1
    assert max(stored) == (window - 1) * tokens_per_frame


def test_rollout_is_reproducible_and_follows_the_steps_setting(make_model, random_weights, make_clips):
    model = random_weights(make_model())
    frames, actions = make_clips(1, 5)
    first = generate(model, frames, actions, context=2, horizon=3)
    again = generate(model, frames, actions, context=2, horizon=3)
    fewer = generate(model, frames, actions, context=2, horizon=3, steps=1)
    assert torch.equal(first.frames, again.frames)
    assert not torch.allclose(first.frames, fewer.frames)


def test_continuous_action_rollout(make_model, random_weights, make_clips):
    model = random_weights(make_model(action_space="continuous", action_dim=2))
    frames, _ = make_clips(2, 5)
    result = generate(model, frames, torch.randn(2, 4, 2), context=2, horizon=3)
    assert result.frames.shape == (2, 3, 3, 32, 32)


def test_too_few_actions_is_an_error_saying_how_many(make_model, make_clips):
    frames, actions = make_clips(1, 5)
    with pytest.raises(ModelConfigError, match="at least Tc \\+ horizon - 1 = 6"):
        generate(make_model(), frames, actions[:, :5], context=2, horizon=5)


def test_flops_per_frame_count_every_solver_evaluation(make_model):
    model = make_model()
    costs = rollout_flops(model, steps=4)
    step = costs["denoise"] // 4
    assert costs["decode"] == 0
    assert flops_per_frame(model, steps=4) == costs["total"] == 4 * step + costs["commit"]
    assert rollout_flops(model, steps=4, solver="heun")["denoise"] == 7 * step
    # A step: 2 FLOPs per multiply-add; token-wise linears on the frame's 16 tokens, per-frame
    # conditioning linears on 1 row, attention of 16 queries over a full window of 8 x 16 keys.
    dit, tokens, keys = model.dit, 16, 8 * 16
    token_linears = [dit.patch_embed, dit.final.linear]
    token_linears += [layer for b in dit.blocks for layer in (b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2)]
    row_linears = [dit.t_embed.fc1, dit.t_embed.fc2, dit.final.adaln] + [b.adaln for b in dit.blocks]
    expected = 2 * tokens * sum(layer.weight.numel() for layer in token_linears)
    expected += 2 * sum(layer.weight.numel() for layer in row_linears)
    expected += sum(2 * 2 * tokens * keys * b.attn.head_dim * b.attn.heads for b in dit.blocks)
    assert step == expected
    # Committing the frame is the same pass without the output layer, whose output nobody reads.
    final = 2 * tokens * dit.final.linear.weight.numel() + 2 * dit.final.adaln.weight.numel()
    assert costs["commit"] == expected - final
