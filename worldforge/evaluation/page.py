"""report.html: one self-contained page of an evaluation, for a person to open from the report
folder or the MLflow UI: the headline table against copy-last-frame and the reference, the
per-horizon table, the long-horizon and long-play tables, and every plot, strip and video of the
report folder, embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from worldforge.evaluation.report import format_cell

HEADLINE = (
    ("PSNR (dB)", "psnr_mean", "{:.2f}"),
    ("SSIM", "ssim_mean", "{:.3f}"),
    ("sharpness (1 = as sharp as the truth)", "sharpness_mean", "{:.3f}"),
    ("realism PSNR (dB)", "realism_psnr_mean", "{:.2f}"),
    ("realism PSNR of the recorded frames (dB, ceiling)", "truth_realism_psnr_mean", "{:.2f}"),
    ("balls still compact (fraction)", "object_survival", "{:.3f}"),
    ("agent position error", "agent_position_error", "{:.4f}"),
    ("ball position error", "object_position_error", "{:.4f}"),
    ("action sensitivity (dB; 0 = ignores its actions)", "action_sensitivity_db_mean", "{:.2f}"),
    ("frames/s, end to end", "fps_e2e", "{:.1f}"),
    ("DiT parameters", "parameters_dit", "{:,.0f}"),
)


# (column, metric, format) of the per-step table (`{metric}_per_step`) and, as `long_h{H}_{metric}`
# means over steps 1..H, of the long-horizon table
STEP_COLUMNS = (
    ("PSNR dB", "psnr", "{:.2f}"),
    ("agent error", "agent_position_error", "{:.3f}"),
    ("ball error", "object_position_error", "{:.3f}"),
    ("sharpness", "sharpness", "{:.2f}"),
    ("realism dB", "realism_psnr", "{:.1f}"),
    ("balls compact", "object_survival", "{:.2f}"),
    ("action sens. dB", "action_sensitivity_db", "{:.2f}"),
)
LONG_COLUMNS = (
    ("PSNR dB", "psnr_mean", "{:.2f}"),
    ("SSIM", "ssim_mean", "{:.3f}"),
    ("agent error", "agent_position_error", "{:.3f}"),
    ("ball error", "object_position_error", "{:.3f}"),
    ("sharpness", "sharpness_mean", "{:.2f}"),
    ("realism dB", "realism_psnr_mean", "{:.1f}"),
    ("balls compact", "object_survival", "{:.2f}"),
)
# (column, `play_h{H}_` metric, format, the simulator's twin or None) of the long-play table
PLAY_COLUMNS = (
    ("realism dB", "realism_psnr", "{:.1f}", "truth_realism_psnr"),
    ("sharpness", "sharpness", "{:.2f}", None),
    ("balls found", "balls_found", "{:.2f}", "truth_balls_found"),
    ("agent found", "agent_found", "{:.2f}", "truth_agent_found"),
    ("motion ratio", "motion_ratio", "{:.2f}", None),
)


def _pair(value: Any, baseline: Any, fmt: str) -> str:
    """ "value (copy-last-frame's)", or "-" without a value."""
    cell = format_cell(value, fmt)
    return cell if cell == "-" else f"{cell} ({format_cell(baseline, fmt)})"


def _at(curve: list | None, index: int) -> Any:
    return curve[index] if curve and index < len(curve) else None


def _row(head: Any, cells: list[str]) -> str:
    return f"<tr><th>{head}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _header(columns: list[str]) -> str:
    return "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"


def _play_section(folder: Path, own: dict[str, Any]) -> str:
    """The long-play table (`play_h{H}_...`, the simulator's own numbers in brackets) and strip
    (`play/play_strip.png`), or "" without a long play."""
    steps = own.get("play_steps") or []
    if not steps:
        return ""
    rows = [
        _row(
            h,
            [
                _pair(own.get(f"play_h{h}_{k}"), own.get(f"play_h{h}_{twin}"), fmt)
                if twin
                else format_cell(own.get(f"play_h{h}_{k}"), fmt)
                for _, k, fmt, twin in PLAY_COLUMNS
            ],
        )
        for h in steps
    ]
    strip = folder / "play" / "play_strip.png"
    image = (
        f'<figure class="wide"><img src="data:image/png;base64,{base64.b64encode(strip.read_bytes()).decode()}">'
        "<figcaption>per episode: the simulator (above) and the model (below); the last context frame, then "
        "every 16th frame</figcaption></figure>"
        if strip.is_file()
        else ""
    )
    seconds = own.get("play_seconds")
    cost = f", rolled out in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return (
        f"<h2>Long play: {own.get('play_episodes', '?')} held-out episodes, {own.get('play_frames', '?')} frames "
        f"past the context{cost}</h2>"
        "<p>Driven by the dataset's behaviour policy continued past the recording; no true future, so each number "
        "is set against the simulator's own frames under the same actions (in brackets), as a mean over the "
        f"8 frames ending at step H. Balls found: of {format_cell(own.get('play_balls'), '{:.2f}')} balls per episode "
        "whose colour no other ball shares, the mean number drawn as a compact ball. Agent found: the fraction of "
        "frames in which the agent is drawn as a compact square (a white band or smear is not the agent).</p><table>"
        + _header(["H", *(label for label, _, _, _ in PLAY_COLUMNS)])
        + "".join(rows)
        + "</table>"
        + image
    )


def write_html(folder: Path, summary: dict[str, Any]) -> Path:
    """`report.html` in `folder` (see the module docstring): the long-horizon table with
    `eval.long_horizon`, the long-play table and strip (`play/play_strip.png`) with a long play."""
    model = summary["model"]
    own = model["metrics"]
    reference = summary.get("reference")
    columns = [html.escape(model["name"]), "copy last frame"] + (
        [html.escape(reference["name"])] if reference else []
    )
    rows = []
    for label, key, fmt in HEADLINE:
        cells = [format_cell(own.get(key), fmt), format_cell(own.get(f"baseline_{key}"), fmt)]
        if reference:
            cells.append(format_cell(reference["metrics"].get(key), fmt))
        if any(cell != "-" for cell in cells):
            rows.append(_row(label, cells))
    steps = own.get("psnr_per_step") or []
    horizon = [
        _row(
            h + 1,
            [
                _pair(_at(own.get(f"{k}_per_step"), h), _at(own.get(f"baseline_{k}_per_step"), h), fmt)
                for _, k, fmt in STEP_COLUMNS
            ]
            + [format_cell(_at(own.get("truth_realism_psnr_per_step"), h), "{:.1f}")],
        )
        for h in range(len(steps))
    ]
    long = [
        _row(
            h,
            [
                _pair(own.get(f"long_h{h}_{k}"), own.get(f"long_h{h}_baseline_{k}"), fmt)
                for _, k, fmt in LONG_COLUMNS
            ]
            + [format_cell(own.get(f"long_h{h}_motion_ratio"), "{:.2f}")],
        )
        for h in own.get("long_horizons", [])
    ]
    long_table = (
        "<h2>Long horizons: one rollout beyond the training clip, means over steps 1..H "
        "(copy-last-frame in brackets)</h2><table>"
        + _header(["H", *(label for label, _, _ in LONG_COLUMNS), "motion ratio, 2nd half"])
        + "".join(long)
        + "</table>"
        if long
        else ""
    )
    images = []
    play_section = _play_section(folder, own)
    for path in sorted(folder.glob("*.png")):
        raw = path.read_bytes()
        wide = int.from_bytes(raw[16:20], "big") > 700  # the PNG header's width: a figure of several panels
        data = base64.b64encode(raw).decode()
        images.append(
            f'<figure class="{"wide" if wide else ""}"><img src="data:image/png;base64,{data}">'
            f"<figcaption>{path.name}</figcaption></figure>"
        )
    videos = []
    for path in sorted((folder / "videos").glob("*.gif")) if (folder / "videos").is_dir() else []:
        data = base64.b64encode(path.read_bytes()).decode()
        videos.append(
            f'<figure><img src="data:image/gif;base64,{data}"><figcaption>{path.stem}</figcaption></figure>'
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>worldforge evaluation: {html.escape(model["name"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
figure {{ display: inline-block; margin: 0.5em; }} figure img {{ max-width: 520px; image-rendering: pixelated; }}
figure.wide img {{ max-width: 1080px; }}
</style></head><body>
<h1>{html.escape(model["name"])}</h1>
<p>{html.escape(str(model["source"]))} on {html.escape(str(own.get("dataset", "")))} ({html.escape(str(own.get("split", "")))}),
{own.get("episodes", "?")} held-out episodes, context {own.get("context_frames", "?")} frames, horizon {len(steps)}.
Position errors are in frame sides, against the simulator's true state; copy-last-frame repeats the last context frame.
Sharpness is the generated frames' high-frequency (Laplacian) energy over the true frames': 1 as sharp as the truth,
below 1 blurrier, above 1 noisier.</p>
<h2>Headline</h2>
<table><tr><th></th>{"".join(f"<th>{c}</th>" for c in columns)}</tr>{"".join(rows)}</table>
<p>Realism is the PSNR between a frame and the simulator's own redraw of it with its objects where they are read:
a sharp frame of this world scores high wherever its objects are (the recorded frames are the ceiling, copy-last-frame
near it); blur, noise and half-drawn balls score low. Balls compact: the fraction of the balls found in the recorded
frames that are still drawn as a compact ball (about the disc's area, not a faint smear).</p>
<h2>Per horizon step (copy-last-frame in brackets)</h2>
<table>{_header(["horizon", *(label for label, _, _ in STEP_COLUMNS), "realism of the recorded frames"])}{"".join(horizon)}</table>
{long_table}
{play_section}
<h2>Plots</h2>{"".join(images) or "<p>none</p>"}
<h2>Side by side (left to right as named under each; generated frames framed in red)</h2>{"".join(videos) or "<p>none (eval.videos = 0)</p>"}
</body></html>
"""
    path = folder / "report.html"
    path.write_text(page)
    return path
