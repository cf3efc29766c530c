"""Pictures of a dataset for people: a contact sheet (PNG) and an animation (GIF) of a few episodes,
each frame labelled with the action taken after it."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from worldforge.data.episode import ActionSpace, DatasetError, Episode
from worldforge.data.manifest import read_manifest
from worldforge.data.samples import iter_episodes

CELL = 128  # pixels per frame side in the pictures
LABEL = 14  # pixels of the label strip under each frame
ARROWS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


def labelled_frame(frame: np.ndarray, action, space: ActionSpace, t: int) -> Image.Image:
    """One frame scaled to CELL (nearest), with `t` and the action written below and, for the
    simulator's moves, an arrow in the corner."""
    image = Image.new("RGB", (CELL, CELL + LABEL), (20, 20, 20))
    image.paste(Image.fromarray(frame).resize((CELL, CELL), Image.NEAREST), (0, 0))
    draw = ImageDraw.Draw(image)
    name = space.label(action)
    draw.text((3, CELL + 1), f"t{t} {name}"[:21], fill=(235, 235, 235))
    if name in ARROWS:
        dx, dy = ARROWS[name]
        cx, cy = CELL - 14, 14
        draw.line((cx - 9 * dx, cy - 9 * dy, cx + 9 * dx, cy + 9 * dy), fill=(255, 220, 0), width=3)
        draw.ellipse((cx + 9 * dx - 3, cy + 9 * dy - 3, cx + 9 * dx + 3, cy + 9 * dy + 3), fill=(255, 220, 0))
    elif name == "push":
        draw.ellipse((CELL - 24, 4, CELL - 4, 24), outline=(255, 220, 0), width=2)
    return image


def first_episodes(folder: Path, count: int) -> list[Episode]:
    """Up to `count` episodes from the first split that has any (test, val, then train)."""
    manifest = read_manifest(folder)
    for split in ("test", "val", "train"):
        if manifest.splits.get(split) and manifest.splits[split].samples:
            return list(islice(iter_episodes(folder, split), count))
    return []


def contact_sheet(episodes: list[Episode], columns: int = 8) -> Image.Image:
    """One row per episode, `columns` frames evenly spaced over it."""
    sheet = Image.new("RGB", (columns * CELL, len(episodes) * (CELL + LABEL)), (0, 0, 0))
    for row, episode in enumerate(episodes):
        for col, t in enumerate(np.linspace(0, len(episode) - 1, columns).round().astype(int)):
            cell = labelled_frame(episode.frames[t], episode.actions[t], episode.action_space, int(t))
            sheet.paste(cell, (col * CELL, row * (CELL + LABEL)))
    return sheet


def animation(episodes: list[Episode]) -> list[Image.Image]:
    """GIF frames: the episodes side by side, played together for the shortest one's length."""
    length = min(len(e) for e in episodes)
    frames = []
    for t in range(length):
        canvas = Image.new("RGB", (len(episodes) * CELL, CELL + LABEL))
        for i, episode in enumerate(episodes):
            canvas.paste(labelled_frame(episode.frames[t], episode.actions[t], episode.action_space, t), (i * CELL, 0))
        frames.append(canvas)
    return frames


def write_previews(folder: Path, out: Path, episodes: int = 4) -> tuple[Path, Path]:
    """Write `contact_sheet.png` and `episodes.gif` into `out`; returns their paths."""
    chosen = first_episodes(Path(folder), episodes)
    if not chosen:
        raise DatasetError(f"{folder}: the dataset has no samples to show")
    out.mkdir(parents=True, exist_ok=True)
    sheet_path, gif_path = out / "contact_sheet.png", out / "episodes.gif"
    contact_sheet(chosen).save(sheet_path)
    frames = animation(chosen)
    fps = chosen[0].fps if chosen else 15.0
    frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return sheet_path, gif_path
