"""The end-of-run summary names the champion the run leaves behind, whichever stage produced it."""

from __future__ import annotations

from worldforge.pipelines.summary import champion_of, print_summary


def metrics(psnr: float, **extra) -> dict:
    return {
        "psnr_mean": psnr,
        "baseline_psnr_mean": 17.0,
        "psnr_per_step": [psnr + 1, psnr - 1],
        "baseline_psnr_per_step": [18.0, 16.0],
        "ssim_mean": 0.5,
        "baseline_ssim_mean": 0.6,
        "fps_e2e": 100.0,
        "device": "cpu",
        "parameters": 1000,
        **extra,
    }


def decision(outcome: str, champion_after: int, failed: list[str] | None = None) -> dict:
    return {
        "outcome": outcome,
        "promoted": outcome == "promoted",
        "champion_after": champion_after,
        "failed_checks": failed or [],
    }


def result(pretrain_decision: dict, *compressed: dict) -> dict:
    return {
        "version": "1",
        "metrics": metrics(18.0),
        "decision": pretrain_decision,
        "world": {"path": "/p/pretrain"},
        "compressed": list(compressed),
        "cached": {"pretrain_world": False},
        "mlflow_run_id": "run",
        "dataset": {"path": "/d", "md5": "abc"},
    }


def stage(name: str, version: str, psnr: float, made: dict) -> dict:
    return {
        "stage": name,
        "version": version,
        "metrics": metrics(psnr),
        "package": {"path": f"/p/{name}"},
        "decision": made,
    }


def test_the_champion_is_the_last_decisions_even_when_a_compression_stage_took_it(project, capsys):
    run = result(
        decision("promoted", 1),
        stage("prune", "2", 18.5, decision("promoted", 2)),
        stage("quantize", "3", 18.4, decision("rejected", 2, ["min_fps_ratio"])),
    )
    champion, name, own, package = champion_of(run)
    assert (champion, name, own["psnr_mean"], package) == ("2", "prune", 18.5, "/p/prune")
    print_summary(run)
    out = capsys.readouterr().out
    assert "champion: version 2 (prune)" in out
    assert "v3 quantize: rejected: min_fps_ratio" in out


def test_a_champion_from_an_earlier_run_is_named_as_such(project, capsys):
    run = result(decision("rejected", 7, ["max_psnr_drop_db"]))
    assert champion_of(run)[:2] == ("7", "")
    print_summary(run)
    assert "the champion is version 7, from an earlier run" in capsys.readouterr().out


def test_no_champion_at_all_is_said_plainly(project, capsys):
    run = result(decision("rejected", None, ["beats_copy_last_frame"]))
    assert champion_of(run)[0] is None
    print_summary(run)
    assert "no champion" in capsys.readouterr().out


def test_every_version_shows_its_agent_and_ball_error_against_copy_last(project, capsys):
    errors = {
        "agent_position_error": 0.03,
        "baseline_agent_position_error": 0.09,
        "object_position_error": 0.05,
        "baseline_object_position_error": 0.1,
    }
    pretrained = {**metrics(20.0), **errors}
    student = {**metrics(19.5), **errors, "agent_position_error": 0.1}  # worse than copy-last
    run = result(decision("promoted", 1))
    run["metrics"] = pretrained
    run["compressed"] = [
        {
            "stage": "distill",
            "version": "2",
            "metrics": student,
            "package": {"path": "/p/d"},
            "decision": decision("rejected", 1, ["agent_error_below_copy_last"]),
        }
    ]
    print_summary(run)
    out = capsys.readouterr().out
    assert "0.030 (0.33x)" in out and "0.050 (0.50x)" in out  # pretrained: agent, balls
    assert "0.100 (1.11x)" in out  # the student's agent error, above copy-last's
    assert "v2 distill: rejected: agent_error_below_copy_last" in out


def test_every_version_shows_its_steps_speed_sharpness_and_realism_and_tolerates_missing_ones(
    project, capsys
):
    teacher = {
        **metrics(20.0),
        "denoise_steps": 32,
        "fps_e2e": 4.6,
        "sharpness_mean": 0.41,
        "realism_psnr_h8": 27.3,
        "truth_realism_psnr_h8": 31.0,
        "action_sensitivity_db_mean": 1.25,
    }
    student = {"psnr_mean": 19.8, "denoise_steps": 2, "fps_e2e": 45.0}  # evaluated before realism existed
    run = result(decision("promoted", 1))
    run["metrics"] = teacher
    run["compressed"] = [stage("distill", "2", 0.0, decision("rejected", 1, ["sharpness_in_range"]))]
    run["compressed"][0]["metrics"] = student
    print_summary(run)
    out = capsys.readouterr().out
    [teacher_row] = [line for line in out.splitlines() if "pretrain" in line and "│ 1 " in line]
    assert [cell.strip() for cell in teacher_row.split("│")[3:10]] == [
        "32",
        "20.00",
        "-",
        "+3.00",
        "0.41",
        "3.7",
        "+1.25",
    ]
    [student_row] = [line for line in out.splitlines() if "distill" in line and "│ 2 " in line]
    cells = [cell.strip() for cell in student_row.split("│")[1:-1]]
    assert cells == ["distill", "2", "2", "19.80", "-", "-", "-", "-", "-", "-", "-", "45.0", "-"]
    assert "sharpness 0.41 (1 = as sharp as the truth); realism gap at step 8 3.7 dB" in out
