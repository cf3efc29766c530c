"""The world DiT: block-causal over frames, actions aligned with the frames they lead to."""

import pytest
import torch

from worldforge.models.config import ModelConfig
from worldforge.models.dit import action_condition


def outputs(model, frames, actions, levels=None):
    latents = model.tokenizer.encode(frames)
    t = latents.shape[1]
    levels = torch.linspace(0.1, 0.9, t).expand(latents.shape[0], t) if levels is None else levels
    with torch.no_grad():
        return model.dit(latents, levels, model.action_condition(actions, t))


@pytest.mark.parametrize("k", [0, 3, 6])
def test_changing_frame_k_plus_1_leaves_outputs_up_to_k_unchanged(make_model, random_weights, make_clips, k):
    model = random_weights(make_model())
    frames, actions = make_clips(2, 8)
    before = outputs(model, frames, actions)
    changed = frames.clone()
    changed[:, k + 1 :] = torch.rand_like(changed[:, k + 1 :]) * 2 - 1
    after = outputs(model, changed, actions)
    assert torch.equal(before[:, : k + 1], after[:, : k + 1])
    assert not torch.allclose(before[:, k + 1], after[:, k + 1])


@pytest.mark.parametrize("k", [0, 3, 6])
def test_changing_action_k_leaves_outputs_up_to_k_unchanged(make_model, random_weights, make_clips, k):
    # Action k is taken after frame k: it may change frame k + 1 onwards, never frames <= k.
    model = random_weights(make_model())
    frames, actions = make_clips(2, 8)
    before = outputs(model, frames, actions)
    changed = actions.clone()
    changed[:, k:] = (changed[:, k:] + 1) % 5
    after = outputs(model, frames, changed)
    assert torch.equal(before[:, : k + 1], after[:, : k + 1])
    assert not torch.allclose(before[:, k + 1], after[:, k + 1]), "frame k + 1 must see action k"


def test_continuous_actions_are_causal_too(make_model, random_weights, make_clips):
    model = random_weights(make_model(action_space="continuous", action_dim=3))
    frames, _ = make_clips(1, 6)
    actions = torch.randn(1, 6, 3)
    before = outputs(model, frames, actions)
    changed = actions.clone()
    changed[:, 2] += 1.0
    after = outputs(model, frames, changed)
    assert torch.equal(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_frames_beyond_the_receptive_field_of_the_window_are_not_seen(make_model, random_weights, make_clips):
    # Window 2: each block looks one frame back, so 4 blocks reach 4 frames back.
    model = random_weights(make_model(context_window=2))
    frames, actions = make_clips(1, 8)
    before = outputs(model, frames, actions)
    changed = frames.clone()
    changed[:, 0] = -changed[:, 0]
    after = outputs(model, changed, actions)
    assert not torch.allclose(before[:, 4], after[:, 4])
    assert torch.equal(before[:, 5:], after[:, 5:])


def test_frame_t_is_conditioned_on_action_t_minus_1():
    config = ModelConfig(num_actions=5)
    actions = torch.tensor([[3, 1, 4, 2]])
    assert action_condition(actions, 4, 1, config).squeeze(-1).tolist() == [[5, 3, 1, 4]]  # 5 = no action
    # Two frames per latent frame: latent 0 <- frame 0; latent j <- frames 2j-1, 2j <- actions 2j-2, 2j-1.
    actions = torch.tensor([[0, 1, 2, 3, 4]])
    assert action_condition(actions, 3, 2, config).tolist() == [[[5, 5], [0, 1], [2, 3]]]


def test_action_history_gives_each_frame_the_actions_of_the_frames_before_it_newest_first():
    config = ModelConfig(num_actions=5, action_history=3)
    actions = torch.tensor([[3, 1, 4, 2]])
    # frame j: the action that led to it (j - 1), then to j - 1 (j - 2), then to j - 2; 5 = no action
    expected = [[[5, 5, 5], [3, 5, 5], [1, 3, 5], [4, 1, 3]]]
    assert action_condition(actions, 4, 1, config).tolist() == expected
    # two frames per latent frame: lag k holds the pair that led to latent frame j - k
    actions = torch.tensor([[0, 1, 2, 3, 4]])
    pairs = action_condition(actions, 3, 2, ModelConfig(num_actions=5, action_history=2)).tolist()
    assert pairs == [[[5, 5, 5, 5], [0, 1, 5, 5], [2, 3, 0, 1]]]
    continuous = ModelConfig(action_space="continuous", action_dim=1, action_history=2)
    flagged = action_condition(torch.tensor([[[0.5], [2.0]]]), 3, 1, continuous).tolist()
    assert flagged == [[[[0.0, 0.0], [0.0, 0.0]], [[0.5, 1.0], [0.0, 0.0]], [[2.0, 1.0], [0.5, 1.0]]]]


def test_an_earlier_action_reaches_a_frame_only_through_the_history(make_model, random_weights, make_clips):
    """With action_history 3 the action that led to frame t - 2 conditions frame t itself: changing
    it changes frame t's output even when frames t - 2 and t - 1 are held out of its attention
    (context window 1), and never an earlier frame's."""
    torch.manual_seed(0)
    frames, actions = make_clips(batch=1, frames=6)
    for history, reaches in ((1, False), (3, True)):
        model = random_weights(make_model(context_window=1, action_history=history))
        before = outputs(model, frames, actions)
        changed = actions.clone()
        changed[:, 1] = (changed[:, 1] + 1) % 4  # led to frame 2
        after = outputs(model, frames, changed)
        assert torch.equal(before[:, :2], after[:, :2])
        assert not torch.allclose(before[:, 2], after[:, 2])  # its own action, always
        assert (not torch.allclose(before[:, 4], after[:, 4])) == reaches
        assert torch.equal(before[:, 5], after[:, 5])  # its lags (actions 4, 3, 2) and window miss it


def test_continuous_no_action_is_flagged():
    config = ModelConfig(action_space="continuous", action_dim=2)
    condition = action_condition(torch.tensor([[[0.5, -1.0], [2.0, 3.0]]]), 2, 1, config)
    assert condition.tolist() == [[[[0.0, 0.0, 0.0]], [[0.5, -1.0, 1.0]]]]


def test_wrong_action_shapes_are_named():
    with pytest.raises(ValueError, match=r"continuous actions must be \(B, T, 2\)"):
        action_condition(torch.zeros(1, 4, dtype=torch.long), 4, 1, ModelConfig(action_space="continuous"))
    with pytest.raises(ValueError, match="need at least 3 actions"):
        action_condition(torch.zeros(1, 2, dtype=torch.long), 4, 1, ModelConfig())
    with pytest.raises(
        ValueError, match=r"must lie in \[0, 5\) \(model.num_actions\), got values in \[0, 5\]"
    ):
        action_condition(torch.tensor([[0, 5, 1]]), 4, 1, ModelConfig(num_actions=5))


def test_gradient_checkpointing_gives_the_same_gradients(make_model, random_weights, make_clips):
    from worldforge.models.objective import flow_matching_loss

    frames, actions = make_clips(2, 4)
    grads = []
    for checkpointing in (False, True):
        model = random_weights(make_model(grad_checkpointing=checkpointing)).train()
        loss, _ = flow_matching_loss(model, frames, actions, generator=torch.Generator().manual_seed(0))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.dit.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
