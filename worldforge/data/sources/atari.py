"""Atari games through ale-py + gymnasium (`pip install 'worldforge[atari]'`; ale-py ships the ROMs).

An episode is one game from `reset` until game over or `episode_frames` recorded frames. Each
recorded frame is followed by the action the behaviour policy chose; the frame that action leads
to is the next recorded one (the final game-over frame, which has no action, is not recorded).
Frames are resized (squashed, bilinear) from 210x160 to the configured square resolution. Each
clip stores the game's reward on the way into each frame (`reward.npy`) and its info at each frame
(`info.json`: `lives`, `episode_frame_number`, `frame_number`), as the Gymnasium source does.
Determinism: the emulator, its sticky actions and the policy are seeded from (seed, episode).
"""

from __future__ import annotations

import numpy as np

from worldforge.data.config import DataConfig
from worldforge.data.episode import ActionSpace, DatasetError, Episode, resize_frames
from worldforge.data.policies import make_policy
from worldforge.data.sources.recording import PER_FRAME, play, reset_seed, too_short


def env_id(game: str) -> str:
    """'Pong' -> 'ALE/Pong-v5'; a full id ('ALE/Pong-v5') is kept."""
    return game if "/" in game or game.endswith(("-v4", "-v5")) else f"ALE/{game}-v5"


class AtariSource:
    name = "atari"

    def __init__(self, config: DataConfig):
        try:
            import ale_py
            import gymnasium
        except ImportError as error:
            raise DatasetError(
                f"data.source=atari needs ale-py and gymnasium ({error}); install them with "
                "pip install 'worldforge[atari]'"
            ) from None
        gymnasium.register_envs(ale_py)
        self.config = config
        atari = config.atari
        try:
            self.env = gymnasium.make(
                env_id(atari.game),
                frameskip=atari.frameskip,
                repeat_action_probability=atari.sticky_actions,
                full_action_space=atari.full_action_space,
                obs_type="rgb",
            )
        except Exception as error:  # noqa: BLE001 - gymnasium raises several types for unknown ids
            raise DatasetError(f"data.atari.game: cannot make {env_id(atari.game)!r}: {error}") from None
        names = [str(name) for name in self.env.unwrapped.get_action_meanings()]
        self.action_space = ActionSpace(kind="discrete", n=int(self.env.action_space.n), names=names)
        self.fps = 60.0 / atari.frameskip
        self.policy = make_policy(atari.policy, atari.policy_repeat, "data.atari.policy")
        self.problems: list[str] = []

    def available(self, wanted: int) -> int:
        return wanted

    def episode(self, index: int) -> Episode | None:
        data, atari = self.config, self.config.atari
        rng = np.random.default_rng([data.seed, index, 1])
        # The emulator repeats each action `frameskip` times itself; observations are (210, 160, 3) uint8.
        played = play(self.env, self.policy, rng, reset_seed(data.seed, index), data.episode_frames)
        if len(played) < data.window_frames:
            self.problems.append(too_short(index, len(played), data.window_frames, "game"))
            return None
        resized = resize_frames(np.stack(played.frames), data.resolution, crop=False)  # (L, R, R, 3)
        return Episode("atari", index, resized, np.asarray(played.actions, dtype=np.int64), self.fps,
                       self.action_space, meta={"game": env_id(atari.game)},
                       reward=np.asarray(played.rewards, dtype=np.float32), info=played.infos)

    def describe(self) -> dict:
        return {"game": env_id(self.config.atari.game), "frameskip": self.config.atari.frameskip,
                "per_frame": PER_FRAME}

    def close(self) -> None:
        self.env.close()
