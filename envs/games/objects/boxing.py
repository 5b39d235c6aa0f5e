"""Boxing's key objects in 64x64 frames: the white boxer (the player) and the black boxer (the CPU), and
their punches.

Read from pixels, so the same code scores real, reconstructed and generated frames: inside the ring (the
frame less its top rows, which hold the score and clock, and the black strip ALE leaves at the left) the
white boxer is the near-white pixels and the black boxer the near-black ones. A boxer is ``present`` when at
least ``MIN_PIXELS`` of its pixels show (a whole boxer is 30-60 at 64x64); its position is their centroid.
"""

from __future__ import annotations

import numpy as np

FRAME_SIZE = 64
RING = (slice(6, 62), slice(4, 64))
"""Rows and columns of a 64x64 frame that can hold a boxer (not the score, clock or ALE's left strip)."""
MIN_PIXELS = 6
BOXERS = ("white", "black")
ARM_COLUMNS = 8
"""A boxer whose pixels span this many columns or more has an arm out, punching (at 64x64 a boxer spans 4-6
columns otherwise; in the game's bouts the span at the frame a punch lands is 9 on average)."""
REACH = 14.0
"""Centroid distance (px) within which the boxers trade punches (the game's agents are within it 94% of a bout)."""


def _check(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.shape[-3:] != (FRAME_SIZE, FRAME_SIZE, 3):
        raise ValueError(f"envs.games.objects.boxing reads uint8 (..., {FRAME_SIZE}, {FRAME_SIZE}, 3) frames, got "
                         f"{frames.dtype} {frames.shape}")


def masks(frames: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 (..., 64, 64, 3) -> each boxer's pixels in the ring, bool (..., 56, 60)."""
    _check(frames)
    ring = frames[..., RING[0], RING[1], :]
    return {"white": ring.min(-1) > 170, "black": ring.max(-1) < 60}


def find_boxers(frames: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """uint8 (..., 64, 64, 3) -> per boxer (present bool (...,), centroid (..., 2) rows/cols in frame pixels;
    NaN where absent)."""
    return _centroids(masks(frames))


def _centroids(found: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``masks``' output -> ``find_boxers``'."""
    out = {}
    rows = np.arange(RING[0].start, RING[0].stop, dtype=np.float64)[:, None]
    cols = np.arange(RING[1].start, RING[1].stop, dtype=np.float64)[None, :]
    for name, m in found.items():
        n = m.sum((-2, -1))
        present = n >= MIN_PIXELS
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (m * rows).sum((-2, -1)) / n
            c = (m * cols).sum((-2, -1)) / n
        at = np.stack([r, c], -1)
        at[~present] = np.nan
        out[name] = (present, at)
    return out


def arms_out(frames: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 (..., 64, 64, 3) -> per boxer, bool (...,): its arm is out (its pixels span >= ``ARM_COLUMNS``
    columns). A punch is one or two pixels of arm: a world that draws soft boxers loses it first."""
    return _arms(masks(frames))


def _arms(found: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``masks``' output -> ``arms_out``'."""
    out = {}
    for name, m in found.items():
        cols = m.any(-2)  # (..., 60) columns holding the boxer
        first, last = np.argmax(cols, -1), cols.shape[-1] - 1 - np.argmax(cols[..., ::-1], -1)
        out[name] = cols.any(-1) & (last - first + 1 >= ARM_COLUMNS)
    return out


def punch_rates(frames: np.ndarray) -> dict[str, float | int | None]:
    """uint8 (..., 64, 64, 3) -> ``in_reach`` (frames showing both boxers within ``REACH`` px) and, per boxer,
    the share of those frames in which its arm is out (None without such frames). The game's agents' bouts:
    white 0.26, black 0.10 (checkpoints/wip/README.md)."""
    m = masks(frames)  # read once: the boxers' places and their arms
    found = _centroids(m)
    dist = np.linalg.norm(found["white"][1] - found["black"][1], axis=-1)
    near = np.nan_to_num(dist, nan=np.inf) < REACH
    out: dict[str, float | int | None] = {"in_reach": int(near.sum())}
    for name, arm in _arms(m).items():
        out[name] = float(arm[near].mean()) if near.any() else None
    return out


def compare(real: np.ndarray, other: np.ndarray, near: float = 3.0) -> dict[str, float | int | None]:
    """Both boxers of ``other`` against ``real``, frame by frame; both uint8 (..., 64, 64, 3) of one shape.

    Per boxer: ``<b>_recall`` (of the real frames showing it, the share where ``other`` shows it within ``near``
    pixels), ``<b>_error`` (mean centroid distance in pixels where both show it), ``<b>_iou`` (overlap of its
    pixels, over the frames where either shows it)."""
    if real.shape != other.shape:
        raise ValueError(f"compare needs frames of one shape, got {real.shape} and {other.shape}")
    m_r, m_o = masks(real), masks(other)
    found_r, found_o = _centroids(m_r), _centroids(m_o)
    out: dict[str, float | int | None] = {"frames": int(np.prod(real.shape[:-3]))}
    for b in BOXERS:
        (has_r, at_r), (has_o, at_o) = found_r[b], found_o[b]
        dist = np.linalg.norm(at_r - at_o, axis=-1)
        both = has_r & has_o
        inter = (m_r[b] & m_o[b]).sum((-2, -1))
        union = (m_r[b] | m_o[b]).sum((-2, -1))
        out[f"{b}_frames"] = int(has_r.sum())
        hit = both & (np.nan_to_num(dist, nan=np.inf) <= near)
        out[f"{b}_recall"] = float(hit.sum() / has_r.sum()) if has_r.any() else None
        out[f"{b}_error"] = float(dist[both].mean()) if both.any() else None
        out[f"{b}_iou"] = float(inter[union > 0].sum() / union[union > 0].sum()) if (union > 0).any() else None
    return out


def boxer_rate(frames: np.ndarray) -> float:
    """The share of frames (..., 64, 64, 3) that show both boxers."""
    found = find_boxers(frames)
    return float((found["white"][0] & found["black"][0]).mean())
