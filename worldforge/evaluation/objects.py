"""Finding the simulator's agent and balls in frames, generated or recorded.

An object is found by its colour c over the clip's background b: every pixel p holds an amount

    a(p) = (p - b) . (c - b) / |c - b|^2        (0: background, 1: the object's own colour)

of it, counted where a >= `MIN_PRESENCE` and p lies within `TOLERANCE` levels of the line from b
to c (a pixel of another colour is not a faded version of this one). The object is at the centre
of mass of the largest connected blob of it, and found when that blob holds `MIN_MASS` pixels or
more (the faint halo that a blurred neighbour leaves around itself does not pull it). A blurred or faded
object still counts, at its centre of mass; an object drawn nowhere is missing, and a missing
object costs `MISSING_ERROR`, the mean distance between two random points of the frame: it is as
good as a guess. Only objects the detector finds in the recorded frame are scored, and balls whose
colours another ball of the episode shares (within 2 x `TOLERANCE`) never are.

A ball *survives* (`compact_balls`) where it is still drawn as a ball, not a faint wash or a smear:
the largest blob of its colour holds at least `COMPACT_MASS` of its disc's area in full-colour
pixels, some pixel of it at least `COMPACT_PEAK` of the colour, and at most `COMPACT_SPILL` of its
mass beyond a pixel outside the disc (on the simulator's frames: 99.8% of scored balls survive, 97%
under a Gaussian blur of sigma 0.5 px, 53% of sigma 1, none half-erased or faded to half). The
agent is found compact (`compact_agent`) by the same three tests against its square.

The background of a clip is read off its recorded frames and the simulator's state: per pixel, the
median over the frames in which no object covers it (pixels covered in every frame take the median
of all uncovered pixels). Positions are the state's normalised (x, y): x right, y down, 1 = the
frame's side.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from worldforge.data.sources.simulator import AGENT_COLOR, AGENT_HALF, BALL_RADIUS

MIN_PRESENCE = 0.25
MIN_MASS = 1.0
TOLERANCE = 48.0
MISSING_ERROR = 0.5214  # E|X - Y| for X, Y uniform in the unit square
COVER_MARGIN = 1.5  # pixels around an object's true extent treated as covered when reading the background


def as_pixels(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8, or float in [-1, 1] as (T, H, W, 3) or (T, 3, H, W) -> (T, H, W, 3) float32 0..255."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"frames must be (T, H, W, 3) or (T, 3, H, W), got shape {frames.shape}")
    if frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    if frames.dtype == np.uint8:
        return frames.astype(np.float32)
    return np.clip((frames.astype(np.float32) + 1) * 127.5, 0, 255)


@dataclass
class Scene:
    """What finding the objects of one clip needs: its background and the objects' colours."""

    background: np.ndarray  # (H, W, 3) float32 0..255
    colors: np.ndarray  # (1 + K, 3) float32: the agent, then each ball
    scored: np.ndarray  # (1 + K,) bool: colour distinct from every other object's


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs), each (H, W): every pixel's centre, normalised."""
    ys, xs = (np.indices((height, width)) + 0.5) / np.array([height, width])[:, None, None]
    return ys, xs


def covered(shape: tuple[int, int], positions: np.ndarray) -> np.ndarray:
    """(T, 1 + K, 2) true positions (agent first) -> (T, H, W) bool: pixels an object may cover."""
    height, width = shape
    ys, xs = pixel_centres(height, width)
    margin = COVER_MARGIN / min(height, width)
    mask = np.zeros((len(positions), height, width), dtype=bool)
    for t, frame in enumerate(positions):
        (ax, ay), balls = frame[0], frame[1:]
        mask[t] |= (np.abs(xs - ax) <= AGENT_HALF + margin) & (np.abs(ys - ay) <= AGENT_HALF + margin)
        for bx, by in balls:
            mask[t] |= (xs - bx) ** 2 + (ys - by) ** 2 <= (BALL_RADIUS[1] + margin) ** 2
    return mask


