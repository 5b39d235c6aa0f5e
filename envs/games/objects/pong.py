"""Pong's key objects found in 64x64 frames by colour: the ball and the two paddles.

What a Pong world is about is a ball of about one pixel at 64x64 (2x4 pixels at 210x160), so frame PSNR,
dominated by the static court, says little about it. These measures look at the objects themselves: whether
the ball is there, where it is, and how well the pixels around the ball and the paddles are reproduced.

Layout of ``ALE/Pong-v5`` at 64x64 (INTER_AREA): scores above row 7, white walls on rows 7-10 and 59-63, the
opponent's (orange) paddle in columns 6-7, the player's (green) in columns 56-57, the court brown
(144, 72, 17). The ball is white (236, 236, 236) and keeps a blue value of about 150-230 after resizing, while
the court's blue is 17 and the paddles' 74 and 92: between the paddles, a blue value over ``BALL_BLUE`` is the
ball.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.games.pong import DOWN, UP

FRAME_SIZE = 64
COURT_ROWS = slice(11, 59)
BALL_COLS = slice(8, 56)
PADDLE_COLS = (slice(5, 9), slice(55, 59))
BALL_BLUE = 100
COURT = (144, 72, 17)


def _check(frames: np.ndarray) -> None:
    if frames.shape[-3:] != (FRAME_SIZE, FRAME_SIZE, 3):
        raise ValueError(f"Pong object measures read {FRAME_SIZE}x{FRAME_SIZE} RGB frames, got {frames.shape[-3:]}")


def find_ball(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ball in frames (..., 64, 64, 3) uint8: (present (...) bool, position (..., 2) row/col in the frame,
    the brightest ball-coloured pixel; meaningless where not present)."""
    _check(frames)
    blue = frames[..., COURT_ROWS, BALL_COLS, 2].astype(np.int16)
    flat = blue.reshape(*blue.shape[:-2], -1)
    at = flat.argmax(-1)
    present = np.take_along_axis(flat, at[..., None], -1)[..., 0] > BALL_BLUE
    rows, cols = np.divmod(at, blue.shape[-1])
    return present, np.stack([rows + COURT_ROWS.start, cols + BALL_COLS.start], -1)


def player_paddle(frames: np.ndarray) -> np.ndarray:
    """The row of the centre of the player's (right, green) paddle in frames (..., 64, 64, 3) uint8 -> (...)
    float, NaN where it is not on the court."""
    _check(frames)
    strip = frames[..., COURT_ROWS, PADDLE_COLS[1], :].astype(np.int16)
    on = np.abs(strip - np.array(COURT, np.int16)).sum(-1).max(-1) > 60  # (..., rows)
    rows = np.arange(COURT_ROWS.start, COURT_ROWS.stop, dtype=np.float64)
    n = on.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (on * rows).sum(-1) / n, np.nan)


def _window_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def compare(real: np.ndarray, other: np.ndarray, radius: int = 2, near: float = 2.0) -> dict[str, float | int | None]:
    """The key objects of ``other`` against those of ``real`` frame by frame; both (N, 64, 64, 3) uint8.

    ``ball_recall``: of the real frames with a ball, the share where ``other`` shows one within ``near`` pixels;
    ``ball_false``: of the real frames without one, the share where ``other`` shows a ball; ``ball_error``: the
    mean distance (pixels) where both show it; ``ball_psnr``: PSNR over the (2 radius + 1)^2 window around the
    real ball; ``paddle_psnr``: PSNR over the two paddle strips of the court."""
    _check(real)
    _check(other)
    real, other = real.reshape(-1, FRAME_SIZE, FRAME_SIZE, 3), other.reshape(-1, FRAME_SIZE, FRAME_SIZE, 3)
    has_r, at_r = find_ball(real)
    has_o, at_o = find_ball(other)
    dist = np.linalg.norm((at_r - at_o).astype(np.float64), axis=-1)
    both = has_r & has_o
    wins_r, wins_o = [], []
    for i in np.flatnonzero(has_r):
        r0, c0 = (int(v) for v in at_r[i])
        rows = slice(max(r0 - radius, 0), r0 + radius + 1)
        cols = slice(max(c0 - radius, 0), c0 + radius + 1)
        wins_r.append(real[i, rows, cols].ravel())
        wins_o.append(other[i, rows, cols].ravel())
    paddles_r = np.concatenate([real[:, COURT_ROWS, c] for c in PADDLE_COLS], -2)
    paddles_o = np.concatenate([other[:, COURT_ROWS, c] for c in PADDLE_COLS], -2)
    return {
        "frames": len(real), "ball_frames": int(has_r.sum()),
        "ball_recall": float((both & (dist <= near)).sum() / has_r.sum()) if has_r.any() else None,
        "ball_false": float((has_o & ~has_r).sum() / (~has_r).sum()) if (~has_r).any() else None,
        "ball_error": float(dist[both].mean()) if both.any() else None,
        "ball_psnr": _window_psnr(np.concatenate(wins_r), np.concatenate(wins_o)) if wins_r else None,
        "paddle_psnr": _window_psnr(paddles_r, paddles_o),
    }


