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


def test_held_sampling_keeps_exactly_what_the_network_barely_moves_or_changes(make_world_model):
    """sampler.hold_motion / hold_change: at sampling, motions shorter than hold_motion cells and
    changes below hold_change are zero. A rollout of a network whose outputs are all that small
    repeats its last context frame (to float rounding), where without the hold the frames drift a little each
    step; a cell that does move or change is kept as the network drew it; training sees the raw
    output; and a model without the residual objective is refused by name."""
    from worldforge.models.config import ModelConfigError, SamplerConfig, TokenizerConfig
    from worldforge.models.flow import hold_small
    from worldforge.models.streaming import generate_latents

    output = torch.zeros(1, 1, 5, 2, 2)
    output[0, 0, :3, 0, 0] = torch.tensor([0.01, -0.02, 0.0])  # a small change: held
    output[0, 0, :3, 0, 1] = torch.tensor([0.01, -0.20, 0.0])  # one channel changes: kept whole
    output[0, 0, 3:, 1, 0] = torch.tensor([0.1, 0.1])  # a short motion: held
    output[0, 0, 3:, 1, 1] = torch.tensor([0.4, 0.0])  # a long one: kept
    held = hold_small(output, 3, motion=0.3, change=0.05)
    assert torch.equal(held[0, 0, :3, 0, 0], torch.zeros(3)) and torch.equal(held[0, 0, :3, 0, 1], output[0, 0, :3, 0, 1])
    assert torch.equal(held[0, 0, 3:, 1, 0], torch.zeros(2)) and torch.equal(held[0, 0, 3:, 1, 1], output[0, 0, 3:, 1, 1])

    objective = ObjectiveConfig(prediction="x0", residual=True, loss="x0")
    fields = {"stem": "conv", "stem_channels": 8, "stack_previous": 2, "warp": True, "patch_size": 8}
    tokenizer = TokenizerConfig(frame_size=(32, 32), patch_size=1)

    def rollout_of(hold: float) -> tuple[torch.Tensor, torch.Tensor]:
        sampler = SamplerConfig(solver="ancestral", steps=3, hold_motion=hold, hold_change=hold)
        model = make_world_model(noise=0.01, objective=objective, tokenizer=tokenizer, sampler=sampler, **fields)
        context = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        condition = model.action_condition(torch.zeros(2, 9, dtype=torch.long), 9)
        generated, _ = generate_latents(model, context, condition, 6, 3, "ancestral", True, torch.Generator().manual_seed(1))
        return context[:, -1:], generated

    last, free = rollout_of(0.0)
    drift = (free - last).abs()
    assert 0 < float(drift.amax()) < 0.5  # the untouched network moves every frame a little
    last, held = rollout_of(0.5)
    # all of it below the hold: the last frame, to float rounding (the sampler goes through velocities)
    assert float((held - last).abs().amax()) < 1e-5

    model = make_world_model(noise=0.01, objective=objective, tokenizer=tokenizer, **fields)
    model.sampler_cfg = SamplerConfig(hold_change=0.5)
    x = torch.randn(1, 1, 3, 32, 32)
    anchor = torch.zeros(1, 1, 6, 32, 32)
    levels, condition = torch.full((1, 1), 0.5), model.action_condition(torch.zeros(1, 1, dtype=torch.long), 1)
    sampled = model.velocity(x, levels, condition, anchor=anchor)
    trained = model.train().velocity(x, levels, condition, anchor=anchor)
    assert not torch.equal(sampled, trained)
    with pytest.raises(ModelConfigError, match="sampler.hold_motion and hold_change"):
        make_world_model(objective=ObjectiveConfig(prediction="velocity"), sampler=SamplerConfig(hold_change=0.1))


