"""`benchmarks/realism_breakdown.py`: a realism error is put where it was made (near the objects, on
the background's texture edges, on its flat areas), on frames of a hand-made striped world."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tests.evaluation.test_realism import BALLS, SIZE, TRACK, frames_at, half_erased, hand_made_world

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "realism_breakdown.py"
spec = importlib.util.spec_from_file_location("realism_breakdown", SCRIPT)
realism_breakdown = importlib.util.module_from_spec(spec)
spec.loader.exec_module(realism_breakdown)


def striped_world():
    world = hand_made_world()
    world.background[:, ::8] = (90, 90, 120)  # a stripe every 8 columns: texture edges beside it
    return world


def test_the_truth_has_no_error_and_a_half_erased_ball_errs_near_the_objects_only():
    world = striped_world()
    truth = frames_at(world, TRACK)
    total, parts = realism_breakdown.breakdown(truth, truth, world)
    np.testing.assert_array_equal(total, 0.0)
    total, parts = realism_breakdown.breakdown(half_erased(world, truth), truth, world)
    assert (total > 0).all()
    np.testing.assert_allclose(parts.sum(axis=-1), total)  # the three parts are the whole
    np.testing.assert_allclose(parts[:, 0], total)  # all of it near the objects


def test_a_worn_stripe_errs_on_the_texture_edges_and_noise_far_from_objects_on_the_flat_areas():
    world = striped_world()
    truth = frames_at(world, TRACK)
    worn = truth.copy()
    worn[:, :, 1::8] = (
        truth[:, :, 0::8].astype(int) + truth[:, :, 1::8]
    ) // 2  # each stripe smeared a column on
    total, parts = realism_breakdown.breakdown(worn, truth, world)
    assert (parts[:, 1] > 0.6 * total).all() and (parts[:, 2] == 0).all()  # the rest: stripes near objects
    noisy = truth.copy()
    ys, xs = (np.indices((SIZE, SIZE)) + 0.5) / SIZE
    far = np.min([np.hypot(xs - x, ys - y) for x, y in [TRACK[0][0], *BALLS]], axis=0) > 0.3
    flat = far & (np.arange(SIZE)[None, :] % 8 == 4)  # mid-way between stripes
    noisy[:, flat] = np.clip(truth[:, flat].astype(int) + 40, 0, 255)
    total, parts = realism_breakdown.breakdown(noisy, truth, world)
    assert flat.any() and (parts[:, 2] > 0.99 * total).all()
