"""What a training run prints for a person: plain lines off a terminal, a bar with log records
above it on one, and a short validation line."""

from __future__ import annotations

import io
import logging
import sys
import time

from worldforge.training.progress import ProgressLine, validation_line


def test_off_a_terminal_a_plain_line_every_n_steps_with_loss_rate_and_eta():
    out = io.StringIO()  # not a terminal
    with ProgressLine(
        "pretrain_world", 250, enabled=True, stream=out, every_steps=100, every_seconds=3600
    ) as line:
        line.advance(0)
        for step in range(1, 251):
            line.update(step, loss=1.0 / step, samples_per_step=8)
    lines = out.getvalue().splitlines()
    assert [entry.split()[2] for entry in lines] == ["100/250", "200/250", "250/250"]
    assert lines[0].startswith("pretrain_world step 100/250 loss 0.0100 ")
    assert "samples/s ETA" in lines[0] and lines[-1].endswith("ETA 0:00")


def test_off_a_terminal_a_slow_run_still_prints_every_interval():
    out = io.StringIO()
    with ProgressLine(
        "distill", 1000, enabled=True, stream=out, every_steps=1000, every_seconds=0.05
    ) as line:
        line.advance(0)
        line.update(1, 0.5, 8)
        time.sleep(0.06)
        line.update(2, 0.4, 8)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert "step 2/1000 loss 0.4000" in out.getvalue()


def test_a_disabled_line_prints_nothing():
    out = io.StringIO()
    with ProgressLine("x", 10, enabled=False, stream=out) as line:
        for step in range(1, 11):
            line.update(step, 0.1, 1)
        line.print("validation")
    assert out.getvalue() == ""


def test_on_a_terminal_log_records_print_on_their_own_lines_above_the_bar(monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(sys.stderr)  # as logging.basicConfig / Prefect's console set it up
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("worldforge")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with ProgressLine("pretrain_world", 10, enabled=True, stream=sys.stderr, terminal=True) as line:
            line.advance(0)
            line.update(1, 0.5, 8)
            logging.getLogger("worldforge.training.trainer").info("checkpoint step 1")
            line.print("validation @1: PSNR 20.00 dB")
            line.update(2, 0.4, 8)
        assert handler.stream is terminal  # given back when the bar ends
    finally:
        logger.removeHandler(handler)
    lines = terminal.getvalue().splitlines()
    assert "INFO checkpoint step 1" in lines  # a line of its own, not glued to the bar
    assert "validation @1: PSNR 20.00 dB" in lines
    assert any("pretrain_world step" in entry and "2/10" in entry for entry in lines)  # the bar's last state


def test_the_validation_line_reads_psnr_against_copy_last_and_the_error_ratios():
    metrics = {
        "val/psnr_mean": 21.3,
        "val/baseline_psnr_mean": 19.1,
        "val/ssim_mean": 0.741,
        "val/agent_position_error": 0.028,
        "val/agent_error_ratio": 0.4,
        "val/object_position_error": 0.09,
        "val/object_error_ratio": 0.95,
    }
    assert validation_line(200, metrics) == (
        "validation @200: PSNR 21.30 dB (copy-last 19.10) SSIM 0.741 agent 0.028 (0.40x) balls 0.090 (0.95x)"
    )


def test_the_validation_line_shows_action_sensitivity_where_no_state_gives_errors():
    metrics = {
        "val/psnr_mean": 24.0,
        "val/baseline_psnr_mean": 21.5,
        "val/ssim_mean": 0.8,
        "val/action_sensitivity_db_mean": 1.234,
    }
    assert validation_line(400, metrics) == (
        "validation @400: PSNR 24.00 dB (copy-last 21.50) SSIM 0.800 actions +1.23 dB"
    )
