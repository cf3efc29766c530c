"""Gymnasium environments as worlds (skipped when the `gymnasium` extra is not installed; Box2D and
MuJoCo tests also need the `box2d` / `mujoco` extras, and MuJoCo a GL that renders headless)."""

from __future__ import annotations

import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("gymnasium", reason="the gymnasium extra: pip install 'worldforge[gymnasium]'")

from worldforge.config import load_config
from worldforge.data import policies
from worldforge.data.episode import DatasetError
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_windows
from worldforge.data.shards import build_dataset
from worldforge.data.sources.gym import GymnasiumSource
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.rollout_eval import load_clips

SMALL = ["data.source=gymnasium", "data.episodes=3", "data.episode_frames=16"]
CARTPOLE = SMALL + ["data.gymnasium.env_id=CartPole-v1"]
CARRACING = SMALL + [
    "data.gymnasium.env_id=CarRacing-v3",
    "data.gymnasium.frames=observation",
    "data.gymnasium.policy=worldforge.data.policies:drive_track",
    "data.gymnasium.warmup_steps=2",
]


def windows_of(path):
    manifest = read_manifest(path)
    return manifest, [w for split in manifest.splits for w in iter_windows(path, split)]


def test_a_discrete_environment_records_render_frames_actions_and_its_observation_as_state(tiny_config, tmp_path):
    pytest.importorskip("pygame", reason="CartPole renders with pygame: pip install 'worldforge[gymnasium]'")
    result = build_dataset(tiny_config(*CARTPOLE), tmp_path / "cartpole", track=False, progress=False)
    manifest, windows = windows_of(result.path)
    assert manifest.source == "gymnasium" and manifest.fps == 50.0
    assert manifest.action_space.kind == "discrete" and manifest.action_space.n == 2
    assert manifest.source_info["state_fields"] == ["observation0", "observation1", "observation2", "observation3"]
    frames = np.stack([w.frames for w in windows])  # (N, 8, 32, 32, 3)
    assert frames.shape[-3:] == (32, 32, 3) and frames.std() > 10  # the cart on its track, not a blank
    assert all(w.actions.dtype == np.int64 and np.isin(w.actions, [0, 1]).all() for w in windows)
    assert all(w.state.shape == (8, 4) and w.state.dtype == np.float32 for w in windows)
    assert windows[0].meta["env_id"] == "CartPole-v1"
    # CartPole pays 1 per step survived: nothing on the way into an episode's first frame.
    for w in windows:
        assert w.reward.dtype == np.float32 and w.reward.shape == (8,)
        expected = np.ones(8, np.float32)
        expected[0] = 0.0 if w.meta["start"] == 0 else 1.0
        assert np.array_equal(w.reward, expected)
        assert w.info == [{}] * 8  # CartPole's info is empty: stored as empty dicts, one per frame


def test_a_gymnasium_state_is_not_read_as_the_simulators_agent_and_balls(tiny_config, tmp_path):
    pytest.importorskip("pygame", reason="CartPole renders with pygame: pip install 'worldforge[gymnasium]'")
    path = build_dataset(tiny_config(*CARTPOLE), tmp_path / "cartpole", track=False, progress=False).path
    clips = load_clips(path, EvalConfig(split="train", episodes=2, context_frames=4, horizon=4))
    assert clips.source == "gymnasium"
    assert clips.positions is None and clips.scenes is None and clips.worlds is None


def test_a_continuous_environment_records_float_actions_from_a_driving_policy(tiny_config, tmp_path):
    pytest.importorskip("Box2D", reason="CarRacing needs the box2d extra: pip install 'worldforge[box2d]'")
    result = build_dataset(tiny_config(*CARRACING), tmp_path / "car", track=False, progress=False)
    manifest, windows = windows_of(result.path)
    assert manifest.action_space.kind == "continuous" and manifest.action_space.dim == 3
    assert "state_fields" not in manifest.source_info  # image observations: no state vector
    actions = np.concatenate([w.actions for w in windows])  # (N * 8, 3) steer, gas, brake
    assert actions.dtype == np.float32 and actions.shape[1] == 3
    assert actions[:, 0].min() >= -1 and actions[:, 1:].min() >= 0 and actions.max() <= 1
    assert actions[:, 0].std() > 0.1  # the steering varies
    assert all(w.state is None for w in windows)
    assert np.stack([w.frames for w in windows]).std() > 10


def test_a_rebuild_gives_the_same_dvc_md5(project, tiny_config):
    pytest.importorskip("Box2D", reason="CarRacing needs the box2d extra: pip install 'worldforge[box2d]'")
    config = tiny_config(*CARRACING, "data.episodes=2")
    first = build_dataset(config, project.datasets / "a", track=True, progress=False)
    again = build_dataset(config, project.datasets / "b", track=True, progress=False)
    assert first.dvc_md5 and again.dvc_md5 == first.dvc_md5
    other = build_dataset(tiny_config(*CARRACING, "data.episodes=2", "data.seed=1"), project.datasets / "c",
                          track=True, progress=False)
    assert other.dvc_md5 != first.dvc_md5


