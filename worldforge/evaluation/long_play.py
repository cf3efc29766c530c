"""Long play: rollouts far past the recorded episodes, scored without a true future.

The first `eval.context_frames` frames of each of `eval.play_episodes` held-out episodes go in, and
the model plays `eval.play_frames` frames (256 by default: many times its training clip) driven by
the dataset's own behaviour policy: the episode's recorded actions, then the sticky-random policy
continued past them (repeat the previous action with probability `simulator.action_repeat`, else
draw one uniformly; drawn from `[seed, episode, 2]`, a stream recording never uses). The simulator
plays the same episode under the same actions (`realism.replay_episode`, drawn from `[seed, episode, 0]`
like the recording), and its first frames must match the recorded ones: the continuation is the same
world. Its frames are not a truth to match (the model's balls may rightly differ after a few dozen
frames: bounces amplify small errors) but what a frame of this world looks like and holds. At steps
32, 64, 128, ... up to `play_frames` (and at `play_frames`), each a mean over the `PLAY_WINDOW`
frames ending there (`play_h{H}_...`):

- `realism_psnr`, `truth_realism_psnr`: realism (`realism.py`) of the model's and the simulator's frames;
- `sharpness`: high-frequency energy of the model's frames over the simulator's (`metrics.sharpness`);
- `balls_found`, `truth_balls_found`: mean number of balls drawn as compact balls
  (`objects.compact_balls`) of the `play_balls` balls per episode whose colour no other ball shares;
- `agent_found`, `truth_agent_found`: fraction of frames in which the agent is drawn as a compact
  square (`objects.compact_agent`; a white band along an edge or a smear is not the agent);
- `motion_ratio`: how much frames change from one to the next, over the simulator's (`metrics.motion_ratio`).

All episodes are rolled out as one batch, with the KV cache and the model's sliding context window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldforge.data.config import SimulatorConfig
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_episodes
from worldforge.data.sources.simulator import World, sticky_random_actions
from worldforge.evaluation import metrics
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.objects import Scene, compact_agent, compact_balls, read_scene
from worldforge.evaluation.realism import clip_errors, episode_world, overall_psnr, replay_episode
from worldforge.evaluation.report import to_uint8
from worldforge.evaluation.rollout_eval import EvaluationError, to_model_frames
from worldforge.models.streaming import rollout

log = logging.getLogger(__name__)

PLAY_WINDOW = 8  # frames ending at a scored step that its numbers average over
FIRST_STEP = 32  # scored steps: 32, 64, 128, ... up to play_frames
STRIP_EVERY = 16  # the report's strip shows every 16th frame
STRIP_SCALE_TO = 64  # frames are scaled up (nearest) to at least this many pixels high


@dataclass
class PlayClips:
    """Held-out contexts and the simulator's own continuation of each episode."""

    dataset: Path
    episodes: list[int]
    context: torch.Tensor  # (N, Tc, C, H, W) in [-1, 1]: each episode's first frames as recorded
    actions: torch.Tensor  # (N, Tc + F) int64: recorded, then the behaviour policy continued
    simulated: torch.Tensor  # (N, F, C, H, W) in [-1, 1]: the simulator's frames under those actions
    worlds: list[World]  # per episode, at its first frame (for redrawing frames)
    scenes: list[Scene]  # per episode, read off the simulator's frames
    countable: np.ndarray  # (N, 1 + K) bool: objects whose colour no other object shares

    @property
    def frames(self) -> int:
        return self.simulated.shape[1]


def continue_policy(recorded: np.ndarray, length: int, repeat: float, rng: np.random.Generator) -> np.ndarray:
    """`length` actions (int64): the `recorded` ones (L,), then the simulator's sticky-random
    behaviour policy (`simulator.sticky_random_actions`) continued from the last of them."""
    known = min(len(recorded), length)
    previous = int(recorded[known - 1]) if known else None
    continued = sticky_random_actions(length - known, repeat, rng, previous)
    return np.concatenate([np.asarray(recorded[:known], dtype=np.int64), continued])


