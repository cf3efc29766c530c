"""Structured pruning: importance scores, plans, surgery and the pruned package.

The tiny DiT here: width D = 128, 4 blocks of 4 heads (head_dim 32) and 512 MLP channels, on
32x32 frames with the patch-8 tokenizer (16 tokens per frame). Its weights are random: a fresh
DiT has shut AdaLN gates, which would make every unit score 0."""

from __future__ import annotations

import json

import pytest
import torch

from worldforge.compression.prune.config import PruneConfig, RecoveryConfig, parse_target
from worldforge.compression.prune.importance import ImportanceScores, importance_scores
from worldforge.compression.prune.plan import BlockPlan, PrunePlan, PrunePlanError, plan_pruning
from worldforge.compression.prune.recovery import RecoveryObjective
from worldforge.compression.prune.stage import PRUNING_FILE, model_cost, prune_model, prune_package
from worldforge.compression.prune.surgery import apply_plan
from worldforge.config import list_presets, load_config
from worldforge.models.config import ModelConfig, ObjectiveConfig, TokenizerConfig
from worldforge.models.flops import count_parameters
from worldforge.models.streaming import rollout
from worldforge.models.world_model import WorldModel, package_config
from worldforge.packages import load_package, package_md5, save_package

WIDTH, HEAD_DIM, HEADS, HIDDEN, DEPTH = 128, 32, 4, 512, 4
HEAD_PARAMS = 3 * HEAD_DIM * (WIDTH + 1) + WIDTH * HEAD_DIM  # qkv rows + biases, proj columns
CHANNEL_PARAMS = (WIDTH + 1) + WIDTH  # fc1 row + bias, fc2 column


def clips(batch: int = 4, frames: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.rand(batch, frames, 3, 32, 32, generator=generator) * 2 - 1,  # (B, T, C, H, W)
        "actions": torch.randint(0, 6, (batch, frames), generator=generator),  # (B, T)
    }


def dit_output(model: WorldModel, seed: int = 1) -> torch.Tensor:
    batch = clips(2, 3, seed)
    with torch.no_grad():
        latents = model.tokenizer.encode(batch["frames"])  # (B, T, c, h, w)
        levels = torch.full(latents.shape[:2], 0.5)
        return model.dit(latents, levels, model.action_condition(batch["actions"], latents.shape[1]))


def prune(model: WorldModel, method: str = "taylor", **fields) -> tuple[WorldModel, PrunePlan]:
    config = PruneConfig(method=method, calibration_clips=4, **fields)
    result = prune_model(model, [clips()], config)
    return result.model, result.plan


def plan_of(record: dict) -> PrunePlan:
    """The plan a package's pruning.json records."""
    plan = record["plan"]
    return PrunePlan([BlockPlan(**b) for b in plan["blocks"]], plan["source_heads"], plan["source_channels"])


def test_pruned_model_has_exactly_the_expected_parameter_count(make_world_model):
    model = make_world_model()
    pruned, plan = prune(model, target={"depth": 3, "heads": 2, "mlp_hidden": 256})

    block = count_parameters(model.dit.blocks[0])
    removed = block + 3 * (2 * HEAD_PARAMS + 256 * CHANNEL_PARAMS)
    assert count_parameters(pruned.dit) == count_parameters(model.dit) - removed
    assert pruned.model_cfg.depth == 3
    assert pruned.model_cfg.heads_per_block == [2, 2, 2]
    assert pruned.model_cfg.mlp_hidden_per_block == [256, 256, 256]
    assert [len(b.attn.proj.weight[0]) for b in pruned.dit.blocks] == [2 * HEAD_DIM] * 3
    assert plan.model_fields() == {"depth": 3, "heads_per_block": [2] * 3, "mlp_hidden_per_block": [256] * 3}