def read_scene(frames: np.ndarray, positions: np.ndarray) -> Scene:
    """The scene of a recorded clip: frames (T, H, W, 3) (any layout `as_pixels` takes) and the
    true positions (T, 1 + K, 2), the agent first. Ball colours are the median, over frames, of the
    pixel under each ball's centre (another object covers it in a few frames, not in most)."""
    pixels = as_pixels(frames)
    t, height, width = pixels.shape[:3]
    mask = covered((height, width), positions)
    free = np.where(mask[..., None], np.nan, pixels)  # (T, H, W, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: pixels covered in every frame
        background = np.nanmedian(free, axis=0)  # (H, W, 3), NaN where always covered
        fill = np.nanmedian(free.reshape(-1, 3), axis=0)
    background = np.where(np.isnan(background), np.nan_to_num(fill, nan=0.0), background).astype(np.float32)
    cols = np.clip((positions[:, 1:, 0] * width).astype(int), 0, width - 1)  # (T, K)
    rows = np.clip((positions[:, 1:, 1] * height).astype(int), 0, height - 1)
    balls = np.median(pixels[np.arange(t)[:, None], rows, cols], axis=0).reshape(-1, 3)  # (K, 3)
    colors = np.concatenate([np.asarray([AGENT_COLOR], dtype=np.float32), balls.astype(np.float32)])
    gap = np.abs(colors[:, None] - colors[None, :]).max(axis=-1)
    np.fill_diagonal(gap, np.inf)
    return Scene(background, colors, gap.min(axis=1) > 2 * TOLERANCE)


def presence(frames: np.ndarray, scene: Scene) -> np.ndarray:
    """(T, H, W, 3) 0..255 pixels -> (T, H, W, 1 + K): how much of each object's colour each pixel holds."""
    offset = frames[..., None, :] - scene.background[None, :, :, None, :]  # (T, H, W, 1, 3)
    direction = scene.colors[None, None, :, :] - scene.background[:, :, None, :]  # (H, W, 1 + K, 3)
    length2 = np.maximum((direction**2).sum(-1), 1.0)  # (H, W, 1 + K)
    amount = (offset * direction[None]).sum(-1) / length2[None]  # (T, H, W, 1 + K)
    off_line = np.abs(offset - amount[..., None] * direction[None]).max(axis=-1)
    return np.where((amount >= MIN_PRESENCE) & (off_line <= TOLERANCE), np.clip(amount, 0.0, 1.0), 0.0)


def largest_blob(weights: np.ndarray) -> np.ndarray | None:
    """(H, W) amounts of one colour -> the (H, W) amounts of its 8-connected blob with the most mass
    (zero elsewhere), or None when it holds under `MIN_MASS` (nothing of the colour is drawn)."""
    labels, count = ndimage.label(weights > 0, structure=np.ones((3, 3)))
    if not count:
        return None
    masses = np.bincount(labels.ravel(), weights=weights.ravel(), minlength=count + 1)[1:]  # each blob's mass
    best = int(np.argmax(masses))
    if masses[best] < MIN_MASS:
        return None
    return np.where(labels == best + 1, weights, 0.0)


def centre(blob: np.ndarray) -> tuple[float, float]:
    """(H, W) amounts -> their centre of mass, normalised (x, y)."""
    height, width = blob.shape
    rows, cols = np.indices((height, width))
    mass = blob.sum()
    return ((cols + 0.5) * blob).sum() / mass / width, ((rows + 0.5) * blob).sum() / mass / height


def locate(frames: np.ndarray, scene: Scene) -> np.ndarray:
    """Where each object is in each frame: (T, 1 + K, 2) float64 normalised (x, y), NaN where it is
    missing. The object is the connected blob of its colour with the most mass (the faint halo a
    blurred neighbour leaves does not pull it), found when that blob holds `MIN_MASS` pixels."""
    mass = presence(as_pixels(frames), scene)  # (T, H, W, 1 + K)
    position = np.full((mass.shape[0], mass.shape[-1], 2), np.nan)
    for frame in range(mass.shape[0]):
        for k in range(mass.shape[-1]):
            blob = largest_blob(mass[frame, :, :, k])
            if blob is not None:
                position[frame, k] = centre(blob)
    return position


# A ball is found *compact* (object survival) when the largest blob of its colour, around its centre
# of mass c, looks like the disc of radius r the simulator draws there:
COMPACT_MASS = 0.6  # its mass (in full-colour pixels) is at least this share of the disc's area pi r^2
COMPACT_PEAK = 0.75  # some pixel holds at least this much of the ball's colour (not only a faint wash)
COMPACT_SPILL = 0.25  # at most this share of its mass lies beyond r + 1 pixel from c (not a smear)


