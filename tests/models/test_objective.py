"""Flow matching with diffusion forcing: noise levels, parametrisation, and learning."""

import pytest
import torch

from worldforge.models.config import ModelConfigError, ObjectiveConfig, TokenizerConfig
from worldforge.models.flow import skip_weights, to_velocity, to_x0, warp
from worldforge.models.objective import (
    blur_frames,
    flow_matching_loss,
    grain_frames,
    noise_clips,
    noise_targets,
    rollout_context,
    sample_noise_levels,
    trail_frames,
    training_inputs,
    weighted_frame_mse,
)
from worldforge.models.streaming import generate_latents


@pytest.mark.parametrize("schedule", ["logit_normal", "uniform"])
def test_noise_levels_are_independent_per_frame_and_in_range(schedule):
    config = ObjectiveConfig(noise_schedule=schedule)
    levels = sample_noise_levels(256, 8, config, "cpu", torch.Generator().manual_seed(0))
    assert levels.shape == (256, 8) and levels.min() > 0 and levels.max() < 1
    assert levels.std(dim=1).mean() > 0.1  # frames of a clip differ
    assert abs(float(levels.mean()) - 0.5) < 0.05


def test_detail_mixture_trains_the_low_noise_levels_as_well_as_the_high_ones():
    high = ObjectiveConfig(logit_mean=3.0)
    mixed = ObjectiveConfig(logit_mean=3.0, detail_prob=0.5, detail_logit_mean=-0.5)
    generator = torch.Generator().manual_seed(0)
    alone = sample_noise_levels(512, 8, high, "cpu", generator)
    both = sample_noise_levels(512, 8, mixed, "cpu", generator)
    assert float((alone < 0.5).float().mean()) < 0.01  # a one-step model's levels: nearly all near 1
    assert 0.25 < float((both < 0.5).float().mean()) < 0.45  # half the frames, ~62% of those below 0.5
    assert 0.3 < float((both > 0.9).float().mean()) < 0.5  # and the high ones still trained (79% of the rest)


def test_one_noise_level_per_clip_without_diffusion_forcing():
    levels = sample_noise_levels(16, 8, ObjectiveConfig(per_frame_noise=False), "cpu")
    assert torch.equal(levels, levels[:, :1].expand(16, 8))


def test_x0_prediction_turns_the_true_clean_frame_into_the_true_velocity():
    config = ObjectiveConfig(prediction="x0")
    clean, noise = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    levels = torch.tensor([[0.2, 0.5, 0.9], [0.3, 0.6, 1.0]])
    t = levels[:, :, None, None, None]
    noisy = (1 - t) * clean + t * noise
    torch.testing.assert_close(to_velocity(clean, noisy, levels, config), noise - clean)


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_to_x0_inverts_the_forward_process_for_either_parametrisation(prediction):
    config = ObjectiveConfig(prediction=prediction)
    clean, noise = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    levels = torch.tensor([[0.2, 0.5, 0.9], [0.01, 0.6, 1.0]])
    t = levels[:, :, None, None, None]
    noisy = (1 - t) * clean + t * noise
    perfect = noise - clean if prediction == "velocity" else clean
    torch.testing.assert_close(to_x0(perfect, noisy, levels, config), clean)


def test_the_skip_is_the_least_squares_estimate_of_the_change_and_its_error_the_output_scale():
    """skip_weights against sampled changes r (std sigma) noised as x_t - (1 - t) base is."""
    sigma = 0.15
    generator = torch.Generator().manual_seed(0)
    change = sigma * torch.randn(200_000, generator=generator)
    noise = torch.randn(200_000, generator=generator)
    for level in (0.05, 0.14, 0.33, 0.6, 0.95):
        noised = (1 - level) * change + level * noise
        best = float((change * noised).mean() / noised.pow(2).mean())
        keep, scale = skip_weights(torch.tensor(level), sigma)
        assert abs(float(keep) - best) < 0.005 + 0.02 * best
        error = float((change - keep * noised).std())
        assert abs(error / sigma - float(scale)) < 0.02
    keep, scale = skip_weights(torch.tensor([0.0, 1.0]), sigma)
    assert keep.tolist() == [1.0, 0.0] and scale.tolist() == [0.0, 1.0]