def test_pruned_model_rolls_out_with_the_kv_cache_as_without(make_world_model):
    pruned, _ = prune(make_world_model(), target={"params": 0.6}, units=["heads", "mlp", "blocks"])
    batch = clips(2, 6, seed=3)
    context, actions = batch["frames"][:, :2], batch["actions"]

    cached = rollout(pruned, context, actions, horizon=3, generator=torch.Generator().manual_seed(0))
    recomputed = rollout(
        pruned, context, actions, horizon=3, use_cache=False, generator=torch.Generator().manual_seed(0)
    )

    assert cached.frames.shape == (2, 3, 3, 32, 32)
    assert cached.peak_cache_frames > 0
    torch.testing.assert_close(cached.frames, recomputed.frames, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("measure, keep", [("params", 0.7), ("params", 0.5), ("flops", 0.6)])
def test_budget_keeps_at_most_the_target_and_not_much_less(measure, keep, make_world_model):
    model = make_world_model()
    pruned, _ = prune(model, target={measure: keep}, units=["heads", "mlp", "blocks"])

    key = "parameters_dit" if measure == "params" else "flops_per_frame_dit"
    kept = model_cost(pruned)[key] / model_cost(model)[key]
    # within one head of the target: the smallest unit the greedy cannot give back once over
    assert keep - 0.03 < kept <= keep


def test_a_budget_does_not_drop_a_block_that_would_overshoot_it():
    """A 2-block DiT at params=0.7: dropping a block keeps about half (the old plan kept 59%);
    the plan cuts width instead and lands within prune.tolerance (0.02) under the target."""
    torch.manual_seed(0)
    model = WorldModel.from_config(
        TokenizerConfig(frame_size=(32, 32)),
        ModelConfig(preset="tiny", depth=2, num_actions=6),
        ObjectiveConfig(),
    ).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.05)
    pruned, plan = prune(model, target={"params": 0.7}, units=["heads", "mlp", "blocks"])
    kept = model_cost(pruned)["parameters_dit"] / model_cost(model)["parameters_dit"]
    assert len(plan.blocks) == 2
    assert 0.68 <= kept <= 0.70


def test_pruning_nothing_is_the_identity(make_world_model):
    model = make_world_model()
    for target in ({"params": 1.0}, {"depth": DEPTH, "heads": HEADS, "mlp_hidden": HIDDEN}):
        pruned, plan = prune(model, target=target)

        assert plan.is_identity
        assert package_config(pruned) == package_config(model)
        assert torch.equal(dit_output(pruned), dit_output(model))


def test_removing_units_that_write_nothing_leaves_the_output_unchanged(make_world_model):
    """Head 2 of every block and 64 channels per block have zero output weights: cutting exactly
    them must not change what the model computes (the surgery slices the right rows/columns)."""
    model = make_world_model()
    dead = torch.arange(0, HIDDEN, 8)  # 64 channels spread over the width
    with torch.no_grad():
        for block in model.dit.blocks:
            block.attn.proj.weight[:, 2 * HEAD_DIM : 3 * HEAD_DIM] = 0
            block.mlp.fc2.weight[:, dead] = 0

    pruned, plan = prune(model, method="activation", target={"heads": 3, "mlp_hidden": HIDDEN - 64})

    assert all(b.heads == [0, 1, 3] for b in plan.blocks)
    assert all(set(b.channels).isdisjoint(dead.tolist()) for b in plan.blocks)
    torch.testing.assert_close(dit_output(pruned), dit_output(model), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["activation", "taylor"])
def test_importance_ranks_a_zeroed_head_least_important(method, make_world_model):
    model = make_world_model()
    with torch.no_grad():
        model.dit.blocks[1].attn.proj.weight[:, 2 * HEAD_DIM : 3 * HEAD_DIM] = (
            0  # block 1, head 2 writes nothing
        )

    scores = importance_scores(model, [clips()], method, clips=4)

    heads = torch.stack(scores.heads)  # (depth, heads)
    assert heads[1, 2] == 0
    assert (heads.flatten() > 0).sum() == DEPTH * HEADS - 1
    assert divmod(int(heads.argmin()), HEADS) == (1, 2)
    assert [s.shape for s in scores.channels] == [(HIDDEN,)] * DEPTH
    assert scores.blocks.shape == (DEPTH,) and bool((scores.blocks > 0).all())


def test_scores_are_deterministic_and_use_only_the_requested_clips(make_world_model):
    model = make_world_model()
    batches = [clips(seed=0), clips(seed=1)]
    first = importance_scores(model, batches, "taylor", clips=6, seed=0)
    again = importance_scores(model, batches, "taylor", clips=6, seed=0)
    assert first.clips == 6
    assert torch.equal(torch.stack(first.heads), torch.stack(again.heads))