def load_play(dataset: str | Path, config: EvalConfig) -> PlayClips | None:
    """The long-play episodes of `dataset`'s `config.split`: the first `config.play_episodes`
    episodes, each re-simulated for `context_frames + play_frames` frames. None, with the reason
    logged, when long play is off (`play_episodes` or `play_frames` 0), the dataset is not the
    simulator's with its state, or the simulator no longer replays an episode as recorded."""
    dataset = Path(dataset)
    if not config.play_episodes or not config.play_frames:
        log.info(
            "long play off (eval.play_episodes=%d, eval.play_frames=%d)",
            config.play_episodes,
            config.play_frames,
        )
        return None
    manifest = read_manifest(dataset)
    if manifest.source != "simulator":
        log.info(
            "long play skipped: %s is a %r dataset, it needs the simulator to continue",
            dataset,
            manifest.source,
        )
        return None
    data = manifest.config
    world = SimulatorConfig.model_validate(data.get("simulator", {}))
    length = config.context_frames + config.play_frames
    context, actions, simulated, worlds, scenes, countable, episodes = [], [], [], [], [], [], []
    for episode in iter_episodes(dataset, config.split):
        if episode.state is None:
            log.info("long play skipped: %s has no simulator state (state.npy)", dataset)
            return None
        if len(episode) < config.context_frames:
            raise EvaluationError(
                f"{dataset}: episode {episode.episode} of split {config.split!r} has {len(episode)} frames, "
                f"fewer than eval.context_frames {config.context_frames}"
            )
        rng = np.random.default_rng([data["seed"], episode.episode, 2])
        played = continue_policy(episode.actions, length, world.action_repeat, rng)
        replay = replay_episode(data, episode.episode, played)
        same = min(len(episode), length)
        if not np.array_equal(replay.frames[:same], episode.frames[:same]):
            differ = int(np.argmax((replay.frames[:same] != episode.frames[:same]).any(axis=(1, 2, 3))))
            log.warning(
                "long play skipped: %s episode %d re-simulated differs from its recording at frame %d (recorded "
                "by another version of worldforge's simulator)",
                dataset,
                episode.episode,
                differ,
            )
            return None
        positions = replay.state.reshape(length, -1, 4)[..., :2].astype(np.float64)  # (L, 1 + K, 2)
        scene = read_scene(replay.frames, positions)
        frames = to_model_frames(replay.frames)  # (L, 3, H, W)
        context.append(frames[: config.context_frames])
        simulated.append(frames[config.context_frames :])
        actions.append(torch.from_numpy(played))
        worlds.append(episode_world(data, episode.episode))
        scenes.append(scene)
        countable.append(scene.scored)
        episodes.append(episode.episode)
        if len(episodes) == config.play_episodes:
            break
    if not episodes:
        raise EvaluationError(f"{dataset}: split {config.split!r} has no episodes (eval.split)")
    return PlayClips(
        dataset=dataset,
        episodes=episodes,
        context=torch.stack(context),
        actions=torch.stack(actions),
        simulated=torch.stack(simulated),
        worlds=worlds,
        scenes=scenes,
        countable=np.stack(countable),
    )


def play_steps(frames: int) -> list[int]:
    """The scored steps of a play of `frames` frames: 32, 64, 128, ... up to it, and `frames`."""
    steps, step = [], FIRST_STEP
    while step <= frames:
        steps.append(step)
        step *= 2
    return steps if frames in steps else [*steps, frames]


@torch.no_grad()
def play(model, clips: PlayClips, config: EvalConfig, device: torch.device) -> torch.Tensor:
    """The model's long plays, every episode in one batch: (N, F, C, H, W) on the CPU, the noise
    seeded by `config.seed`. Raises EvaluationError when `eval.play_frames` does not suit the model."""
    r = model.frames_per_latent
    if clips.frames % r:
        raise EvaluationError(
            f"eval.play_frames {clips.frames} must be a multiple of {r}: the tokenizer compresses {r} frames "
            "into one latent frame"
        )
    generator = torch.Generator(device).manual_seed(config.seed)
    result = rollout(
        model,
        clips.context.to(device),
        clips.actions.to(device),
        clips.frames,
        steps=config.denoise_steps,
        generator=generator,
    )
    return result.frames.float().cpu()