def test_palette_snaps_each_pixel_to_the_nearest_context_colour_and_leaves_a_photo_alone():
    from worldforge.models.palette import palettes, snap

    red, blue, dark = [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-0.6, -0.6, -0.6]
    context = torch.tensor(dark).view(1, 1, 3, 1, 1).repeat(2, 2, 1, 4, 4)
    context[:, 0, :, 0, 0] = torch.tensor(red)[:, None].T
    context[:, 1, :, 3, 3] = torch.tensor(blue)[:, None].T
    context[1] = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1  # 32 colours
    table, usable, _, _ = palettes(context, limit=8)
    assert usable.tolist() == [True, False]
    frame = torch.tensor(dark).view(1, 1, 3, 1, 1).repeat(2, 1, 1, 4, 4)
    frame[:, 0, :, 1, 1] = torch.tensor([0.7, -0.8, -0.9])  # a faded red: red
    frame[:, 0, :, 2, 2] = torch.tensor([-0.7, -0.8, 0.1])  # half blue, half dark: nearer dark
    frame[:, 0, :, 2, 1] = torch.tensor([-0.9, -0.9, 0.5])  # mostly blue: blue
    snapped = snap(frame, table, usable)
    assert snapped[0, 0, :, 1, 1].tolist() == pytest.approx(red)
    assert snapped[0, 0, :, 2, 2].tolist() == pytest.approx([round((c + 1) * 127.5) / 127.5 - 1 for c in dark])
    assert snapped[0, 0, :, 2, 1].tolist() == pytest.approx(blue)
    levels = torch.round((snapped[0] + 1) * 127.5)
    assert len(levels.permute(0, 2, 3, 1).reshape(-1, 3).unique(dim=0)) == 3  # nothing else drawn
    assert torch.equal(snapped[1], frame[1])  # a clip of 32 colours over the limit of 8: as drawn