def ball_rate(frames: np.ndarray) -> float:
    """The share of frames (..., 64, 64, 3) that show a ball."""
    return float(find_ball(frames)[0].mean())


def paddle_response(start: np.ndarray, world_last: np.ndarray, real_last: np.ndarray, actions: list,
                    up: int = UP, down: int = DOWN) -> dict[str, Any]:
    """Does the player's paddle follow the keys as in the game? From the same states, each action of ``actions``
    was held for some frames in the world and in the real game. ``start`` (E, 64, 64, 3): the frame before the
    keys; ``world_last``, ``real_last`` (E, n, 64, 64, 3): the last frames per action. ``up``, ``down``: the
    actions that move the paddle (ALE's RIGHT and LEFT in Pong).

    ``moved_*``: the paddle's mean move in rows per action (up is negative); ``down_minus_up``: the mean gap
    between holding down and holding up, world and game, and their ``ratio``; ``direction_agreement``: the share
    of states where the world moves the paddle the way the game does (down below up, or no gap where the game
    has none; a paddle the world loses counts as a miss); ``paddle_missing``: the share of the world's last
    frames without the player's paddle."""
    if up not in actions or down not in actions:
        raise ValueError(f"paddle_response needs the up ({up}) and down ({down}) actions among {actions}")
    iu, idn = actions.index(up), actions.index(down)
    p0 = player_paddle(start)[:, None]
    moved_w = player_paddle(np.asarray(world_last).astype(np.uint8)) - p0  # (E, n)
    moved_r = player_paddle(np.asarray(real_last).astype(np.uint8)) - p0
    gap_w, gap_r = moved_w[:, idn] - moved_w[:, iu], moved_r[:, idn] - moved_r[:, iu]
    same = np.where(np.isnan(gap_w) | np.isnan(gap_r), False, np.sign(np.round(gap_w)) == np.sign(np.round(gap_r)))
    known = ~np.isnan(gap_r)
    world_gap, real_gap = _nanmean(gap_w), _nanmean(gap_r)
    return {"states": len(start), "actions": [int(a) for a in actions],
            "moved_world": [_nanmean(x) for x in moved_w.T], "moved_real": [_nanmean(x) for x in moved_r.T],
            "down_minus_up_world": world_gap, "down_minus_up_real": real_gap,
            "ratio": world_gap / real_gap if world_gap is not None and real_gap else None,
            "direction_agreement": float(same[known].mean()) if known.any() else None,
            "paddle_missing": float(np.isnan(moved_w).mean())}


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if (~np.isnan(x)).any() else None


def vae_report(vae_path: str, data_dir: str, heldout_every: int = 10, skip: int = 100, frames: int = 400,
               clip: int = 16) -> dict:
    """The key objects of a Pong VAE's reconstructions of the held-out episodes (every ``heldout_every``-th, as
    training holds them out): ``frames`` frames from ``skip`` on in each, encoded and decoded ``clip`` at a time."""
    import torch

    from worldsim.data.dataset import EpisodeDataset
    from worldsim.frames import to_model, to_uint8
    from worldsim.metrics.image import psnr_frames
    from worldsim.models.vae import load_vae

    vae, _ = load_vae(vae_path)
    data = EpisodeDataset(data_dir)
    held = [i for i in range(len(data)) if i % heldout_every == 0]
    reals, recons = [], []
    with torch.no_grad():
        for i in held:
            f = data.episode(i).frames[skip : skip + frames]
            for k in range(0, len(f) - clip + 1, clip):
                reals.append(f[k : k + clip])
                recons.append(to_uint8(vae.decode(vae.encode(to_model(f[None, k : k + clip], "cpu"))))[0])
    if not reals:
        raise ValueError(f"no held-out episode of {data_dir} has {skip + clip} frames; lower --skip")
    real, recon = np.concatenate(reals), np.concatenate(recons)
    return {"vae": vae_path, "episodes": held, "frame_psnr": float(psnr_frames(recon, real).mean()),
            **compare(real, recon)}


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(description="Does a Pong VAE keep the ball and paddles? (held-out episodes)")
    p.add_argument("vae", help="a VAE file (runs/pong/vae.safetensors)")
    p.add_argument("data", help="the dataset it was trained on (data/pong)")
    p.add_argument("--heldout-every", type=int, default=10)
    args = p.parse_args()
    print(json.dumps(vae_report(args.vae, args.data, args.heldout_every), indent=2))
