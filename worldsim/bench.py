"""Benchmarks that print figures (never asserted in tests).

    python -m worldsim.bench [--vae runs/carracing/vae.safetensors] [--threads N] [--iters N] [--json out.json]

Now: streaming VAE decode of one frame (the part of every interactive step that
turns the new latent frame into pixels), p50 / p99 in ms, and encode of a
one-frame clip. Later issues add the world model, the vector env and training.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from .models.causal_conv import StreamCache
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m worldsim.bench", description=__doc__.splitlines()[0])
    p.add_argument("--vae", help="a VAE checkpoint; default: the default VAE config with random weights")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--json", help="also write the results here")
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
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