def test_an_unreachable_budget_names_the_target_and_what_is_reachable(make_world_model):
    with pytest.raises(
        PrunePlanError, match=r"prune.target params=0.05: removing heads reaches at best 0\.\d+"
    ):
        prune(make_world_model(), target={"params": 0.05}, units=["heads"])
    with pytest.raises(PrunePlanError, match="prune.target heads=5: block 0 has only 4"):
        prune(make_world_model(), target={"heads": 5})


def test_a_plan_for_another_architecture_is_refused(make_world_model):
    plan = PrunePlan([BlockPlan(0, [0], [0])], source_heads=[4], source_channels=[512])
    with pytest.raises(ValueError, match="another architecture"):
        apply_plan(make_world_model(), plan)


def test_target_parsing_and_validation_say_what_was_expected():
    assert parse_target("depth=3, params=0.6") == {"depth": 3.0, "params": 0.6}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_target("params")
    for target, message in (
        ({"params": 1.5}, r"fraction kept must be in \(0, 1\]"),
        ({"params": 0.5, "flops": 0.5}, "params or flops, not both"),
        ({"width": 64}, "unknown target key"),
        ({"heads": 2.5}, "whole number"),
    ):
        with pytest.raises(ValueError, match=message):
            PruneConfig(target=target)


def dataset_config(*overrides: str):
    """The `tiny` preset (the root conftest's `tiny_dataset` is its dataset), with a recovery that
    trains in seconds on the CPU and a short evaluation."""
    from worldforge.config import load_config

    return load_config(
        "tiny",
        [
            "data.loader.batch_size=4",
            "train.deepspeed=zero0",
            "train.warmup_steps=1",
            "train.ema_decay=0",
            "eval.context_frames=2",
            "eval.horizon=2",
            *overrides,
        ],
    )


def test_pruned_package_round_trips_with_its_config_and_lineage(
    project, tiny_dataset, tmp_path, make_world_model
):
    model = make_world_model()
    source = save_package(tmp_path / "source", package_config(model), model, lineage={"stage": "pretrain"})
    prune_cfg = PruneConfig(target={"params": 0.7}, calibration_clips=8)

    out = prune_package(source, dataset_config(), prune_cfg, tiny_dataset, tmp_path / "pruned", recover=False)

    package = load_package(out)
    record = json.loads((out / PRUNING_FILE).read_text())
    plan = plan_of(record)
    assert package.config["model"]["heads_per_block"] == plan.model_fields()["heads_per_block"]
    assert package.config["model"]["mlp_hidden_per_block"] == plan.model_fields()["mlp_hidden_per_block"]
    assert package.lineage.stage == "prune"
    assert package.lineage.parent == str(source.resolve())
    assert package.lineage.parent_md5 and package.lineage.dataset_md5 is None  # dataset not DVC-tracked
    assert record["scores"]["clips"] == 8
    loaded = package.build()
    assert (
        package.metrics["parameters_dit"] == count_parameters(loaded.dit) <= 0.7 * count_parameters(model.dit)
    )
    assert torch.equal(dit_output(loaded), dit_output(apply_plan(model, plan)))


