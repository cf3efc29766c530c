"""How far a held key moves the agent, against the simulator under the same key.

    python benchmarks/steering.py PACKAGE [PACKAGE ...] --dataset ROOT/datasets/quickstart-... \\
        --episodes 32 --frames 4

What a person at the play page does: hold an arrow key and watch the agent go. Each package rolls
out the same held-out simulator episodes from their first `eval.context_frames` (4) recorded
frames, then with one arrow key held for `--frames` frames (right, left, up, down in turn), with
its own sampler and the evaluation's seed. The simulator is continued from the recorded state of
the last context frame under the same key. The agent's displacement along the key's axis is read
in the model's frames (`evaluation/realism.py`'s fitted positions) and taken from the simulator's
state, in pixels. Per package and key, the table gives:

- `moved`: the share of episodes in which the agent moved at least a quarter of a pixel the key's
  way (the simulator's share beside it: an agent coasting the other way fast may not turn in time);
- `response`: the model's mean displacement over the simulator's (1: as far as the world moves it);
- `error`: the mean distance between the two displacements, in pixels.

`--no-sprites` also runs each package with `sampler.palette_sprites` off, on the same noise.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from worldforge.data.samples import iter_episodes
from worldforge.data.sources.simulator import World
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.realism import read_positions
from worldforge.evaluation.rollout_eval import load_clips
from worldforge.models.streaming import rollout
from worldforge.packages import load_package

KEYS = (("right", 4, 0, 1.0), ("left", 3, 0, -1.0), ("down", 2, 1, 1.0), ("up", 1, 1, -1.0))  # name, action, axis, sign
NUDGE = 0.25  # pixels: a move smaller than this is no move


def continued(world: World, state: np.ndarray, actions) -> World:
    """A copy of an episode's `world` set to a recorded `state` (`simulator.STATE_LAYOUT`), stepped
    under each of `actions` in turn: the simulator's own continuation of the recording from there."""
    world = copy.deepcopy(world)
    state = np.asarray(state, dtype=np.float64)
    balls = state[4:].reshape(-1, 4)
    world.agent, world.agent_v = state[0:2].copy(), state[2:4].copy()
    world.pos, world.vel = balls[:, :2].copy(), balls[:, 2:].copy()
    for action in actions:
        world.step(int(action))
    return world


def simulator_moves(worlds, states: np.ndarray, action: int, frames: int, axis: int) -> np.ndarray:
    """(N,) the agent's displacement along `axis` (normalised) after `frames` steps under `action`,
    each world set to its episode's recorded state `states` (N, S) at the last context frame."""
    return np.array(
        [continued(world, state, [action] * frames).agent[axis] - state[axis] for world, state in zip(worlds, states)]
    )


def model_moves(model, clips, action: int, frames: int, axis: int, seed: int, batch: int = 8) -> np.ndarray:
    """(N,) the agent's displacement along `axis` (normalised) from the last context frame to the
    last of `frames` generated under `action` held, read in the frames; NaN where it is not found."""
    context = clips.context.shape[1]
    actions = clips.actions[:, : context + frames].clone()
    actions[:, context - 1 :] = action  # action t makes frame t + 1: the first generated frame is the key's
    generator = torch.Generator().manual_seed(seed)
    made = torch.cat(
        [
            rollout(model, clips.context[s : s + batch], actions[s : s + batch], frames, generator=generator).frames
            for s in range(0, len(clips.episodes), batch)
        ]
    ).float()
    moves = []
    for index, world in enumerate(clips.worlds):
        positions = read_positions(torch.cat([clips.context[index, -1:], made[index, -1:]]).numpy(), world)
        moves.append(positions[1, 0, axis] - positions[0, 0, axis])
    return np.array(moves)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="+", type=Path, help="world-model package folders")
    parser.add_argument("--dataset", type=Path, required=True, help="a built simulator dataset folder")
    parser.add_argument("--episodes", type=int, default=32, help="held-out test episodes")
    parser.add_argument("--frames", type=int, default=4, help="frames the key is held")
    parser.add_argument("--seed", type=int, default=0, help="the rollouts' noise (the evaluation's seed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sprites", action="store_true", help="also run each package without sampler.palette_sprites")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = EvalConfig(episodes=args.episodes, context_frames=4, horizon=args.frames)
    clips = load_clips(args.dataset, config)
    if clips.worlds is None:
        parser.error(f"{args.dataset}: not a simulator dataset with recorded states (needs data.source=simulator)")
    episodes = {e.episode: e for e in iter_episodes(args.dataset, config.split) if e.episode in set(clips.episodes)}
    states = np.stack([episodes[i].state[config.context_frames - 1] for i in clips.episodes]).astype(np.float64)
    size = clips.frame_size[1]

    runs = []
    for path in args.packages:
        model = load_package(path).build("cpu").eval()
        runs.append((path.name, model))
        if args.no_sprites and model.sampler_cfg.palette_sprites:
            plain = load_package(path).build("cpu").eval()
            plain.sampler_cfg = plain.sampler_cfg.model_copy(update={"palette_sprites": False})
            runs.append((f"{path.name} (no sprites)", plain))

    print(f"{len(clips.episodes)} held-out episodes of {args.dataset.name}; each key held {args.frames} frames; pixels")
    header = ["model"] + [f"{name}: moved, response, error" for name, *_ in KEYS] + ["all keys: response, error"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    truth = {name: simulator_moves(clips.worlds, states, action, args.frames, axis) * size for name, action, axis, _ in KEYS}
    cells = []
    for name, _, _, sign in KEYS:
        cells.append(f"{np.mean(sign * truth[name] >= NUDGE):.2f}, 1.00, 0.00")
    everything = np.concatenate([sign * truth[name] for name, _, _, sign in KEYS])
    print("| simulator | " + " | ".join(cells) + f" | 1.00, 0.00 (mean move {everything.mean():.2f}) |", flush=True)
    for label, model in runs:
        cells, ours, theirs = [], [], []
        for name, action, axis, sign in KEYS:
            moved = model_moves(model, clips, action, args.frames, axis, args.seed) * size
            found = np.isfinite(moved)
            ours.append(sign * moved[found])
            theirs.append(sign * truth[name][found])
            response = ours[-1].mean() / theirs[-1].mean()
            error = np.abs(ours[-1] - theirs[-1]).mean()
            cells.append(f"{np.mean(ours[-1] >= NUDGE):.2f}, {response:.2f}, {error:.2f}")
        ours, theirs = np.concatenate(ours), np.concatenate(theirs)
        total = f"{ours.mean() / theirs.mean():.2f}, {np.abs(ours - theirs).mean():.2f}"
        print(f"| {label} | " + " | ".join(cells) + f" | {total} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
