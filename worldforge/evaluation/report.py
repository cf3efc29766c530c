"""What an evaluation leaves behind for people: a JSON report, PSNR-, position-error-, sharpness-
and realism-vs-horizon plots (`plot_models`: several models on one figure, a panel per metric, for
the long rollout and for benchmarks comparing a teacher with its students), side-by-side videos
(ground truth | prediction [| reference]) as GIF, and MP4 when PyAV is installed, and the table
cell format that report.html (`page.py`) and the pipeline summary share."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

VIDEO_MIN_HEIGHT = 128  # small frames are scaled up (nearest) so a 32 px rollout is watchable
SEPARATOR = 255  # a white column between panels
GENERATED_BORDER = (220, 40, 40)  # generated frames get a red border, context frames none


def format_cell(value: Any, fmt: str) -> str:
    """`fmt` of a number; "-" for one not recorded (None, or not a number) or not computable (NaN)."""
    return fmt.format(value) if isinstance(value, (int, float)) and not math.isnan(value) else "-"


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite, non-bool scalars of a metrics dict (what MLflow and comparisons take)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def compare(model: dict[str, Any], reference: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """For each scalar metric both have: model, reference, delta (model - reference) and ratio
    (model / reference, None when the reference is 0)."""
    mine, theirs = scalar_metrics(model), scalar_metrics(reference)
    table = {}
    for key in sorted(set(mine) & set(theirs)):
        a, b = mine[key], theirs[key]
        table[key] = {"model": a, "reference": b, "delta": a - b, "ratio": a / b if b else None}
    return table


def ratio_cell(value: float | None, reference: float | None, fmt: str = "{:.4f}") -> str:
    """ "0.0212 (1.05x)": a value and its ratio to a reference (a parent, copy-last-frame); "-"
    when the value is missing."""
    if value is None or not math.isfinite(value):
        return "-"
    if reference is None or not math.isfinite(reference) or reference == 0:
        return fmt.format(value)
    return f"{fmt.format(value)} ({value / reference:.2f}x)"


def without_nan(value: Any) -> Any:
    """`value` with every non-finite float (NaN: e.g. no agent found at a step) replaced by None,
    in nested dicts and lists: what standard JSON, Prefect results and MLflow tags can carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def write_json(path: Path, report: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(without_nan(report), indent=2, sort_keys=True, allow_nan=False))
    return path


