"""Video files for people to look at (mp4 through imageio's bundled ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldsim.frames import check_frames
from worldsim.integrity import atomic_path


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of uint8 (T, H, W, 3) frames by an integer factor."""
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, scale: int = 1) -> Path:
    """Write uint8 frames (T, H, W, 3) as an H.264 mp4 (or an animated GIF when the path ends in .gif),
    atomically; frames are upscaled by ``scale``."""
    import imageio.v3 as iio  # heavy import, only when a video is written

    path = Path(path)
    frames = upscale(check_frames(frames, "video frames"), scale)
    if path.suffix.lower() == ".gif":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic_path(path)
        try:
            iio.imwrite(tmp, frames, duration=1000.0 / fps, loop=0)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    if frames.shape[1] % 2 or frames.shape[2] % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    try:
        iio.imwrite(tmp, frames, fps=fps, codec="libx264", macro_block_size=1, output_params=["-crf", "18"])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as uint8 (T, H, W, 3)."""
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))
