"""The trainer's components, one job each: DeepSpeed config, schedule, data position, EMA, throughput."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from worldforge.training.config import TrainConfig
from worldforge.training.deepspeed_config import (
    DeepSpeedConfigError,
    build_deepspeed_config,
    known_configs,
    offloads_optimizer,
    zero_stage,
)
from worldforge.training.ema import ShardedEMA
from worldforge.training.schedule import WarmupCosine
from worldforge.training.stream import BatchStream
from worldforge.training.throughput import Throughput


def test_infra_holds_a_config_per_zero_stage_and_offload_variants():
    assert {"zero0", "zero1", "zero2", "zero3", "zero2-offload", "zero3-offload"} <= set(known_configs())
    for stage in range(4):
        config = build_deepspeed_config(
            TrainConfig(deepspeed=f"zero{stage}"), lr=1e-3, world_size=1, precision="fp32"
        )
        assert zero_stage(config) == stage and not offloads_optimizer(config)
    offload = build_deepspeed_config(
        TrainConfig(deepspeed="zero3-offload"), lr=1e-3, world_size=1, precision="bf16"
    )
    assert (
        offloads_optimizer(offload) and "torch_adam" not in offload["optimizer"]["params"]
    )  # DeepSpeed's CPU Adam


def test_batch_optimizer_clipping_and_precision_come_from_the_train_section():
    train = TrainConfig(batch_size=3, grad_accumulation=4, grad_clip=0.5, weight_decay=0.1, deepspeed="zero2")
    config = build_deepspeed_config(train, lr=2e-4, world_size=8, precision="bf16")
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 3 * 4 * 8
    assert config["gradient_clipping"] == 0.5 and config["bf16"] == {"enabled": True}
    assert (
        config["optimizer"]["params"]["lr"] == 2e-4 and config["optimizer"]["params"]["weight_decay"] == 0.1
    )


def test_a_deepspeed_json_may_not_set_what_the_train_section_owns(tmp_path: Path):
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 4, "bf16": "auto"})
    )
    with pytest.raises(
        DeepSpeedConfigError, match=r"mine.json: sets train_micro_batch_size_per_gpu.*train.batch_size"
    ):
        build_deepspeed_config(TrainConfig(deepspeed=str(path)), lr=1e-3, world_size=1, precision="fp32")
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "bf16": "auto"}))  # "auto" is fine
    assert (
        zero_stage(
            build_deepspeed_config(TrainConfig(deepspeed=str(path)), lr=1e-3, world_size=1, precision="fp32")
        )
        == 2
    )
    with pytest.raises(DeepSpeedConfigError, match="zero7.*known: .*zero3"):
        build_deepspeed_config(TrainConfig(deepspeed="zero7"), lr=1e-3, world_size=1, precision="fp32")


def test_warmup_starts_above_zero_and_the_cosine_ends_at_the_floor():
    schedule = WarmupCosine(warmup=4, total=20, min_ratio=0.1)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # the first step already learns
    assert schedule(4) < 1.0 and schedule(19) == pytest.approx(0.1) and schedule(50) == pytest.approx(0.1)
    values = [schedule(s) for s in range(3, 20)]
    assert values == sorted(values, reverse=True)


class Epochs:
    """A loader whose epoch e yields batches (e, 0), (e, 1), ... (e, n - 1)."""

    def __init__(self, batches_per_epoch: int):
        self.n, self.epoch = batches_per_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter([{"id": torch.tensor([self.epoch, i])} for i in range(self.n)])


def test_batch_stream_resumes_at_the_batch_after_the_last_one_drawn():
    stream = BatchStream(Epochs(3))
    seen = [next(stream)["id"].tolist() for _ in range(5)]
    assert seen == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]]
    resumed = BatchStream(Epochs(3))
    resumed.restore(stream.state())
    assert [next(resumed)["id"].tolist() for _ in range(2)] == [[1, 2], [2, 0]]
    with pytest.raises(ValueError, match="epoch has only 3 batches"):
        broken = BatchStream(Epochs(3), "the split")
        broken.restore({"epoch": 0, "batch": 5})
        next(broken)


def test_ema_shards_gather_to_the_average_of_whole_parameters():
    layer = torch.nn.Linear(3, 5)  # 15 + 5 weights: shards of uneven parameters are padded
    ema = ShardedEMA(layer, decay=0.5)
    start = {name: p.detach().clone() for name, p in layer.named_parameters()}
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    ema.update()  # warm-up decay min(0.5, 1/10) = 0.1: 10% old, 90% new
    assert ema.current_decay == pytest.approx(2 / 11)
    for name, value in start.items():
        torch.testing.assert_close(ema.full(name), value + 0.9)
    restored = ShardedEMA(layer, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    torch.testing.assert_close(restored.full("weight"), ema.full("weight"))


def test_throughput_reports_rates_over_the_clock_and_mfu_against_the_peak():
    meter = Throughput(samples_per_step=8, tokens_per_sample=64, world_size=2, peak_flops=1e9)
    meter.flops_per_sample = 1e6
    meter.seconds = 2.0
    meter.steps = 4
    rates = meter.report()
    assert rates["samples_per_s"] == 16 and rates["tokens_per_s"] == 16 * 64
    assert rates["tflops"] == pytest.approx(16e6 / 1e12)
    assert rates["mfu"] == pytest.approx(16e6 / (2 * 1e9))
    assert math.isclose(Throughput(8, 64, 1, None).report()["samples_per_s"], 0.0)


@pytest.mark.parametrize("preset", ["quickstart", "h100-base"])
def test_presets_describe_a_trainable_run(preset: str):
    from worldforge.config import load_config
    from worldforge.models.world_model import WorldModel

    config = load_config(preset)
    with torch.device("meta"):
        model = WorldModel(config.tokenizer, config.model, config.objective, config.sampler)
    r = model.frames_per_latent
    assert (config.data.clip_frames - 1) % r == 0  # clips are whole latent frames
    assert model.tokenizer.latent_frames(config.data.clip_frames) <= model.model_cfg.context_window
    assert config.data.resolution == config.tokenizer.frame_size[0]
    assert config.eval.context_frames + config.eval.horizon <= config.data.episode_frames
    build_deepspeed_config(config.train, lr=config.train.lr, world_size=1, precision="fp32")


def test_checkpoint_files_load_without_unpickling_and_restore_every_generator(tmp_path):
    import random

    import numpy as np

    from worldforge.training.checkpoint import CheckpointError, load_tensors, restore_rng, rng_state

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    torch.save({"rng": rng_state(), "step": 3}, tmp_path / "trainer_rank0.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng(load_tensors(tmp_path / "trainer_rank0.pt")["rng"])  # weights_only: no code runs
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected

    torch.save({"rng": np.random.get_state()}, tmp_path / "pickled.pt")  # a numpy object: refused
    with pytest.raises(CheckpointError, match="pickled.pt"):
        load_tensors(tmp_path / "pickled.pt")


def test_a_world_of_one_on_cpu_starts_deepspeed_without_building_its_shared_memory_op(tmp_path: Path):
    """The CPU backend's shared-memory all-reduce op is a ~40 s JIT build on a fresh machine; a
    single process has nothing to reduce, so it starts without it (a fresh extensions folder stays
    empty) and trains on gloo as before."""
    import subprocess
    import sys

    script = (
        "from worldforge.training.launch import setup_distributed\n"
        "import deepspeed.comm.comm as comm\n"
        "info, _ = setup_distributed('cpu')\n"
        "assert info.world_size == 1 and info.backend == 'gloo', info\n"
        "assert comm.cdb.shm_comm_op is None\n"
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions"), "DS_ACCELERATOR": "cpu"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    extensions = tmp_path / "extensions"
    assert not extensions.exists() or not any(extensions.rglob("*.so"))
