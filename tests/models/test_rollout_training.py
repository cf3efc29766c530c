"""Rollout training: self forcing (`objective.rollout_frames`: the last frame of a clip trained on
the model's own frames as context, with gradient through that frame only; 0 is teacher forcing) and
the unrolled passes of `objective.unroll` (with gradient through the model's own predictions)."""

import pytest
import torch

from worldforge.models.config import ModelConfigError, ObjectiveConfig, SamplerConfig, TokenizerConfig
from worldforge.models.flow import to_velocity, to_x0
from worldforge.models.objective import (
    flow_matching_loss,
    noise_clips,
    noise_targets,
    unrolled_losses,
    weighted_frame_mse,
)
from worldforge.models.streaming import generate_latents

RESIDUAL = {"prediction": "x0", "residual": True, "loss": "x0"}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "objective, stack_previous",
    [({}, 0), (RESIDUAL, 2), ({"prediction": "velocity", "clean_context_prob": 1.0}, 1)],
)
def test_without_rollout_frames_the_loss_is_exactly_teacher_forced(
    make_model, random_weights, make_clips, objective, stack_previous
):
    """rollout_frames=0: bit for bit the diffusion-forcing loss on ground-truth context."""
    config = ObjectiveConfig(rollout_frames=0, **objective)
    model = random_weights(make_model(objective=config, stack_previous=stack_previous), std=0.05).train()
    frames, actions = make_clips(3, 6)
    loss, logs = flow_matching_loss(model, frames, actions, generator=seeded())

    clean = model.tokenizer.encode(frames)
    batch = noise_clips(clean, config, seeded())
    anchor = model.anchors(clean)
    output = model.dit(batch.noisy, batch.levels, model.action_condition(actions, 6), anchor=anchor)
    if config.loss == "x0":
        error = to_x0(output, batch.noisy, batch.levels, config, anchor=anchor).float() - clean.float()
    else:
        error = to_velocity(output, batch.noisy, batch.levels, config, anchor=anchor).float() - batch.target
    assert torch.equal(loss, weighted_frame_mse(error, batch.weight)[0])
    assert float(logs["rollout"]) == 0


def last_frame_loss(model, clean, condition, context, generator) -> torch.Tensor:
    """The x0 loss of the last frame of `clean` (B, T', ...) predicted by a full forward (no cache)
    after `context` (B, T' - 1, ...), committed clean: the context is also its anchor."""
    config = model.objective_cfg
    target = noise_targets(clean[:, -1:], config, generator)
    latents = torch.cat([context, target.noisy], dim=1)
    levels = torch.cat([torch.zeros(context.shape[:2]), target.levels], dim=1)
    anchor = model.anchors(torch.cat([context, target.clean], dim=1))
    output = model.dit(latents, levels, condition, anchor=anchor)[:, -1:]
    x0 = to_x0(output, target.noisy, target.levels, config, anchor=anchor[:, -1:])
    return weighted_frame_mse(x0 - target.clean, target.weight)[0]


def test_the_last_frame_is_trained_on_the_models_own_frames(make_model, random_weights, make_clips):
    """rollout_frames=2 on 6-frame clips: frames 0-2 ground truth, 3-4 the model's own (the KV-cached
    sampler, rollout_steps steps), frame 5 trained with them as its context and anchors (here 2
    stacked frames and the residual's), exactly as a full forward over that sequence gives it; with
    ground truth in their place (teacher forcing) the same frame and noise give another loss."""
    config = ObjectiveConfig(rollout_frames=2, rollout_steps=2, **RESIDUAL)
    model = random_weights(make_model(objective=config, stack_previous=2), std=0.05)
    frames, actions = make_clips(2, 6)
    loss, logs = flow_matching_loss(model, frames, actions, generator=seeded(3))

    clean = model.tokenizer.encode(frames)
    condition = model.action_condition(actions, 6)
    generator = seeded(3)  # draws as the objective does: the rollout's noise, then the target's
    own, _ = generate_latents(model, clean[:, :3], condition[:, :5], 2, 2, "euler", True, generator)
    same_noise = torch.Generator().set_state(generator.get_state())
    with torch.no_grad():
        expected = last_frame_loss(model, clean, condition, torch.cat([clean[:, :3], own], 1), generator)
        teacher_forced = last_frame_loss(model, clean, condition, clean[:, :5], same_noise)
    assert not torch.allclose(own, clean[:, 3:5], atol=1e-2)  # a random model's frames differ
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    assert abs(float(loss.detach()) - float(teacher_forced)) > 1e-3 * float(teacher_forced)
    assert float(logs["rollout"]) == 1
    assert logs["loss_per_frame"].shape == (6,) and (logs["loss_per_frame"][:5] == 0).all()


def autograd_size(model, frames, actions, rollout_frames: int) -> tuple[int, int]:
    """(nodes of the loss's autograd graph, bytes of the tensors it saved for backward)."""
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    config = model.objective_cfg.model_copy(update={"rollout_frames": rollout_frames})
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = flow_matching_loss(model, frames, actions, config, generator=seeded())
    nodes, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in nodes:
            nodes.add(node)
            todo.extend(parent for parent, _ in node.next_functions)
    loss.backward()
    return len(nodes), sum(saved)