def compact(blob: np.ndarray, distance: np.ndarray, extent: float, area: float, hidden: float = 0.0) -> bool:
    """The mass and spill tests of a compact ball or agent (its peak is tested where its blob is
    found): `blob` (H, W) amounts holds, with `hidden` pixels of it under another object, at least
    `COMPACT_MASS` of the shape's `area`, and at most `COMPACT_SPILL` of its mass lies more than a
    pixel beyond `extent` (`distance`: each pixel's from the blob's centre; both in pixels)."""
    spill = blob[distance > extent + 1].sum() / blob.sum()
    return bool(blob.sum() + hidden >= COMPACT_MASS * area and spill <= COMPACT_SPILL)


def compact_balls(frames: np.ndarray, scene: Scene, radii: np.ndarray) -> np.ndarray:
    """Which balls are drawn as a compact ball in each frame: frames (T, ...) (any layout
    `as_pixels` takes), radii (K,) the balls' radii in frame sides. Returns (T, K) bool: the
    largest blob of the ball's colour passes `COMPACT_MASS`, `COMPACT_PEAK` and `COMPACT_SPILL`.
    Pixels of the disc that the agent covers (it is drawn over the balls) count as the ball's."""
    mass = presence(as_pixels(frames), scene)  # (T, H, W, 1 + K)
    t, height, width = mass.shape[:3]
    scale = min(height, width)
    ys, xs = pixel_centres(height, width)
    agent = mass[..., 0] >= 0.5  # (T, H, W)
    found = np.zeros((t, len(radii)), dtype=bool)
    for frame in range(t):
        for k, radius in enumerate(radii):
            blob = largest_blob(mass[frame, :, :, k + 1])
            if blob is None or blob.max() < COMPACT_PEAK:
                continue
            x, y = centre(blob)
            distance = np.hypot(xs - x, ys - y) * scale  # pixels
            disc = distance <= radius * scale
            covered = (agent[frame] & disc & (blob == 0)).sum()
            area = math.pi * (radius * scale) ** 2
            found[frame, k] = compact(blob, distance, radius * scale, area, covered)
    return found


# The agent is found *compact* (`compact_agent`) when the largest blob of its colour, around its centre
# of mass, looks like the square of half side h the simulator draws: `COMPACT_MASS` of the square's
# area, a pixel of `COMPACT_PEAK`, and at most `COMPACT_SPILL` of its mass beyond h + 1 pixel (along
# either axis) from the centre. A white band along an edge, or an agent stretched into a bar, is
# not the agent.


def compact_agent(frames: np.ndarray, scene: Scene) -> np.ndarray:
    """Whether the agent is drawn as a compact square in each frame: frames (T, ...) (any layout
    `as_pixels` takes). Returns (T,) bool."""
    mass = presence(as_pixels(frames), scene)[..., 0]  # (T, H, W)
    t, height, width = mass.shape
    scale = min(height, width)
    ys, xs = pixel_centres(height, width)
    half = AGENT_HALF * scale  # pixels
    found = np.zeros(t, dtype=bool)
    for frame in range(t):
        blob = largest_blob(mass[frame])
        if blob is None or blob.max() < COMPACT_PEAK:
            continue
        x, y = centre(blob)
        distance = np.maximum(np.abs(xs - x), np.abs(ys - y)) * scale  # pixels, along the farther axis
        found[frame] = compact(blob, distance, half, (2 * half) ** 2)
    return found


def position_errors(
    frames: np.ndarray, positions: np.ndarray, scene: Scene, scored: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How far each object is drawn from its true position: frames (T, ...), positions (T, 1 + K, 2),
    scored (T, 1 + K) bool (`truth_scored`). Returns (error, found), both (T, 1 + K): the distance,
    `MISSING_ERROR` where a scored object is missing, NaN where it is not scored; found: whether
    the object was found at all."""
    located = locate(frames, scene)
    found = np.isfinite(located).all(axis=-1)
    error = np.where(found, np.linalg.norm(np.nan_to_num(located) - positions, axis=-1), MISSING_ERROR)
    return np.where(scored, error, np.nan), found


def truth_scored(frames: np.ndarray, scene: Scene) -> np.ndarray:
    """(T, 1 + K) bool: objects found in the recorded frames and of a distinct colour."""
    return np.isfinite(locate(frames, scene)).all(axis=-1) & scene.scored[None, :]