def test_with_the_skip_a_clean_frame_passes_through_and_pure_noise_is_the_plain_residual():
    plain = ObjectiveConfig(prediction="x0", residual=True)
    skip = ObjectiveConfig(prediction="x0", residual=True, skip_sigma=0.15)
    output, noisy, anchor = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    clean, noise = torch.zeros(2, 3), torch.ones(2, 3)
    torch.testing.assert_close(to_x0(output, noisy, clean, skip, anchor=anchor), noisy)
    torch.testing.assert_close(
        to_x0(output, noisy, noise, skip, anchor=anchor), to_x0(output, noisy, noise, plain, anchor=anchor)
    )
    with pytest.raises(ValueError, match="skip_sigma needs objective.residual"):
        ObjectiveConfig(prediction="x0", skip_sigma=0.15)


def degraded_inputs(make_model, make_clips, **degradation):
    """The training inputs of moving-square clips under an anchor degradation (anchor_blur, anchor_noise,
    anchor_trail), and the true anchors and clean latents they came from."""
    model = make_model(objective=ObjectiveConfig(prediction="x0", residual=True))
    frames, actions = make_clips(8, 6)
    clean = model.tokenizer.encode(frames)
    condition = model.action_condition(actions, clean.shape[1])
    config = ObjectiveConfig(prediction="x0", residual=True, **degradation)
    inputs = training_inputs(model, clean, condition, config, torch.Generator().manual_seed(0))
    return inputs, model.anchors(clean), clean


def test_anchor_blur_softens_a_share_of_the_anchors_and_keeps_their_mass():
    frames = torch.zeros(64, 4, 3, 9, 9)
    frames[..., 4, 4] = 1.0
    config = ObjectiveConfig(anchor_blur=1.0, anchor_blur_prob=0.5)
    blurred = blur_frames(frames, config, torch.Generator().manual_seed(0))
    torch.testing.assert_close(blurred.sum(dim=(2, 3, 4)), frames.sum(dim=(2, 3, 4)))
    peak = blurred[:, :, 0, 4, 4]
    # half are chosen, and of those the widths below ~0.25 cells hardly spread a point
    assert 0.3 < float((peak < 0.99).float().mean()) < 0.5
    assert float(peak.min()) > 0.1  # at most a 1-cell Gaussian: its peak 0.16
    assert torch.equal(blur_frames(frames, ObjectiveConfig(anchor_blur=1.0, anchor_blur_prob=0.0)), frames)
    with pytest.raises(ValueError, match="anchor_blur, anchor_noise and anchor_trail degrade the true anchors"):
        ObjectiveConfig(anchor_blur=0.5, rollout_frames=2)


def test_a_wide_anchor_blur_is_a_whole_gaussian_not_one_cut_at_two_cells():
    frames = torch.zeros(1, 1, 1, 25, 25)
    frames[..., 12, 12] = 1.0
    config = ObjectiveConfig(anchor_blur=2.0, anchor_blur_prob=1.0)
    generator = torch.Generator().manual_seed(5)
    width = 2.0 * float(torch.rand(1, 1, generator=torch.Generator().manual_seed(5)))
    blurred = blur_frames(frames, config, generator)[0, 0, 0]
    offsets = torch.arange(25.0) - 12
    spread = float((blurred.sum(dim=0) * offsets**2).sum())  # the variance along x
    assert width > 1.5  # this seed draws a wide one
    assert spread == pytest.approx(width**2, rel=0.03)


def test_with_anchor_blur_training_anchors_are_soft_and_the_targets_true(make_model, make_clips):
    inputs, true, clean = degraded_inputs(make_model, make_clips, anchor_blur=1.0, anchor_blur_prob=1.0)
    assert torch.equal(inputs.batch.clean, clean)
    assert not torch.allclose(inputs.anchor, true)
    second = torch.diff(inputs.anchor, dim=-1).abs().mean()
    assert second < torch.diff(true, dim=-1).abs().mean()  # softer edges


def test_anchor_noise_grains_each_anchor_by_its_own_amount_and_leaves_the_targets_true(
    make_model, make_clips
):
    frames = torch.zeros(256, 4, 3, 8, 8)
    grained = grain_frames(frames, ObjectiveConfig(anchor_noise=0.1), torch.Generator().manual_seed(0))
    std = grained.flatten(2).std(dim=2)  # each frame's own noise level
    assert float(std.max()) < 0.12 and float(std.min()) < 0.01  # uniform in 0 .. 0.1
    assert 0.04 < float(std.mean()) < 0.06
    inputs, true, clean = degraded_inputs(make_model, make_clips, anchor_noise=0.1)
    assert torch.equal(inputs.batch.clean, clean)
    error = (inputs.anchor - true).std()
    assert 0.03 < float(error) < 0.1
    with pytest.raises(ValueError, match="anchor_noise and anchor_trail degrade the true anchors"):
        ObjectiveConfig(anchor_noise=0.05, rollout_frames=2)