def test_a_palette_rollout_draws_only_its_context_colours_with_or_without_the_cache(make_world_model):
    """sampler.palette: every generated frame (of an untrained, noisy network: every pixel a shade)
    is drawn in its context's colours, the same frames with the KV cache as without it; off, the
    frames are shades; a tokenizer whose latents are not pixels is refused by name."""
    from worldforge.models.config import ModelConfigError, SamplerConfig, TokenizerConfig
    from worldforge.models.streaming import generate_latents

    tokenizer = TokenizerConfig(frame_size=(32, 32), patch_size=4)  # latents: pixels rearranged
    colours = torch.tensor([[-0.6, -0.2, 0.1], [1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    generator = torch.Generator().manual_seed(0)
    context = colours[torch.randint(0, 3, (2, 3, 32, 32), generator=generator)].permute(0, 1, 4, 2, 3)
    condition = None

    def frames_of(palette: bool, cache: bool) -> torch.Tensor:
        nonlocal condition
        sampler = SamplerConfig(solver="ancestral", steps=2, palette=palette)
        model = make_world_model(noise=0.5, tokenizer=tokenizer, sampler=sampler, patch_size=2)
        condition = model.action_condition(torch.zeros(2, 7, dtype=torch.long), 7)
        latents = model.tokenizer.encode(context)
        generated, _ = generate_latents(model, latents, condition, 4, 2, "ancestral", cache, torch.Generator().manual_seed(1))
        return model.tokenizer.decode(generated)

    def colours_in(frames: torch.Tensor) -> set[tuple[int, ...]]:
        levels = torch.round((frames + 1) * 127.5).to(torch.int64)
        return {tuple(c) for c in levels.permute(0, 1, 3, 4, 2).reshape(-1, 3).tolist()}

    allowed = colours_in(colours.view(1, 3, 3, 1, 1))
    cached, recomputed = frames_of(True, True), frames_of(True, False)
    assert colours_in(cached) <= allowed and len(colours_in(cached)) >= 2
    torch.testing.assert_close(cached, recomputed)
    assert len(colours_in(frames_of(False, True)) - allowed) > 100  # unsnapped: shades everywhere
    with pytest.raises(ModelConfigError, match="sampler.palette .* tokenizer.kind='patch'"):
        make_world_model(tokenizer=TokenizerConfig(kind="vae", frame_size=(32, 32)), sampler=SamplerConfig(palette=True))


def test_capped_palette_keeps_a_colour_to_its_context_amount_and_cuts_its_least_sure_pixels():
    """sampler.palette_counts: a ball drawn over its own body and a trail holds no more pixels of
    its colour than a context frame held; the trail's fainter pixels go to the background, the
    body (nearest the colour) stays; under the cap nothing changes."""
    from worldforge.models.palette import palettes, snap

    orange, green = torch.tensor([1.0, 0.0, -1.0]), torch.tensor([-1.0, 0.2, -1.0])
    context = green.view(1, 1, 3, 1, 1).repeat(1, 2, 1, 8, 8)
    context[:, 0, :, 2:5, 2:5] = orange.view(3, 1, 1)  # a 3x3 ball: 9 pixels at most in a frame
    context[:, 1, :, 2:4, 2:4] = orange.view(3, 1, 1)
    table, usable, amounts, _ = palettes(context, limit=8)
    assert sorted(amounts[0].tolist()) == [9, 60]
    frame = context[:, :1].clone()
    frame[:, 0, :, 2:5, 5:7] = (0.4 * green + 0.6 * orange).view(3, 1, 1)  # a trail: nearer orange
    plain = snap(frame, table, usable)
    capped = snap(frame, table, usable, amounts)

    def is_orange(frames: torch.Tensor) -> torch.Tensor:
        return (frames[0, 0] - orange.view(3, 1, 1)).abs().amax(dim=0) < 0.01

    assert int(is_orange(plain).sum()) == 15  # body and trail
    assert int(is_orange(capped).sum()) == 9
    assert is_orange(capped)[2:5, 2:5].all()  # the body kept, the trail cut to the background
    assert (capped[0, 0, :, 2:5, 5:7] - green.view(3, 1, 1)).abs().max() < 0.01
    roomy = snap(frame, table, usable, amounts * 2)
    torch.testing.assert_close(roomy, plain)


def test_capped_nearest_never_moves_a_pixel_onto_a_padding_slot():
    """Caps too tight for a clip's pixels (3 pixels, 1 + 1 allowed): the pixel left over stays on
    the clip's last colour instead of the padding slot that a batch's larger palette adds."""
    from worldforge.models.palette import FAR, capped_nearest

    distance = torch.tensor([[[0.1, 0.5, FAR], [0.2, 0.6, FAR], [0.3, 0.7, FAR]]])  # (1, 3 pixels, 2 + 1 pad)
    chosen = capped_nearest(distance, torch.tensor([[1, 1, 0]]))
    assert chosen.tolist() == [[0, 1, 1]]  # the surest pixel keeps the first colour


def palette_rollout(make_world_model, context: torch.Tensor, colours: torch.Tensor, cache: bool, **sampler):
    """A noisy untrained network's 4 frames after `context` (B, 3, H, W) colour indices into
    `colours` (K, 3), sampled in the palette with `sampler`'s options: the frames drawn
    (B, 4, 3, H, W) and each pixel's nearest colour index (B, 4, H, W)."""
    from worldforge.models.config import SamplerConfig, TokenizerConfig
    from worldforge.models.streaming import generate_latents

    tokenizer = TokenizerConfig(frame_size=tuple(context.shape[-2:]), patch_size=4)
    config = SamplerConfig(solver="ancestral", steps=2, palette=True, **sampler)
    model = make_world_model(noise=0.5, tokenizer=tokenizer, sampler=config, patch_size=2)
    condition = model.action_condition(torch.zeros(context.shape[0], 7, dtype=torch.long), 7)
    frames = colours[context].permute(0, 1, 4, 2, 3)
    generated, _ = generate_latents(
        model, model.tokenizer.encode(frames), condition, 4, 2, "ancestral", cache, torch.Generator().manual_seed(1)
    )
    drawn = model.tokenizer.decode(generated)
    index = (drawn[:, :, None] - colours.view(1, 1, -1, 3, 1, 1)).abs().amax(dim=3).argmin(dim=2)
    return drawn, index


def test_a_capped_palette_rollout_keeps_every_colour_within_its_cap(make_world_model):
    """An untrained, noisy network's rollout with sampler.palette_counts 1: every generated frame
    holds each colour at most as often as one context frame did, with and without the KV cache
    (the same frames); the uncapped palette draws some colour beyond it."""
    colours = torch.tensor([[-0.6, -0.2, 0.1], [1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    context = torch.zeros(2, 3, 32, 32, dtype=torch.int64)  # background, with a few red and white squares
    context[:, :, 4:8, 4:8], context[:, :, 20:23, 10:13] = 1, 2
    context[:, 1, 4:8, 5:9] = 1
    most = torch.stack([(context == k).sum(dim=(2, 3)).amax(dim=1) for k in range(3)], dim=1)  # (2, 3)

    def rollout_counts(counts: float, cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
        drawn, index = palette_rollout(make_world_model, context, colours, cache, palette_counts=counts)
        return drawn, torch.stack([(index == k).sum(dim=(2, 3)) for k in range(3)], dim=2)  # (2, 4, 3)

    cached, counts = rollout_counts(1.0, True)
    recomputed, _ = rollout_counts(1.0, False)
    torch.testing.assert_close(cached, recomputed)
    assert (counts <= most[:, None, :]).all()
    _, uncapped = rollout_counts(0.0, True)
    assert (uncapped > most[:, None, :]).any()


def test_a_still_background_keeps_every_pixel_in_the_background_colour_it_showed(make_world_model):
    """sampler.palette_background: a noisy network draws stripes anywhere; with the option every
    pixel it draws in a background colour (a stripe) is the stripe colour that pixel showed in the
    context, with and without the KV cache (the same frames); without it the stripes are torn."""
    colours = torch.tensor([[-0.6, -0.2, 0.1], [0.3, 0.3, 0.5], [1.0, -1.0, -1.0]])
    stripes = (torch.arange(32) // 4 % 2).expand(32, 32)  # vertical stripes of colours 0 and 1
    context = stripes.repeat(2, 3, 1, 1).clone()
    context[:, :, 10:13, 10:13] = 2  # a red square: not background (9 of 1024 pixels)

    def stripes_drawn(share: float, cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return palette_rollout(make_world_model, context, colours, cache, palette_background=share)

    kept, index = stripes_drawn(0.2, True)
    recomputed, _ = stripes_drawn(0.2, False)
    torch.testing.assert_close(kept, recomputed)
    ground = index < 2
    ground[:, :, 10:13, 10:13] = False  # never background in the context: the network's stripe stays
    assert ground.float().mean() > 0.5
    assert torch.equal(index[ground], stripes.expand_as(index)[ground])  # every stripe pixel where it was
    _, torn = stripes_drawn(0.0, True)
    assert not torch.equal(torn[torn < 2], stripes.expand_as(torn)[torn < 2])


def test_sprites_move_whole_as_far_as_the_network_moved_their_colour():
    """sampler.palette_sprites: a ball (a plus of 5 cells) drawn by the network as a smear whose
    centre is one column on is drawn whole one column on, the smear's other cells in the
    background, and the agent the network drew with a cell missing is drawn whole where it was. A
    ball drawn a third of a column on stands the first time and moves a column the second (its
    position keeps the fraction). Drawn with none of its colour, a sprite waits where it was, and
    is gone on the third such frame in a row (`SPRITE_PATIENCE`)."""
    from worldforge.models.palette import frames_palette, snap

    green, orange, white = torch.tensor([-1.0, 0.2, -1.0]), torch.tensor([1.0, 0.0, -1.0]), torch.ones(3)
    plus = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)

    def frame(ball_column: int | None) -> torch.Tensor:
        image = green.view(3, 1, 1).repeat(1, 12, 12)
        if ball_column is not None:
            image[:, 2:5, ball_column : ball_column + 3][:, plus] = orange[:, None]
        image[:, 8:10, 8:10] = white[:, None, None]
        return image

    context = torch.stack([frame(1), frame(2), frame(3)])[None]  # the ball moves right, the agent stands
    table, usable, _, background, memory, sprites = frames_palette(context, 8, background=0.15, sprites=True)
    assert sorted(sprites.at.tolist()) == [[2, 3], [8, 8]]

    def drawn_as(network: torch.Tensor) -> torch.Tensor:
        return snap(network[None, None], table, usable, None, background, memory, sprites)[0, 0]

    smear = frame(None)
    smear[:, 2:5, 3:8] = orange[:, None, None]  # 5 columns of orange around column 5
    smear[:, 9, 9] = green
    torch.testing.assert_close(drawn_as(smear), frame(4), atol=0.01, rtol=0)  # whole, one column on
    assert sorted(sprites.at.tolist()) == [[2, 4], [8, 8]]
    nudged = frame(4)
    nudged[:, 3, 7] = orange  # one more cell to the right: the centre a third of a column on
    torch.testing.assert_close(drawn_as(nudged), frame(4), atol=0.01, rtol=0)
    torch.testing.assert_close(drawn_as(nudged), frame(5), atol=0.01, rtol=0)
    for _ in range(2):  # not drawn: it waits where it was, two frames
        torch.testing.assert_close(drawn_as(frame(None)), frame(5), atol=0.01, rtol=0)
    torch.testing.assert_close(drawn_as(frame(None)), frame(None), atol=0.01, rtol=0)  # the third: gone
    assert sorted(zip(sprites.alive.tolist(), sprites.at.tolist())) == [(False, [2, 5]), (True, [8, 8])]


def test_a_sprite_leaving_a_place_it_never_left_shows_the_stripe_above_it():
    """A ball that stood on two stripes through the whole context leaves pixels that never showed
    the background: when it moves away they take the stripe colour of the pixels above them
    (`filled_memory`), whatever colour the network guessed there."""
    from worldforge.models.palette import frames_palette, snap

    dark, light, red = torch.tensor([-0.8, -0.8, -0.6]), torch.tensor([-0.2, -0.2, 0.0]), torch.tensor([1.0, -1.0, -1.0])
    colours = torch.stack([dark, light, red])
    stripes = (torch.arange(32) // 2 % 2).expand(32, 32).clone()  # stripes 2 columns wide
    still = stripes.clone()
    still[4:6, 3:5] = 2  # a 2x2 ball on a light (column 3) and a dark stripe (column 4)
    context = colours[still].permute(2, 0, 1)[None, None].repeat(1, 3, 1, 1, 1)
    table, usable, _, background, memory, sprites = frames_palette(context, 8, background=0.15, sprites=True)
    network = stripes.clone()
    network[4:6, 3] = 0  # the network guesses the dark stripe where the ball stood: wrong
    network[4:6, 4:8] = 2  # and red whose centre is 2 columns on
    drawn = snap(colours[network].permute(2, 0, 1)[None, None], table, usable, None, background, memory, sprites)
    index = (drawn[0, 0, :, :, :, None] - colours.T[:, None, None]).abs().amax(dim=0).argmin(dim=-1)
    expected = stripes.clone()
    expected[4:6, 5:7] = 2
    assert torch.equal(index, expected)


def test_a_sprite_rollout_draws_each_object_in_its_context_shape(make_world_model):
    """An untrained, noisy network's rollout with sampler.palette_sprites: in every generated frame
    each object colour covers its context shape exactly, moved by whole cells, or nothing, with and
    without the KV cache (the same frames); without the option the shapes break. Without the still
    background it does nothing."""

    colours = torch.tensor([[-0.6, -0.2, 0.1], [0.3, 0.3, 0.5], [1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    stripes = (torch.arange(32) // 4 % 2).expand(32, 32)
    context = stripes.repeat(2, 3, 1, 1).clone()
    for step in range(3):  # a red 3x3 square moving right, a white 4x2 bar standing
        context[:, step, 10:13, 10 + step : 13 + step] = 2
    context[:, :, 20:24, 5:7] = 3
    shapes = {2: torch.ones(3, 3), 3: torch.ones(4, 2)}

    def whole(mask: torch.Tensor, shape: torch.Tensor) -> bool:
        if not mask.any():
            return True
        rows, cols = mask.any(dim=1).nonzero()[:, 0], mask.any(dim=0).nonzero()[:, 0]
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return box.shape == shape.shape and bool(box.all())

    def shapes_kept(index: torch.Tensor) -> bool:
        return all(whole(index[b, t] == k, shape) for b in range(2) for t in range(4) for k, shape in shapes.items())

    kept, index = palette_rollout(make_world_model, context, colours, True, palette_background=0.2, palette_sprites=True)
    recomputed, _ = palette_rollout(make_world_model, context, colours, False, palette_background=0.2, palette_sprites=True)
    torch.testing.assert_close(kept, recomputed)
    assert shapes_kept(index) and (index == 2).any()
    _, broken = palette_rollout(make_world_model, context, colours, True, palette_background=0.2)
    assert not shapes_kept(broken)
    plain, _ = palette_rollout(make_world_model, context, colours, True)
    inert, _ = palette_rollout(make_world_model, context, colours, True, palette_sprites=True)
    torch.testing.assert_close(inert, plain)  # without the still background the option does nothing


def test_a_context_without_objects_has_no_sprites_and_is_drawn_as_without_them():
    """A context of background alone (two stripes) gives no sprites, and its frames are snapped as
    the still background alone snaps them."""
    from worldforge.models.palette import frames_palette, snap

    colours = torch.tensor([[-0.8, -0.8, -0.6], [-0.2, -0.2, 0.0]])
    frames = colours[(torch.arange(8) // 2 % 2).expand(1, 2, 8, 8)].permute(0, 1, 4, 2, 3)
    table, usable, _, background, memory, sprites = frames_palette(frames, 8, background=0.15, sprites=True)
    assert sprites.clip.numel() == 0 and sprites.at.shape == (0, 2)
    drawn = frames[:, :1] + 0.1 * torch.randn(1, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with_sprites = snap(drawn, table, usable, None, background, memory.clone(), sprites)
    torch.testing.assert_close(with_sprites, snap(drawn, table, usable, None, background, memory.clone()))


def test_a_gradient_s_rows_are_background_and_a_torn_gradient_is_mended():
    """A gradient background (each row its own colour, each 1/16 of the frame: under the share) is
    background because each row reaches from edge to edge (`background_colours`), so its rows are
    no sprites and a row the network draws in its neighbour's colour takes its own back; the ball,
    which spans nothing, is the one sprite."""
    from worldforge.models.palette import frames_palette, palettes, snap

    rows = torch.linspace(-0.9, -0.3, 16)
    gradient = torch.stack([rows, rows.flip(0), torch.full((16,), -0.5)])[:, :, None].expand(3, 16, 16)
    red = torch.tensor([1.0, -1.0, -1.0])

    def frame(column: int) -> torch.Tensor:
        image = gradient.clone()
        image[:, 6:8, column : column + 2] = red[:, None, None]
        return image

    context = torch.stack([frame(3), frame(4)])[None]
    table, usable, _, background, memory, sprites = frames_palette(context, 32, background=0.15, sprites=True)
    amounts = palettes(context, limit=32)[2]
    assert int(background[0].sum()) == 16 and not (amounts[0][background[0]] >= 0.15 * 256).any()
    assert sprites.clip.numel() == 1 and sprites.at.tolist() == [[6, 4]]
    torn = frame(5)
    torn[:, 10] = gradient[:, 11]  # row 10 drawn in row 11's colour
    drawn = snap(torn[None, None], table, usable, None, background, memory, sprites)[0, 0]
    torch.testing.assert_close(drawn, frame(5), atol=0.01, rtol=0)


def test_a_checker_under_an_object_that_never_moved_is_filled_by_its_period():
    """A 3x3 object that stood across a checker cell's corner through the whole context: the pixels
    it hid take the checker's own colours (`filled_memory` finds the period), where the colour of
    the pixel above them would be the other cell's for two of its rows."""
    from worldforge.models.palette import frames_palette

    dark, light, red = (
        torch.tensor([-0.8, -0.8, -0.6]),
        torch.tensor([-0.2, -0.2, 0.0]),
        torch.tensor([1.0, -1.0, -1.0]),
    )
    colours = torch.stack([dark, light, red])
    cells = torch.arange(32) // 4
    checker = (cells[:, None] + cells[None, :]) % 2
    still = checker.clone()
    still[11:14, 11:14] = 2  # across rows 11 | 12-13 and columns 11 | 12-13: four cells
    context = colours[still].permute(2, 0, 1)[None, None].repeat(1, 3, 1, 1, 1)
    palette = frames_palette(context, 8, background=0.15, sprites=True)
    table, memory = palette.table, palette.memory
    filled = table[0, memory[0]].view(32, 32, 3)
    torch.testing.assert_close(filled, colours[checker], atol=0.01, rtol=0)


def test_overlapping_sprites_keep_the_order_the_network_drew():
    """Where two sprites overlap, the one whose colour the network drew there is on top, and stays
    on top in later frames where the network draws neither there; before any such frame, the
    smaller is on top."""
    from worldforge.models.palette import frames_palette, snap

    green, red, white = torch.tensor([-1.0, 0.2, -1.0]), torch.tensor([1.0, -1.0, -1.0]), torch.ones(3)
    colours = torch.stack([green, red, white])

    def frame(ball: tuple[int, int] | None, overlap: int | None = None) -> torch.Tensor:
        index = torch.zeros(16, 16, dtype=torch.int64)
        index[6:10, 6:10] = 2  # the agent, 4x4
        if ball is not None:
            index[ball[0] : ball[0] + 2, ball[1] : ball[1] + 2] = 1
        if overlap is not None:
            index[6, 6] = overlap  # what the network drew where the ball (5-6, 5-6) meets the agent
        return colours[index].permute(2, 0, 1)

    context = torch.stack([frame((3, 3)), frame((3, 3))])[None]
    table, usable, _, background, _, _ = frames_palette(context, 8, background=0.15, sprites=True)

    def fresh():
        return frames_palette(context, 8, background=0.15, sprites=True)[-2:]  # memory, sprites

    def at_overlap(network: torch.Tensor, memory, sprites) -> int:
        drawn = snap(network[None, None], table, usable, None, background, memory, sprites)[0, 0, :, 6, 6]
        return int((drawn[:, None] - colours.T).abs().amax(dim=0).argmin())

    memory, sprites = fresh()
    assert (
        at_overlap(frame((5, 5), overlap=2), memory, sprites) == 2
    )  # the network drew the agent over the ball
    assert sprites.at.tolist() == [[5, 5], [6, 6]]
    assert at_overlap(frame((5, 5), overlap=0), memory, sprites) == 2  # drew neither: the agent stays on top
    memory, sprites = fresh()
    sprites.position = torch.tensor([[5.0, 5.0], [6.0, 6.0]])  # already overlapping, no order drawn yet
    assert at_overlap(frame((5, 5), overlap=0), memory, sprites) == 1  # the smaller on top


def test_the_colour_cap_bounds_the_objects_and_not_the_background(make_world_model):
    """With sampler.palette_counts and palette_background, a background colour is not capped (an
    object that moves off it uncovers more of it than any context frame showed), while an object's
    colour is capped at its size in every generated frame."""
    from worldforge.models.config import SamplerConfig, TokenizerConfig
    from worldforge.models.streaming import context_palette

    colours = torch.tensor([[-0.6, -0.2, 0.1], [0.3, 0.3, 0.5], [1.0, -1.0, -1.0]])
    context = (torch.arange(32) // 4 % 2).expand(32, 32).repeat(2, 3, 1, 1).clone()
    context[:, :, 10:13, 10:13] = 2  # a red square standing on both stripes
    sampler = SamplerConfig(palette=True, palette_counts=1.0, palette_background=0.2)
    model = make_world_model(tokenizer=TokenizerConfig(frame_size=(32, 32), patch_size=4), sampler=sampler, patch_size=2)
    latent = model.tokenizer.encode(colours[context].permute(0, 1, 4, 2, 3))
    palette = context_palette(model, latent)
    index = (palette.table[0, :, None] - colours[None]).abs().amax(dim=-1).argmin(dim=-1)  # table -> colours
    assert palette.caps[0, index.argsort()].tolist() == [1024, 1024, 9]
    _, drawn = palette_rollout(make_world_model, context, colours, True, palette_counts=1.0, palette_background=0.2)
    assert ((drawn == 2).sum(dim=(2, 3)) <= 9).all()


def test_a_sprite_that_touches_one_the_network_draws_is_hidden_not_gone():
    """Two objects that meet are often drawn as one: a ball the network stops drawing while its box
    touches the agent's, which the network does draw, is not counted as missed however long that
    lasts; once apart and still not drawn it is gone after `SPRITE_PATIENCE` frames."""
    from worldforge.models.palette import SPRITE_PATIENCE, frames_palette, snap

    green, red, white = torch.tensor([-1.0, 0.2, -1.0]), torch.tensor([1.0, -1.0, -1.0]), torch.ones(3)
    colours = torch.stack([green, red, white])

    def frame(ball: tuple[int, int] | None, agent: int = 6) -> torch.Tensor:
        index = torch.zeros(16, 16, dtype=torch.int64)
        if ball is not None:
            index[ball[0] : ball[0] + 2, ball[1] : ball[1] + 2] = 1
        index[6:10, agent : agent + 4] = 2  # the agent, 4x4, drawn over the ball
        return colours[index].permute(2, 0, 1)

    context = torch.stack([frame((5, 4)), frame((5, 5))])[None]  # the ball reaches the agent's corner
    table, usable, _, background, memory, sprites = frames_palette(context, 8, background=0.15, sprites=True)

    def draw(network: torch.Tensor) -> None:
        snap(network[None, None], table, usable, None, background, memory, sprites)

    for _ in range(2 * SPRITE_PATIENCE):  # merged into the agent: the network draws the agent alone
        draw(frame(None))
    assert sprites.alive.all() and sprites.missed.tolist() == [0, 0]
    draw(frame(None, agent=11))  # the agent walks off to the right (it touched the ball when it left)
    for missed in range(1, SPRITE_PATIENCE + 1):  # the ball, alone, is missed
        assert sprites.alive.tolist() == [True, True]
        draw(frame(None, agent=11))
        assert sprites.missed.tolist() == [missed, 0]
    assert sprites.alive.tolist() == [False, True]


def test_sprites_are_the_colours_in_one_piece_placed_where_their_shape_covers_most_of_the_last_frame():
    """`find_sprites` over a batch: a colour in two pieces is no sprite, cells touching at a corner
    are one piece, a colour gone from the last context frame is no sprite, and a shape that the
    last frame shows cut by the frame's edge is placed, wholly inside the frame, where it covers
    most of what is left; sprites come by clip, then colour, a clip without a palette has none."""
    from worldforge.models.palette import frames_palette

    colours = {
        "ground": [-1.0, -0.6, -1.0],
        "twins": [1.0, -1.0, -1.0],
        "chain": [-1.0, -1.0, 1.0],
        "gone": [1.0, 1.0, -1.0],
        "bar": [1.0, 0.0, 1.0],
    }

    def frame(last: bool) -> torch.Tensor:
        image = torch.tensor(colours["ground"]).view(3, 1, 1).repeat(1, 12, 12)

        def paint(name: str, rows: slice, cols: slice) -> None:
            image[:, rows, cols] = torch.tensor(colours[name]).view(3, 1, 1)

        paint("twins", slice(0, 2), slice(0, 2))
        paint("twins", slice(0, 2), slice(6, 8))
        for d in range(3):  # a diagonal: one piece, 8-connected
            paint("chain", slice(5 + d, 6 + d), slice(1 + d, 2 + d))
        if not last:
            paint("gone", slice(9, 11), slice(1, 3))
        if last:  # the bar's right column past the frame's edge
            paint("bar", slice(10, 12), slice(10, 12))
        else:
            paint("bar", slice(6, 8), slice(7, 10))
        return image

    clip = torch.stack([frame(False), frame(False), frame(True)])
    photo = torch.rand(3, 3, 12, 12) * 2 - 1  # more colours than the palette takes: no palette
    palette = frames_palette(torch.stack([photo, clip]), 8, background=0.15, sprites=True)
    sprites, table = palette.sprites, palette.table
    assert palette.usable.tolist() == [False, True]
    slot = {name: int((table[1] - torch.tensor(v)).abs().sum(-1).argmin()) for name, v in colours.items()}
    found = [next(name for name, c in slot.items() if c == colour) for colour in sprites.colour.tolist()]
    assert sprites.clip.tolist() == [1, 1] and sorted(found) == ["bar", "chain"]
    assert sprites.colour.tolist() == sorted(sprites.colour.tolist())
    chain, bar = found.index("chain"), found.index("bar")
    assert sprites.size[chain].tolist() == [3, 3] and int(sprites.cells[chain].sum()) == 3
    assert sprites.at[chain].tolist() == [5, 1]
    assert sprites.size[bar].tolist() == [2, 3] and int(sprites.cells[bar].sum()) == 6
    assert sprites.at[bar].tolist() == [10, 9]  # wholly inside the frame, over the four cells left of it
    assert sprites.owned[1].nonzero()[:, 0].tolist() == sorted([slot["chain"], slot["bar"]])
    assert not sprites.owned[0].any()
