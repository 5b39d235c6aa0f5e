"""Benchmarks that print figures (never asserted in tests).

    python -m worldsim.bench [--vae runs/carracing/vae.safetensors] [--threads N] [--iters N] [--json out.json]

Figures: streaming VAE decode of one frame (the part of every interactive step
that turns the new latent frame into pixels) and encode of a one-frame clip;
with ``--engine``: the DiT step with the windowed KV cache vs recomputing the
whole window per frame, and the per-frame time at frame 50 vs frame N of one
rollout (with process memory at both).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch

from .engine.kv_cache import KVCache
from .models.causal_conv import StreamCache
from .models.dit import DiT, DiTConfig
from .models.vae import CausalVAE, VAEConfig, load_vae


def _percentiles(times: list[float]) -> dict[str, float]:
    t = sorted(times)
    return {"p50_ms": 1e3 * t[len(t) // 2], "p99_ms": 1e3 * t[min(len(t) - 1, int(0.99 * len(t)))]}


@torch.inference_mode()
def bench_vae(vae: CausalVAE, iters: int = 200, warmup: int = 20) -> dict[str, float]:
    cfg = vae.cfg
    z = torch.randn(1, 1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    cache = StreamCache()
    for _ in range(warmup):
        vae.decode(z, cache)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        vae.decode(z, cache)
        times.append(time.perf_counter() - t)
    x = torch.zeros(1, 1, 3, cfg.image_size, cfg.image_size)
    enc = []
    for i in range(iters // 4 + warmup):
        t = time.perf_counter()
        vae.encode(x)
        if i >= warmup:
            enc.append(time.perf_counter() - t)
    out = {f"stream_decode_{k}": v for k, v in _percentiles(times).items()}
    out.update({f"encode_frame_{k}": v for k, v in _percentiles(enc).items()})
    return out


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@torch.inference_mode()
def bench_engine(cfg: DiTConfig, steps: int = 2, long: int = 5000, iters: int = 30) -> dict[str, float]:
    """One world, random weights (speed does not depend on them). A frame = ``steps`` denoising calls + 1 commit."""
    if long <= 50:
        raise ValueError(f"the rollout must pass frame 50 to compare with it; got --frames {long}")
    torch.manual_seed(0)
    dit = DiT(cfg, {"type": "Discrete", "n": 5, "start": 0}).eval()
    c, w = cfg, cfg.window
    cache = KVCache(c.depth, 1, c.heads, c.head_dim, w, c.tokens_per_frame)
    z = torch.randn(1, 1, c.latent_channels, c.latent_size, c.latent_size)
    a, lv = torch.zeros(1, 1, dtype=torch.long), torch.full((1, 1), 0.5)

    def frame(t: int, kv: KVCache) -> float:
        tt = torch.tensor([t])
        start = time.perf_counter()
        for _ in range(steps):
            dit.step(z, lv, a, tt, kv)
        dit.step(z, lv, a, tt, kv, commit=True)
        return time.perf_counter() - start

    # One rollout to frame `long`, keeping a copy of its cache at frame 50. The two
    # states are then timed interleaved, so a machine that drifts in speed over the
    # minutes of the rollout does not bias the ratio.
    for t in range(long):
        if t == 50:
            early_cache, rss_early = copy.deepcopy(cache), _rss_mib()
        frame(t, cache)
    rss_late = _rss_mib()
    early, late = [], []
    for i in range(iters):
        early.append(frame(50 + i, early_cache))
        late.append(frame(long + i, cache))
    t = long + iters
    # Recompute: every call runs the whole window of W frames (no cache).
    zw, lw, aw = z.expand(1, w, -1, -1, -1), lv.expand(1, w), a.expand(1, w)
    recompute = []
    for _ in range(max(3, iters // 5)):
        start = time.perf_counter()
        for _ in range(steps + 1):
            dit(zw, lw, aw, start=t)
        recompute.append(time.perf_counter() - start)
    e, l_, r = (sorted(x)[len(x) // 2] for x in (early, late, recompute))
    return {
        "dit_params_M": sum(p.numel() for p in dit.parameters()) / 1e6,
        "frame_ms_at_50": 1e3 * e, f"frame_ms_at_{long}": 1e3 * l_, "late_over_early": l_ / e,
        "rss_mib_at_50": rss_early, f"rss_mib_at_{long}": rss_late,
        "recompute_window_frame_ms": 1e3 * r, "recompute_over_cached": r / e,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m worldsim.bench", description=__doc__.splitlines()[0])
    p.add_argument("--vae", help="a VAE checkpoint; default: the default VAE config with random weights")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--engine", action="store_true", help="also benchmark the DiT step (KV cache vs recompute, frame 50 vs N)")
    p.add_argument("--frames", type=int, default=5000, help="rollout length for the late-frame timing")
    p.add_argument("--dit", default="dim=192,depth=6,heads=4,window=16",
                   help="DiT config as key=value pairs (default: the default world's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    vae = load_vae(args.vae)[0] if args.vae else CausalVAE(VAEConfig()).eval()
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "vae": args.vae or "default config (random weights)",
        **bench_vae(vae, args.iters),
    }
    if args.engine:
        kw = {k: type(getattr(DiTConfig, k))(v) for k, v in (x.split("=") for x in args.dit.split(",") if x)}
        result["dit"] = args.dit
        result.update(bench_engine(DiTConfig(**kw), long=args.frames, iters=max(5, args.iters // 10)))
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