def test_the_generated_context_carries_no_gradient(make_model, random_weights, make_clips):
    """The graph is the last frame's forward pass alone: the same size, nodes and saved bytes,
    whether the model generated 1 or 4 of the frames before it; and it reaches the DiT's weights."""
    model = random_weights(make_model(objective=ObjectiveConfig(**RESIDUAL)), std=0.05).train()
    frames, actions = make_clips(2, 6)
    assert autograd_size(model, frames, actions, 1) == autograd_size(model, frames, actions, 4)
    model.zero_grad()
    autograd_size(model, frames, actions, 2)
    assert all(p.grad is not None for p in model.dit.blocks.parameters())
    assert float(model.dit.final.linear.weight.grad.abs().sum()) > 0


def test_a_tiny_model_learns_from_its_own_rollouts(make_model, make_clips, train_on):
    """Trained with rollout_frames=2 (every step: 2 frames of its own, then the loss on the next), a
    tiny model of the quickstart's shape (conv stem, 2 stacked frames, residual x0, 1 sampling step)
    soon predicts a batch of moving-square clips' last frame far better than copy-last-frame."""
    objective = ObjectiveConfig(rollout_frames=2, logit_mean=3.0, **RESIDUAL)
    model = make_model(
        objective=objective,
        sampler=SamplerConfig(steps=1),
        tokenizer=TokenizerConfig(frame_size=(32, 32), patch_size=1),
        patch_size=8,
        stem="conv",
        stem_channels=16,
        stack_previous=2,
    ).train()
    frames, actions = make_clips(4, 5)

    def fixed_loss() -> float:  # the same rollout and target noise every time
        with torch.no_grad():
            return float(flow_matching_loss(model, frames, actions, generator=seeded(1))[0])

    before = fixed_loss()  # an untrained residual model is copy-last-frame
    train_on(model, frames, actions, 50)
    assert fixed_loss() < 0.3 * before


def test_clips_too_short_for_the_rollout_name_both_fields(make_model, make_clips):
    model = make_model(objective=ObjectiveConfig(rollout_frames=3))
    frames, actions = make_clips(1, 4)  # 4 frames: 1 of context + 3 generated leave none to train
    with pytest.raises(
        ModelConfigError, match=r"objective.rollout_frames=3 .* data.clip_frames to at least 5"
    ):
        flow_matching_loss(model, frames, actions)
    config = model.objective_cfg.model_copy(update={"rollout_frames": 2})
    loss, _ = flow_matching_loss(model, frames, actions, config)  # 1 + 2 + 1 frames: just enough
    assert torch.isfinite(loss)


def test_rollout_frames_need_diffusion_forcing():
    with pytest.raises(
        ValueError, match="rollout_frames needs objective.training_context='diffusion_forcing'"
    ):
        ObjectiveConfig(rollout_frames=2, training_context="clean")


def test_unrolled_passes_are_anchored_on_the_previous_pass_after_the_split(
    make_model, random_weights, make_clips
):
    """objective.unroll: every frame after the split starts from pure noise and is anchored on the
    previous pass's prediction (gradient flows into it), the frames before on the truth (none does);
    the last frame is an anchor of nothing."""
    objective = ObjectiveConfig(unroll=1, **RESIDUAL)
    model = random_weights(make_model(objective=objective, stack_previous=2), std=0.05)
    frames, actions = make_clips(2, 6)
    clean = model.tokenizer.encode(frames)
    condition = model.action_condition(actions, 6)
    predicted = (clean + 0.1 * torch.randn_like(clean)).requires_grad_(True)
    generator = seeded(4)
    split = int(torch.randint(1, 5, (), generator=seeded(4)))  # the split unrolled_losses draws first
    (loss,) = unrolled_losses(model, clean, condition, predicted, objective, generator)
    loss.backward()
    reached = predicted.grad.abs().flatten(2).sum(2)  # (B, T')
    assert torch.all(reached[:, :split] == 0)
    assert torch.all(reached[:, split:-1] > 0)
    assert torch.all(reached[:, -1] == 0)


def test_unroll_trains_on_its_own_predictions_and_needs_teacher_forcing(make_model, make_clips, train_on):
    """unroll=2 adds two passes to the loss (their mean), and a tiny model trained with it soon
    predicts one-step rollouts of moving squares better than copy-last-frame."""
    objective = ObjectiveConfig(unroll=2, logit_mean=3.0, **RESIDUAL)
    model = make_model(objective=objective, stack_previous=2, sampler=SamplerConfig(steps=1)).train()
    frames, actions = make_clips(4, 6)
    loss, logs = flow_matching_loss(model, frames, actions, generator=seeded(2))
    assert "unroll_loss" in logs and torch.isfinite(loss)

    def unroll_loss() -> float:
        with torch.no_grad():
            return float(flow_matching_loss(model, frames, actions, generator=seeded(1))[1]["unroll_loss"])

    before = unroll_loss()  # an untrained residual model is copy-last-frame
    train_on(model, frames, actions, 40)
    assert unroll_loss() < 0.5 * before
    with pytest.raises(ValueError, match="unroll needs"):
        ObjectiveConfig(unroll=1, rollout_frames=2)
    with pytest.raises(ValueError, match="unroll needs"):
        ObjectiveConfig(unroll=1, training_context="clean")
