"""The report's plots as a benchmark calls them: several models on one figure."""

from PIL import Image

from worldforge.evaluation import report


def metrics(psnr: list, sharpness: list, prefix: str = "") -> dict:
    """A metrics dict as `evaluate.measure` returns it, reduced to two curves and copy-last's."""
    return {
        f"{prefix}psnr_per_step": psnr,
        f"{prefix}baseline_psnr_per_step": [18.0] * len(psnr),
        f"{prefix}sharpness_per_step": sharpness,
        f"{prefix}baseline_sharpness_per_step": [1.0] * len(sharpness),
    }


def test_plot_models_draws_a_panel_per_metric_the_models_have(tmp_path):
    models = {
        "teacher": metrics([24.0, 22.0, 21.0], [0.9, 0.85, 0.8]),
        "student, 4 steps": metrics([23.5, None, 20.0], [0.7, 0.6, 0.5]),  # None: a step without a value
        "student, 1 step": {"psnr_per_step": [25.0, 23.0, 21.5]},  # no sharpness recorded: no line there
    }
    path = report.plot_models(tmp_path / "students.png", models, "teacher and students")
    with Image.open(path) as image:
        assert (
            image.format == "PNG" and image.width == 2 * 450
        )  # PSNR and sharpness; no state, no error panels
    with Image.open(report.plot_models(tmp_path / "psnr.png", models, "PSNR", metrics=("psnr",))) as image:
        assert image.width == 450


def test_plot_models_draws_the_long_rollout_with_its_horizons_marked(tmp_path):
    long = {"model": metrics([20.0] * 8, [1.0] * 8, prefix="long_")}
    path = report.plot_models(tmp_path / "long.png", long, "8 frames", prefix="long_", marks=[4, 8])
    with Image.open(path) as image:
        assert image.width == 2 * 450
