"""Frame-quality metrics for comparing generated clips with real ones. Frames are uint8 (T, H, W, 3)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from worldsim.frames import to_model


def psnr_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 (T, H, W, 3) clips -> (T,)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def ssim_frames(a: np.ndarray, b: np.ndarray, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Per-frame SSIM (Gaussian window, on the luma of uint8 frames) -> (T,)."""
    def luma(x):
        x = to_model(x).add(1).mul(127.5)  # (T, 3, H, W) in 0..255
        return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].double()

    x, y = luma(a), luma(b)
    g = torch.exp(-((torch.arange(window) - window // 2) ** 2) / (2 * sigma**2)).double()
    g = (g[:, None] * g[None]) / g.sum() ** 2
    k = g[None, None]

    def blur(z):
        return F.conv2d(z, k)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).numpy()


def warp_error(frames: np.ndarray) -> float:
    """Temporal consistency: Farneback optical flow from frame t to t+1, warp t onto t+1, mean absolute
    residual (0..255 scale) over all consecutive pairs. Smooth motion warps well; flicker and noise do not."""
    import cv2

    if len(frames) < 2:
        return float("nan")
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    h, w = gray[0].shape
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    errors = []
    for t in range(len(frames) - 1):
        # Backward flow (t+1 -> t) tells where each pixel of t+1 came from in t.
        flow = cv2.calcOpticalFlowFarneback(gray[t + 1], gray[t], None, 0.5, 3, 9, 3, 5, 1.1, 0)
        m = grid + flow
        warped = cv2.remap(np.ascontiguousarray(frames[t]), m[..., 0], m[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        errors.append(np.abs(warped.astype(np.float32) - frames[t + 1].astype(np.float32)).mean())
    return float(np.mean(errors))


def colour_histogram(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised joint RGB histogram of all pixels of a clip -> (bins**3,)."""
    q = (frames.reshape(-1, 3).astype(np.int64) * bins) // 256
    idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    h = np.bincount(idx, minlength=bins**3).astype(np.float64)
    return h / max(h.sum(), 1.0)


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Total-variation distance (0 = same colours, 1 = disjoint) between the colour histograms of two clips."""
    return float(0.5 * np.abs(colour_histogram(a, bins) - colour_histogram(b, bins)).sum())


def frame_activity(frames: np.ndarray) -> dict[str, float]:
    """Collapse detectors: mean per-frame pixel std (a blank screen -> 0) and mean absolute change between
    consecutive frames (a frozen screen -> 0)."""
    x = frames.astype(np.float32)
    change = float(np.abs(np.diff(x, axis=0)).mean()) if len(x) > 1 else 0.0
    return {"pixel_std": float(x.reshape(len(x), -1).std(1).mean()), "frame_change": change}


def sharpness(frames: np.ndarray) -> float:
    """Mean over frames of the variance of the Laplacian of the luma (0..255 scale): high for crisp edges and
    texture, low for blur. Compare generated with real as a ratio (1 = as sharp as the real game)."""
    x = frames.astype(np.float64)
    luma = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]  # (T, H, W)
    lap = (luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:] - 4 * luma[:, 1:-1, 1:-1])
    return float(lap.reshape(len(x), -1).var(1).mean())


def frame_change(clips: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (0..255) of clips (N, T, H, W, 3) or one clip (T, ...):
    generated / real above 1 is shimmer, below 1 a world that moves less than the game."""
    x = clips.astype(np.float32)
    return float(np.abs(np.diff(x, axis=-4)).mean())