def test_anchor_trail_draws_a_share_of_the_anchors_over_both_positions_and_leaves_the_targets_true(
    make_model, make_clips
):
    """`anchor_trail`: a bright square that moved is, in a chosen anchor frame, at its position and the
    one before (the brighter cell of the two frames), as a rollout's stretched object is; the rest of
    the anchors and every target stay true."""
    frames = torch.full((256, 3, 3, 8, 8), -1.0)
    for t in range(3):
        frames[:, t, :, 2:4, 1 + 2 * t : 3 + 2 * t] = 1.0  # two cells wide, two cells right per frame
    trailed = trail_frames(frames, ObjectiveConfig(anchor_trail=0.5), torch.Generator().manual_seed(0))
    lit = (trailed > 0).flatten(2).sum(dim=2)  # (B, T) lit values: 12 for the square alone, 24 over both
    assert torch.equal(lit[:, 0], torch.full((256,), 12))  # the first frame has none before it
    assert set(lit[:, 1:].unique().tolist()) == {12, 24}
    assert 0.4 < float((lit[:, 1:] == 24).float().mean()) < 0.6
    both = torch.maximum(frames[:, 1], frames[:, 2])
    assert torch.equal(trail_frames(frames, ObjectiveConfig(anchor_trail=1.0))[:, 2], both)
    inputs, true, clean = degraded_inputs(make_model, make_clips, anchor_trail=1.0)
    assert torch.equal(inputs.batch.clean, clean)
    brighter = inputs.anchor.mean(dim=2) >= true.mean(dim=2) - 1e-6
    assert bool(brighter.all()) and not torch.equal(inputs.anchor, true)
    with pytest.raises(ValueError, match="anchor_trail degrade the true anchors"):
        ObjectiveConfig(anchor_trail=0.5, rollout_frames=2)


def test_x0_loss_is_the_velocity_loss_times_t_squared(make_model, make_clips):
    """One clip at one noise level t: the velocity loss counts an x0 error 1 / t^2, the x0 loss 1."""
    model = make_model()
    frames, actions = make_clips(1, 6)
    losses, levels = {}, {}
    for loss in ("velocity", "x0"):
        config = ObjectiveConfig(loss=loss, per_frame_noise=False, clean_context_prob=0.0, x0_min_level=1e-3)
        losses[loss], logs = flow_matching_loss(
            model, frames, actions, config, generator=torch.Generator().manual_seed(0)
        )
        levels[loss] = float(logs["noise_level"])
    assert levels["velocity"] == levels["x0"]  # the same draw
    t = levels["x0"]
    torch.testing.assert_close(losses["x0"], losses["velocity"] * t**2, rtol=1e-4, atol=1e-7)


def test_clean_context_frames_carry_no_loss(make_model, make_clips):
    model = make_model()
    frames, actions = make_clips(4, 6)
    config = ObjectiveConfig(clean_context_prob=1.0)
    _, logs = flow_matching_loss(model, frames, actions, config, generator=torch.Generator().manual_seed(0))
    assert logs["loss_per_frame"][0] == 0  # frame 0 is always before the split
    assert logs["loss_per_frame"][-1] > 0  # the last frame is always trained on


def test_context_targets_trains_only_the_frames_right_after_a_clean_context():
    config = ObjectiveConfig(clean_context_prob=1.0, context_targets=1)
    clean = torch.randn(64, 8, 3, 2, 2)
    noised = noise_clips(clean, config, generator=torch.Generator().manual_seed(0))
    for levels, weight in zip(noised.levels, noised.weight, strict=True):
        first_noisy = int((levels > 0).nonzero()[0])
        assert (levels[:first_noisy] == 0).all()  # a clean context ...
        assert weight.nonzero().flatten().tolist() == [first_noisy]  # ... and exactly its next frame trained
    torch.testing.assert_close(noised.noisy[noised.levels == 0], clean[noised.levels == 0])


@pytest.mark.parametrize("residual, skip, ratio", [(False, None, 0.4), (True, None, 0.7), (True, 0.15, 0.7)])
def test_a_tiny_model_overfits_a_tiny_batch(make_model, make_clips, train_on, residual, skip, ratio):
    """Absolute x0 prediction starts far off and falls below 0.4x; residual prediction starts at
    copy-last-frame (a much lower loss) and still falls below 0.7x of that, with the skip too."""
    torch.manual_seed(0)
    objective = ObjectiveConfig(prediction="x0", residual=residual, skip_sigma=skip)
    model = make_model(objective=objective).train()
    frames, actions = make_clips(4, 6)

    def held_out_loss() -> float:  # the same noise every time
        with torch.no_grad():
            return float(
                flow_matching_loss(model, frames, actions, generator=torch.Generator().manual_seed(1))[0]
            )

    before = held_out_loss()
    train_on(model, frames, actions, 120)
    assert held_out_loss() < ratio * before