def test_a_mujoco_arm_is_recorded(tiny_config, tmp_path):
    pytest.importorskip("mujoco", reason="MuJoCo envs need the mujoco extra: pip install 'worldforge[mujoco]'")
    config = tiny_config(*SMALL, "data.gymnasium.env_id=Reacher-v5", "data.gymnasium.render_size=32",
                         "data.gymnasium.frameskip=2", "data.episodes=2")
    try:
        source = GymnasiumSource(config.data)
        episode = source.episode(0)
    except DatasetError as error:
        if "cannot render" in str(error):
            pytest.skip(f"MuJoCo cannot render headless here (make gl): {error}")
        raise
    source.close()
    assert episode.frames.shape == (16, 32, 32, 3) and episode.frames.std() > 5
    assert episode.actions.shape == (16, 2) and episode.actions.dtype == np.float32
    assert episode.state.shape == (16, 10)
    # Reacher's info splits its reward: the distance term and the control cost, summed over the
    # frameskip's two steps into each frame.
    assert "reward_dist" in episode.info[1] and "reward_ctrl" in episode.info[1]
    assert episode.reward[0] == 0 and (episode.reward[1:] < 0).all()
    assert source.fps == 25.0  # Reacher renders at 50 frames/s; every second step is recorded


def test_a_missing_box2d_names_the_extra_to_install(tiny_config, monkeypatch):
    for name in [m for m in sys.modules if m == "Box2D" or m.startswith(("Box2D.", "gymnasium.envs.box2d"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "Box2D", None)  # `import Box2D` raises ImportError
    with pytest.raises(DatasetError, match=r"data.gymnasium.env_id.*pip install 'worldforge\[box2d\]'"):
        GymnasiumSource(tiny_config(*CARRACING).data)


def test_a_missing_gymnasium_names_the_extra_to_install(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(DatasetError, match=r"data.source=gymnasium needs gymnasium.*'worldforge\[gymnasium\]'"):
        GymnasiumSource(tiny_config(*CARTPOLE).data)


@pytest.mark.parametrize(
    "spec, problem",
    [("no_colon", "not random, sticky_random or 'module:function'"),
     ("no_such_module_xyz:act", "cannot import module 'no_such_module_xyz'"),
     ("worldforge.data.policies:no_such_function", "has no function 'no_such_function'")],
)
def test_a_bad_policy_spec_is_a_one_line_error(tiny_config, spec, problem):
    with pytest.raises(DatasetError, match="data.gymnasium.policy") as error:
        GymnasiumSource(tiny_config(*CARTPOLE, f"data.gymnasium.policy={spec}").data)
    assert problem in str(error.value) and "\n" not in str(error.value)


def test_a_user_policy_is_called_with_env_observation_rng_and_previous_action(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("pygame", reason="CartPole renders with pygame: pip install 'worldforge[gymnasium]'")
    (tmp_path / "my_policy.py").write_text(textwrap.dedent("""
        CALLS = []

        def alternate(env, observation, rng, previous_action):
            CALLS.append((env.spec.id, len(observation), type(rng).__name__, previous_action))
            return 1 if previous_action in (None, 0) else 0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    source = GymnasiumSource(tiny_config(*CARTPOLE, "data.gymnasium.policy=my_policy:alternate").data)
    try:
        episode = source.episode(0)
    finally:
        source.close()
    import my_policy

    assert episode.actions.tolist()[:4] == [1, 0, 1, 0]
    assert my_policy.CALLS[:2] == [("CartPole-v1", 4, "Generator", None), ("CartPole-v1", 4, "Generator", 1)]


def test_an_image_observation_is_required_for_observation_frames(tiny_config):
    with pytest.raises(DatasetError, match="not \\(H, W, 3\\) uint8 images"):
        source = GymnasiumSource(tiny_config(*CARTPOLE, "data.gymnasium.frames=observation").data)
        source.episode(0)


@pytest.mark.parametrize("preset, space", [("carracing", "continuous"), ("robot", "continuous"),
                                           ("breakout", "discrete")])
def test_the_gymnasium_and_atari_presets_load(preset, space):
    config = load_config(preset)
    assert config.model.action_space == space
    assert list(config.tokenizer.frame_size) == [config.data.resolution] * 2 == [64, 64]


def test_an_action_space_other_than_discrete_or_a_flat_box_is_refused():
    import gymnasium

    from worldforge.data.sources.gym import gym_action_space

    with pytest.raises(DatasetError, match=r"data.gymnasium.env_id: 'Some-v0' has the action space MultiBinary"):
        gym_action_space(gymnasium.spaces.MultiBinary(3), "Some-v0")
    assert gym_action_space(gymnasium.spaces.Box(-1, 1, (4,)), "Some-v0").dim == 4


def test_an_unknown_environment_is_a_clear_error(tiny_config):
    with pytest.raises(DatasetError, match="data.gymnasium.env_id: cannot make 'NotAnEnv-v0'"):
        GymnasiumSource(tiny_config(*SMALL, "data.gymnasium.env_id=NotAnEnv-v0").data)


def test_policy_scale_draws_box_actions_from_the_middle_of_each_range():
    import gymnasium

    space = gymnasium.spaces.Box(low=np.array([-1.0, 0.0], np.float32), high=np.array([1.0, 1.0], np.float32))
    env, rng = SimpleNamespace(action_space=space), np.random.default_rng(0)
    half = np.stack([policies.random_policy(0.5)(env, None, rng, None) for _ in range(2000)])
    assert half[:, 0].min() >= -0.5 and half[:, 0].max() <= 0.5 and half[:, 0].max() > 0.45
    assert half[:, 1].min() >= 0.25 and half[:, 1].max() <= 0.75  # shrunk toward each range's centre
    # The full range draws exactly what it drew before the option existed: same episodes, same md5.
    full = policies.random_action(space, np.random.default_rng(1))
    assert np.array_equal(full, np.random.default_rng(1).uniform(space.low, space.high).astype(np.float32))
    discrete = SimpleNamespace(action_space=gymnasium.spaces.Discrete(4))
    assert {policies.sticky_random(0.0, 0.5)(discrete, None, rng, None) for _ in range(200)} == {0, 1, 2, 3}