def plot_curves(
    path: Path,
    curves: dict[str, list[float]],
    title: str,
    ylabel: str = "PSNR (dB)",
    steps: list[int] | None = None,
    xlabel: str = "horizon step (generated frame)",
) -> Path:
    """A metric against horizon step (1-based; or against `steps`), one line per label; labels
    naming a baseline or a detector floor are dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for label, values in curves.items():
        x = np.asarray(steps) if steps is not None else np.arange(1, len(values) + 1)
        style = "--" if "baseline" in label or "floor" in label else "-"
        axis.plot(x, values, style, marker="o", markersize=3, label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


# (metric, axis label) of the `plot_models` panels: `{metric}_per_step` curves, in this order
PANELS = (
    ("psnr", "PSNR (dB)"),
    ("agent_position_error", "agent position error (frame sides)"),
    ("object_position_error", "ball position error (frame sides)"),
    ("sharpness", "sharpness (1 = as sharp as the truth)"),
    ("realism_psnr", "realism: PSNR to the simulator's redraw (dB)"),
    ("object_survival", "balls still compact (fraction)"),
)


def plot_models(
    path: Path,
    models: dict[str, dict[str, Any]],
    title: str,
    prefix: str = "",
    metrics: tuple[str, ...] = tuple(key for key, _ in PANELS),
    marks: list[int] | None = None,
) -> Path:
    """Several models against horizon step on one figure: a panel per metric of `metrics` (of
    `PANELS`) that the first model has, one line per model (name -> its metrics dict, e.g. a
    teacher and its students from `evaluate.measure` on the same clips), copy-last-frame (the first
    model's `baseline_` curve: the same clips for all) dashed, the detectors' floor on the position
    panels, the truth's 1.0 on the sharpness panel and the recorded frames' own curve on the
    realism and survival panels dotted. `prefix="long_"` draws the long
    rollout's curves; `marks`: steps given a vertical line (the scored long horizons)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    first = next(iter(models.values()))
    panels = [
        (key, label) for key, label in PANELS if key in metrics and first.get(f"{prefix}{key}_per_step")
    ]
    rows = -(-(len(models) + 2) // 5)  # legend rows below the panels: models, copy-last, reference line
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 4 + 0.25 * rows), dpi=100, squeeze=False
    )
    colours = plt.get_cmap("tab20" if len(models) > 10 else "tab10")
    for axis, (key, label) in zip(axes[0], panels):
        curves = {name: values.get(f"{prefix}{key}_per_step") for name, values in models.items()}
        curves["copy last frame (baseline)"] = first.get(f"{prefix}baseline_{key}_per_step")
        for index, (name, values) in enumerate(curves.items()):
            if values:  # a model without this curve draws no line; None steps (NaN) are gaps
                line = np.asarray(values, dtype=np.float64)
                style = (
                    {"linestyle": "--", "color": "black"} if "baseline" in name else {"color": colours(index)}
                )
                axis.plot(np.arange(1, len(line) + 1), line, marker="o", markersize=2, label=name, **style)
        recorded = first.get(f"{prefix}truth_{key}_per_step")
        if recorded:
            line = np.asarray(recorded, dtype=np.float64)
            axis.plot(np.arange(1, len(line) + 1), line, color="grey", linestyle=":", label="recorded frames")
        level = {"sharpness": 1.0}.get(key, first.get(f"{key}_ground_truth"))
        if level is not None:
            axis.axhline(
                level,
                color="grey",
                linestyle=":",
                label="ground truth" if key == "sharpness" else "detector floor",
            )
        for step in marks or []:
            axis.axvline(step, color="lightgrey", linewidth=0.8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("horizon step (generated frame)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    legend: dict[str, object] = {}  # one legend for every panel, below them: the lines stay visible
    for axis in axes[0]:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    figure.legend(legend.values(), legend.keys(), loc="lower center", ncol=5, fontsize="small", frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(T, C, H, W) in [-1, 1] -> (T, H, W, 3) uint8 (grey frames repeated to RGB)."""
    array = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def side_by_side(panels: list[torch.Tensor], context_frames: int) -> np.ndarray:
    """Panels of (T, C, H, W) frames in [-1, 1], each the context then the rollout ->
    (T, H', W', 3) uint8 video, panels left to right, generated frames of every panel but the
    first (the ground truth) framed in red."""
    scale = max(1, math.ceil(VIDEO_MIN_HEIGHT / panels[0].shape[-2]))
    columns = []
    for index, panel in enumerate(panels):
        video = to_uint8(panel).repeat(scale, axis=1).repeat(scale, axis=2)  # (T, H*s, W*s, 3)
        if index > 0:
            video[context_frames:, :2] = video[context_frames:, -2:] = GENERATED_BORDER
            video[context_frames:, :, :2] = video[context_frames:, :, -2:] = GENERATED_BORDER
        columns.append(video)
        if index < len(panels) - 1:
            columns.append(np.full((*video.shape[:2], 4, 3), SEPARATOR, dtype=np.uint8))
    return np.concatenate(columns, axis=2)


def write_gif(path: Path, video: np.ndarray, fps: float) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in video]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def write_mp4(path: Path, video: np.ndarray, fps: float) -> Path | None:
    """H.264 MP4 through PyAV; None when PyAV is not installed (GIFs are always written)."""
    try:
        import av
    except ImportError:
        return None
    height, width = video.shape[1] + video.shape[1] % 2, video.shape[2] + video.shape[2] % 2  # yuv420p: even
    padded = np.zeros((len(video), height, width, 3), dtype=np.uint8)
    padded[:, : video.shape[1], : video.shape[2]] = video
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "libx264" if "libx264" in av.codecs_available else "mpeg4", rate=round(fps)
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in padded:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_videos(
    folder: Path,
    clips,
    predictions: dict[str, torch.Tensor],
    count: int,
) -> list[Path]:
    """For the first `count` clips: ground truth | each prediction (label -> (N, horizon, C, H, W)),
    context frames first. Returns the files written (GIF, and MP4 with PyAV)."""
    written = []
    for index in range(min(count, len(clips.episodes))):
        context = clips.context[index]
        panels = [torch.cat([context, clips.target[index]])]
        panels += [torch.cat([context, frames[index]]) for frames in predictions.values()]
        video = side_by_side(panels, context_frames=len(context))
        name = f"episode-{clips.episodes[index]:06d}_{'-'.join(['truth', *predictions])}"
        written.append(write_gif(folder / f"{name}.gif", video, clips.fps))
        mp4 = write_mp4(folder / f"{name}.mp4", video, clips.fps)
        if mp4 is not None:
            written.append(mp4)
    return written