def test_rollout_context_is_ground_truth_then_the_models_own_rollout(make_model, random_weights, make_clips):
    model = random_weights(make_model(objective=ObjectiveConfig(prediction="x0", residual=True)))
    frames, actions = make_clips(2, 6)
    clean = model.tokenizer.encode(frames)
    condition = model.action_condition(actions, 6)
    context = rollout_context(model, clean, condition, 2, 1, torch.Generator().manual_seed(3))
    own, _ = generate_latents(
        model, clean[:, :2], condition, 3, 1, "euler", True, torch.Generator().manual_seed(3)
    )
    assert not context.requires_grad  # generated as in inference: no gradient through the rollout
    torch.testing.assert_close(context[:, :2], clean[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(context[:, 2:5], own, rtol=0, atol=0)
    assert not torch.allclose(context[:, 2:5], clean[:, 2:5], atol=1e-2)  # a random model's frames differ
    torch.testing.assert_close(context[:, 5:], clean[:, 5:], rtol=0, atol=0)


def test_without_rollouts_clean_context_training_is_teacher_forced(make_model, random_weights, make_clips):
    """rollout_prob=0 (no unroll): the loss is exactly the teacher-forced loss on ground-truth context;
    with rollout_prob=1 the same batch and noise give another loss (the context is the model's own)."""
    frames, actions = make_clips(2, 6)

    def loss(rollout_prob: float) -> float:
        objective = ObjectiveConfig(
            prediction="x0", residual=True, loss="x0", training_context="clean", rollout_prob=rollout_prob
        )
        model = random_weights(make_model(objective=objective), std=0.05)
        torch.manual_seed(0)
        with torch.no_grad():
            return float(flow_matching_loss(model, frames, actions)[0])

    teacher_forced = loss(0.0)
    model = random_weights(
        make_model(objective=ObjectiveConfig(prediction="x0", residual=True, loss="x0")), std=0.05
    )
    torch.manual_seed(0)
    clean = model.tokenizer.encode(frames)
    batch = noise_targets(clean, model.objective_cfg)
    with torch.no_grad():
        output = model.dit.forward_teacher_forced(
            batch.noisy, batch.levels, model.action_condition(actions, 6), clean
        )
        x0 = to_x0(output, batch.noisy, batch.levels, model.objective_cfg, anchor=model.anchors(clean))
        expected = float(weighted_frame_mse(x0 - clean, batch.weight)[0])
    assert teacher_forced == pytest.approx(expected, rel=1e-6)
    assert loss(1.0) != pytest.approx(teacher_forced, rel=1e-3)


def test_rollout_training_needs_the_clean_context():
    with pytest.raises(ValueError, match="rollout_prob needs"):
        ObjectiveConfig(rollout_prob=0.5)


def test_anchors_hold_the_previous_frames_newest_first_and_zeros_before_the_clip():
    from worldforge.models.flow import next_anchor, previous_frames

    frames = torch.arange(1.0, 5.0).view(1, 4, 1, 1, 1)  # frames valued 1, 2, 3, 4
    anchors = previous_frames(frames, 2)  # (1, 4, 2, 1, 1): [frame t-1, frame t-2]
    assert anchors.flatten(1).tolist() == [[0, 0, 1, 0, 2, 1, 3, 2]]
    assert next_anchor(frames, 2).flatten().tolist() == [4, 3]
    assert next_anchor(frames[:, :1], 2).flatten().tolist() == [1, 0]


def test_warp_moves_each_cell_by_the_motion_field():
    """`warp`: content at p - motion(p) lands at p (bilinear between cells, the border repeated);
    zero motion is the identity."""
    frames = torch.zeros(1, 1, 3, 8, 8)
    frames[..., 3, 3] = 1.0
    motion = torch.zeros(1, 1, 2, 8, 8)
    assert torch.equal(warp(frames, motion), frames)
    motion[:, :, 0] = 1.0  # one cell to the right
    assert warp(frames, motion)[0, 0, 0].nonzero().tolist() == [[3, 4]]
    motion[:, :, 0], motion[:, :, 1] = 0.0, 0.5  # half a cell down: shared by two rows
    torch.testing.assert_close(
        warp(frames, motion)[0, 0, :, 2:6, 3], torch.tensor([[0.0, 0.5, 0.5, 0.0]] * 3)
    )
    ramp = torch.arange(8.0).expand(1, 1, 1, 8, 8)
    shifted = warp(ramp, torch.full((1, 1, 2, 8, 8), -2.0))  # content from two cells right (and down)
    torch.testing.assert_close(shifted[0, 0, 0, 0], torch.tensor([2.0, 3, 4, 5, 6, 7, 7, 7]))


def test_bicubic_warps_keep_a_thin_line_that_bilinear_smears():
    """objective.warp_interpolation: every resampling is exact at whole cells, but a one-cell line
    moved half a cell and back four times (a rollout's sub-cell motions) keeps 0.27 of its peak
    bilinear, about 0.64 bicubic (with negative lobes beside it) and 0.43 bicubic_clamped (none)."""
    line = torch.zeros(1, 1, 1, 16, 16)
    line[..., 8] = 1.0
    whole = torch.zeros(1, 1, 2, 16, 16)
    whole[:, :, 0] = 1.0
    for mode in ("bicubic", "bicubic_clamped"):
        assert torch.equal(warp(line, torch.zeros(1, 1, 2, 16, 16), mode), line)
        assert warp(line, whole, mode)[0, 0, 0, 4].argmax() == 9
    peaks, lows = {}, {}
    for mode in ("bilinear", "bicubic", "bicubic_clamped"):
        moved = line
        for i in range(8):
            half = torch.zeros(1, 1, 2, 16, 16)
            half[:, :, 0] = 0.5 if i % 2 == 0 else -0.5
            moved = warp(moved, half, mode)
        peaks[mode], lows[mode] = float(moved[0, 0, 0, 4].max()), float(moved.min())
    assert peaks["bilinear"] == pytest.approx(0.2734375)
    assert peaks["bicubic"] > 2 * peaks["bilinear"] and lows["bicubic"] < -0.05
    assert peaks["bicubic_clamped"] > 1.5 * peaks["bilinear"] and lows["bicubic_clamped"] == 0.0


def test_a_warping_model_starts_as_copy_last_frame_and_learns_sub_cell_motion(make_model, train_on):
    """model.warp: the DiT draws a change and a motion field (2 more channels, zero at first, so the
    untrained model is copy-last-frame); trained on a blob that drifts half a cell a frame, its
    motion field moves it that way, and it needs the residual objective."""
    objective = ObjectiveConfig(prediction="x0", residual=True, loss="x0", logit_mean=3.0)
    fields = {"stem": "conv", "stem_channels": 8, "stack_previous": 2, "warp": True}
    tokenizer = TokenizerConfig(frame_size=(32, 32), patch_size=1)
    model = make_model(objective=objective, tokenizer=tokenizer, patch_size=8, **fields).train()
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = 8 + 0.5 * torch.arange(6.0) + 4 * torch.arange(4.0)[:, None]  # (B, T): half a cell a frame
    blob = torch.exp(-((xs - centres[..., None, None]) ** 2 + (ys - 16) ** 2) / 8.0)  # (B, T, 32, 32)
    frames = (2 * blob - 1)[:, :, None].expand(4, 6, 3, 32, 32).contiguous()
    actions = torch.zeros(4, 6, dtype=torch.long)
    clean = model.tokenizer.encode(frames)
    condition = model.action_condition(actions, 6)
    anchor = model.anchors(clean)
    levels = torch.ones(4, 6)

    def predicted() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            output = model.dit(torch.randn_like(clean), levels, condition, anchor=anchor)
        return to_x0(output, clean, levels, objective, anchor=anchor), output[:, :, 3:5]

    x0, motion = predicted()
    assert motion.shape == (4, 6, 2, 32, 32) and torch.equal(x0[:, 1:], clean[:, :-1])
    train_on(model, frames, actions, 150)
    x0, motion = predicted()
    inside = blob[:, 1:] > 0.3
    assert 0.35 < float(motion[:, 1:, 0][inside].mean()) < 0.65  # half a cell to the right
    assert float((x0[:, 1:] - clean[:, 1:]).pow(2).mean()) < 0.1 * float(
        (clean[:, :-1] - clean[:, 1:]).pow(2).mean()
    )
    with pytest.raises(ModelConfigError, match="model.warp"):
        make_model(objective=ObjectiveConfig(prediction="x0"), tokenizer=tokenizer, patch_size=8, **fields)
