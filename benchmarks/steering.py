"""How far a held key moves the agent, against the simulator under the same key.

    python benchmarks/steering.py PACKAGE [PACKAGE ...] --dataset ROOT/datasets/quickstart-... \\
        --episodes 32 --frames 4

What a person at the play page does: hold an arrow key and watch the agent go. Each package rolls
out the same held-out simulator episodes from their first `eval.context_frames` (4) recorded
frames, then with one arrow key held for `--frames` frames (right, left, up, down in turn), with
its own sampler and the evaluation's seed. The simulator replays each episode under the same actions
(its recorded ones, then the key). The agent's displacement along the key's axis is read
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

from worldforge.data.manifest import read_manifest
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.realism import read_positions, replay_episode
from worldforge.evaluation.rollout_eval import load_clips
from worldforge.models.streaming import rollout
from worldforge.packages import load_package

KEYS = (("right", 4, 0, 1.0), ("left", 3, 0, -1.0), ("down", 2, 1, 1.0), ("up", 1, 1, -1.0))  # name, action, axis, sign
NUDGE = 0.25  # pixels: a move smaller than this is no move


def held(recorded: np.ndarray, context: int, frames: int, action: int) -> np.ndarray:
    """(N, context + frames) the recorded actions with `action` held from the last context frame on
    (action t makes frame t + 1: the first frame after the context is the key's)."""
    actions = np.array(recorded[:, : context + frames])
    actions[:, context - 1 :] = action
    return actions


def simulator_moves(data: dict, episodes: list[int], actions: np.ndarray, context: int, axis: int) -> np.ndarray:
    """(N,) the agent's displacement along `axis` (normalised) from the last context frame to the
    last frame, each episode of the simulator dataset whose content config is `data`
    (`manifest.config`) replayed under its `actions` (N, context + frames) (`realism.replay_episode`,
    as `evaluation.long_play` continues it)."""
    moves = []
    for episode, played in zip(episodes, actions):
        replay = replay_episode(data, episode, played)
        moves.append(replay.state[-1, axis] - replay.state[context - 1, axis])
    return np.array(moves, dtype=np.float64)


def model_moves(model, clips, actions: np.ndarray, axis: int, seed: int, batch: int = 8) -> np.ndarray:
    """(N,) the agent's displacement along `axis` (normalised) from the last context frame to the
    last frame generated under `actions` (N, context + frames), read in the frames; NaN where it is
    not found."""
    frames = actions.shape[1] - clips.context.shape[1]
    actions = torch.from_numpy(actions)
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
    data = read_manifest(args.dataset).config
    context, recorded = config.context_frames, clips.actions.numpy()
    actions = {name: held(recorded, context, args.frames, action) for name, action, _, _ in KEYS}
    size = clips.frame_size[1]

    runs = []
    for path in args.packages:
        model = load_package(path).build("cpu").eval()
        runs.append((path.name, model))
        if args.no_sprites and model.sampler_cfg.palette_sprites:
            plain = copy.deepcopy(model)
            plain.sampler_cfg = plain.sampler_cfg.model_copy(update={"palette_sprites": False})
            runs.append((f"{path.name} (no sprites)", plain))

    print(f"{len(clips.episodes)} held-out episodes of {args.dataset.name}; each key held {args.frames} frames; pixels")
    header = ["model"] + [f"{name}: moved, response, error" for name, *_ in KEYS] + ["all keys: response, error"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    truth = {name: simulator_moves(data, clips.episodes, actions[name], context, axis) * size for name, _, axis, _ in KEYS}
    cells = []
    for name, _, _, sign in KEYS:
        cells.append(f"{np.mean(sign * truth[name] >= NUDGE):.2f}, 1.00, 0.00")
    everything = np.concatenate([sign * truth[name] for name, _, _, sign in KEYS])
    print("| simulator | " + " | ".join(cells) + f" | 1.00, 0.00 (mean move {everything.mean():.2f}) |", flush=True)
    for label, model in runs:
        cells, ours, theirs = [], [], []
        for name, _, axis, sign in KEYS:
            moved = model_moves(model, clips, actions[name], axis, args.seed) * size
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