def score_play(prediction: torch.Tensor, clips: PlayClips) -> dict[str, Any]:
    """Long-play scores of `prediction` (N, F, C, H, W) against the simulator's own frames under the
    same actions (see the module docstring): `play_steps`, `play_balls` and, at each scored step H,
    `play_h{H}_{realism_psnr, truth_realism_psnr, sharpness, balls_found, truth_balls_found,
    agent_found, truth_agent_found, motion_ratio}`."""
    if prediction.shape != clips.simulated.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} is not the play's {tuple(clips.simulated.shape)}"
        )
    steps = play_steps(clips.frames)
    balls = clips.countable[:, 1:]  # (N, K)
    scores: dict[str, Any] = {"play_steps": steps, "play_balls": float(balls.sum(axis=1).mean())}
    # each frame after the one before it: the last context frame comes first
    generated = torch.cat([clips.context[:, -1:], prediction], dim=1)
    simulator = torch.cat([clips.context[:, -1:], clips.simulated], dim=1)
    for step in steps:
        window = slice(max(1, step - PLAY_WINDOW + 1), step + 1)  # steps (1-based) ending at `step`
        mine, theirs = generated[:, window], simulator[:, window]
        pixels, truth = mine.numpy(), theirs.numpy()
        found_balls = np.stack(
            [compact_balls(c, s, w.radius) for c, s, w in zip(pixels, clips.scenes, clips.worlds)]
        )
        truth_balls = np.stack(
            [compact_balls(c, s, w.radius) for c, s, w in zip(truth, clips.scenes, clips.worlds)]
        )
        agent = np.stack([compact_agent(c, s) for c, s in zip(pixels, clips.scenes)])
        truth_agent = np.stack([compact_agent(c, s) for c, s in zip(truth, clips.scenes)])
        before = slice(window.start - 1, window.stop)
        scores.update(
            {
                f"play_h{step}_realism_psnr": overall_psnr(clip_errors(pixels, clips.worlds)),
                f"play_h{step}_truth_realism_psnr": overall_psnr(clip_errors(truth, clips.worlds)),
                f"play_h{step}_sharpness": metrics.overall(metrics.sharpness(mine, theirs)),
                f"play_h{step}_balls_found": float((found_balls & balls[:, None]).sum(axis=-1).mean()),
                f"play_h{step}_truth_balls_found": float((truth_balls & balls[:, None]).sum(axis=-1).mean()),
                f"play_h{step}_agent_found": float(agent.mean()),
                f"play_h{step}_truth_agent_found": float(truth_agent.mean()),
                f"play_h{step}_motion_ratio": metrics.overall(
                    metrics.motion_ratio(generated[:, before], simulator[:, before])
                ),
            }
        )
    return scores


def write_strip(path: Path, clips: PlayClips, prediction: torch.Tensor, count: int = 3) -> Path:
    """A PNG of the first `count` plays: per episode a row of the simulator's frames above a row of
    the model's, columns the last context frame then every `STRIP_EVERY`th step (16, 32, ...)."""
    from PIL import Image

    columns = [0, *range(STRIP_EVERY, clips.frames + 1, STRIP_EVERY)]  # 0: the last context frame
    scale = max(1, math.ceil(STRIP_SCALE_TO / clips.simulated.shape[-2]))

    def row(frames: torch.Tensor, index: int) -> np.ndarray:
        shown = torch.cat([clips.context[index, -1:], frames])[columns]  # (columns, C, H, W)
        tiles = to_uint8(shown).repeat(scale, axis=1).repeat(scale, axis=2)  # (columns, h, w, 3)
        return _spaced(list(tiles), 2, axis=1)

    episodes = [
        _spaced([row(clips.simulated[i], i), row(prediction[i], i)], 2, axis=0)
        for i in range(min(count, len(clips.episodes)))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_spaced(episodes, 6, axis=0)).save(path)
    return path


def _spaced(images: list[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """(h, w, 3) uint8 images joined along `axis` with a white band `gap` pixels wide between each two."""
    shape = list(images[0].shape)
    shape[axis] = gap
    band = np.full(shape, 255, dtype=np.uint8)
    return np.concatenate([part for image in images for part in (band, image)][1:], axis=axis)