def test_cli_prunes_a_package_and_records_a_stage_run(
    tracked_project, tiny_dataset, tmp_path, assert_registered_with_decision, make_world_model
):
    """`worldforge compress prune` (registered by the compress group; a one-command app here).
    `tracked_project` (conftest.py): a fresh project whose MLflow store is already migrated."""
    import mlflow
    import typer
    import yaml
    from typer.testing import CliRunner

    from worldforge.cli.prune import prune_command
    from worldforge.core.tracking import configure

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("prune")(prune_command)
    model = make_world_model()
    source = save_package(tmp_path / "source", package_config(model), model)
    preset = tmp_path / "tiny.yaml"
    preset.write_text(
        yaml.safe_dump(
            {"data": dataset_config().data.model_dump(mode="json"), "prune": {"calibration_clips": 4}}
        )
    )
    common = ["prune", str(preset), "--model", str(source), "--dataset", str(tiny_dataset), "--no-recover"]

    bad = CliRunner().invoke(app, [*common, "--target", "params=1.5", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "--target" in bad.output and "(0, 1]" in bad.output
    assert not (tmp_path / "bad").exists()

    result = CliRunner().invoke(app, [*common, "--target", "params=0.7", "--out", str(tmp_path / "pruned")])
    assert result.exit_code == 0, result.output
    assert f"pruned package: {tmp_path / 'pruned'}" in result.output
    package = load_package(tmp_path / "pruned")
    assert count_parameters(package.build().dit) <= 0.7 * count_parameters(model.dit)
    configure(tracked_project)
    run = mlflow.get_run(package.lineage.mlflow_run_id)
    assert run.data.tags["stage"] == "prune"
    assert run.data.tags["parent.model"] == str(source.resolve())
    assert run.data.tags["package.dvc_md5"] == "untracked"  # --out outside the project root
    assert run.data.metrics["kept.parameters_dit"] <= 0.7
    assert run.data.params["prune.method"] == "taylor"
    assert run.data.params["prune.calibration_clips"] == "4"
    assert package.lineage.params["plan"]["kept"]["parameters_dit"] <= 0.7
    # like distill and quantize, the command ends with an evaluated, registered version and its gate decision
    assert_registered_with_decision(result.output, preset, "prune", package_md5(tmp_path / "pruned"))


def test_recovery_loss_has_no_distillation_term_for_an_identical_student(make_world_model):
    teacher = make_world_model()
    student = make_world_model()  # same seed: the same weights
    objective = RecoveryObjective(student, teacher, RecoveryConfig(task_weight=1.0, distill_weight=1.0))

    loss, logs = objective(clips())
    loss.backward()

    assert logs["distill_loss"] == 0
    assert logs["task_loss"] > 0 and torch.isclose(loss, logs["task_loss"])
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.dit.parameters())


def test_recovery_fine_tunes_the_pruned_model_on_the_shared_trainer(
    project, tiny_dataset, tmp_path, make_world_model
):
    model = make_world_model()
    source = save_package(tmp_path / "source", package_config(model), model)
    prune_cfg = PruneConfig(
        target={"params": 0.7}, calibration_clips=4, recovery=RecoveryConfig(steps=3, lr=1e-3)
    )

    out = prune_package(
        source, dataset_config(), prune_cfg, tiny_dataset, project.packages / "pruned", recover=True
    )

    package = load_package(out)
    record = json.loads((out / PRUNING_FILE).read_text())
    unrecovered = apply_plan(model, plan_of(record))
    recovered = package.build()
    assert record["recovery"]["steps"] == 3 and record["recovery"]["stopped"] == "steps"
    assert record["recovery"]["loss_last"] > 0
    assert "psnr_mean" in " ".join(record["recovery"]["validation"])
    assert {k: v for k, v in package.config.items() if k != "extras"} == package_config(unrecovered)
    assert not torch.equal(recovered.dit.blocks[0].mlp.fc1.weight, unrecovered.dit.blocks[0].mlp.fc1.weight)


@pytest.mark.parametrize("preset", list_presets())
def test_every_presets_own_prune_target_fits_its_own_model(preset):
    """`worldforge compress prune --model PACKAGE PRESET` with the preset's defaults: its model,
    built untrained (on the meta device: only shapes and costs matter), can be planned down to the
    preset's `prune.target` (scores are random: reachability does not depend on which units go)."""
    config = load_config(preset)
    with torch.device("meta"):
        model = WorldModel.from_config(config.tokenizer, config.model, config.objective, config.sampler)
    generator = torch.Generator().manual_seed(0)
    blocks = model.dit.blocks
    scores = ImportanceScores(
        method="random",
        heads=[torch.rand(b.attn.heads, generator=generator) for b in blocks],
        channels=[torch.rand(b.mlp.fc1.out_features, generator=generator) for b in blocks],
        blocks=torch.rand(len(blocks), generator=generator),
        clips=0,
    )
    plan = plan_pruning(model, scores, config.prune)  # raises PrunePlanError when out of reach
    assert plan.blocks and not plan.is_identity, preset
