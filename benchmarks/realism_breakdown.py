"""Where a model's realism error lies: near the objects, on the background's texture edges, or on
its flat areas.

    python benchmarks/realism_breakdown.py PACKAGE [PACKAGE ...] --dataset ROOT/datasets/simulator-32px \\
        --episodes 32 --strip strips.png

Each package is rolled out on the same held-out simulator episodes with its own sampler (context
4, horizon 8, the evaluation's seed) and every generated frame is compared with the simulator's
redraw of it (`evaluation/realism.py`). The squared error is split three ways: pixels within two
cells of an object, drawn or true ("near objects": smears, ghosts, half-erased balls); background
pixels on a colour edge of the episode's background (stripes and checks: what a blurring warp
wears away); the rest ("flat"). The table gives realism per step and, at the last step, each
part's share of the error and the realism the frame would have were that part exact. `--strip`
writes, per package, a strip of 4 episodes: truth, model, redraw and the error (x4) at steps 1,
4 and 8.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_dilation

from worldforge.evaluation import realism
from worldforge.evaluation.config import EvalConfig
from worldforge.evaluation.objects import as_pixels
from worldforge.evaluation.rollout_eval import load_clips, predict
from worldforge.packages import load_package

PARTS = ("near objects", "texture edges", "flat")
NEAR = 2  # cells around an object counted as near it


def background_edges(background: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) bool: cells whose colour differs from a 4-neighbour's."""
    grey = background.astype(np.float64).mean(axis=-1)
    edges = np.zeros(grey.shape, dtype=bool)
    across, down = np.abs(np.diff(grey, axis=1)) > 1, np.abs(np.diff(grey, axis=0)) > 1
    edges[:, 1:] |= across
    edges[:, :-1] |= across
    edges[1:] |= down
    edges[:-1] |= down
    return edges


def breakdown(
    frames: np.ndarray, truth: np.ndarray, world, drawn: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One clip's generated frames and true frames (T, ...) -> per step (T,) squared error and (T, 3)
    its parts (near objects, texture edges, flat), each a sum over the part's pixels over all pixels.
    `drawn`: the frames' redraws (`realism.redraws`), when already made."""
    pixels = as_pixels(frames).astype(np.float64)
    drawn = (realism.redraws(frames, world) if drawn is None else drawn).astype(np.float64)
    background = realism.redraw(world, np.full((1 + len(world.radius), 2), np.nan))
    true = as_pixels(truth).astype(np.float64)
    objects = (np.abs(drawn - background).sum(-1) > 0) | (np.abs(true - background).sum(-1) > 1)
    near = np.stack([binary_dilation(o, iterations=NEAR) for o in objects])
    edges = background_edges(background)[None] & ~near
    flat = ~near & ~edges
    error = ((pixels - drawn) ** 2).mean(axis=-1)  # (T, H, W)
    size = error[0].size
    parts = np.stack([(error * part).sum(axis=(1, 2)) / size for part in (near, edges, flat)], axis=-1)
    return error.mean(axis=(1, 2)), parts


def strip(frames: np.ndarray, redrawn: list[np.ndarray], clips, count: int = 4) -> np.ndarray:
    """Rows of `count` episodes: (truth, model, redraw, error x4) at steps 1, 4 and 8."""
    rows = []
    for n in range(min(count, len(frames))):
        pixels = as_pixels(frames[n]).round().astype(np.uint8)
        drawn = redrawn[n]
        true = as_pixels(clips.target[n].numpy()).round().astype(np.uint8)
        error = np.clip(np.abs(pixels.astype(int) - drawn.astype(int)).mean(-1) * 4, 0, 255).astype(np.uint8)
        gap = np.zeros((pixels.shape[1], 2, 3), np.uint8)
        row = []
        for t in (0, min(3, len(pixels) - 1), len(pixels) - 1):
            row += [true[t], pixels[t], drawn[t], np.repeat(error[t][..., None], 3, -1), gap]
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="+", type=Path, help="world-model package folders")
    parser.add_argument("--dataset", type=Path, required=True, help="a built simulator dataset folder")
    parser.add_argument("--episodes", type=int, default=32, help="held-out test episodes")
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--strip",
        type=Path,
        help="write a PNG strip per package: STRIP with the package's name (and its folder's, where two share a name)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = EvalConfig(episodes=args.episodes, context_frames=4, horizon=args.horizon)
    clips = load_clips(args.dataset, config)
    if clips.worlds is None:
        raise SystemExit(f"{args.dataset}: realism needs a simulator dataset whose worlds can be redrawn")
    header = ["package", *(f"step {t + 1}" for t in range(args.horizon))]
    header += [f"{part}: share / realism if exact" for part in PARTS]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    names = [folder.name for folder in args.packages]
    for folder in args.packages:
        # two students both called dmd-2: told apart (and their strips kept apart) by their parent folder
        label = folder.name if names.count(folder.name) == 1 else f"{folder.parent.name}-{folder.name}"
        model = load_package(folder).build().eval()
        with torch.no_grad():
            frames = predict(model, clips, config, torch.device("cpu")).numpy()
        redrawn = [realism.redraws(f, w) for f, w in zip(frames, clips.worlds)]
        totals, parts = zip(
            *(
                breakdown(f, c.numpy(), w, d)
                for f, c, w, d in zip(frames, clips.target, clips.worlds, redrawn)
            )
        )
        totals, parts = np.stack(totals), np.mean(parts, axis=0)  # (N, T), (T, 3)
        last, total = parts[-1], totals.mean(axis=0)[-1]
        cells = [f"{v:.1f}" for v in realism.realism_psnr(totals)]
        cells += [
            f"{last[i] / total:.2f} / {realism.realism_psnr([[total - last[i]]])[0]:.1f}"
            for i in range(len(PARTS))
        ]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        if args.strip:
            from PIL import Image

            image = strip(frames, redrawn, clips)
            out = args.strip.with_name(f"{args.strip.stem}-{label}{args.strip.suffix or '.png'}")
            Image.fromarray(image).resize((image.shape[1] * 6, image.shape[0] * 6), Image.NEAREST).save(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
