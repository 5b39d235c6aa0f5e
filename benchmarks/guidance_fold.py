"""A guided step with the frame's two variants (with and without its action) in one DiT call against the same step
in two calls, alternated step by step in one process so that a shared VM's drift hits both alike.

    python benchmarks/guidance_fold.py checkpoints/boxing.safetensors --batches 1,16 --steps 300,30

Prints the median step time of each way and their ratio per batch size (decode on, as play.py and the pixel
Gymnasium env step; ``--latents`` skips the decoder, as the agent's batched world does). Used to set
``worldsim.engine.simulator.FOLD_GUIDANCE_MAX_BATCH`` (BENCHMARKS.md, 2026-12-08).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from worldsim.world import load_world


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("world")
    p.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    p.add_argument("--steps", default="300,30", help="timed steps of each way per batch size (comma-separated)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the world's, if not 1; else 2)")
    p.add_argument("--latents", action="store_true", help="skip the decoder")
    args = p.parse_args()
    world = load_world(args.world, "cpu", torch.float32)
    g = args.guidance or (world.sampler.guidance if world.sampler.guidance != 1.0 else 2.0)
    sampler = world.sampler.override(guidance=g)
    for b, n in zip([int(x) for x in args.batches.split(",")], [int(x) for x in args.steps.split(",")], strict=True):
        sims = {}
        for fold in (True, False):
            sim = world.simulator(b, sampler, seed=0, fold_guidance=fold)
            sim.prefill(world.context_frames[:1].repeat(b, 0), world.context_actions[:1].repeat(b, 0))
            sims[fold] = sim
        a = torch.zeros(b, dtype=torch.long)
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(n + 5):
            for fold in ((True, False) if i % 2 else (False, True)):
                t0 = time.perf_counter()
                sims[fold].step(a, decode=not args.latents)
                if i >= 5:
                    times[fold].append((time.perf_counter() - t0) * 1e3)
        one, two = statistics.median(times[True]), statistics.median(times[False])
        print(f"B={b} guidance {g}{' latents' if args.latents else ''}: one call {one:.1f} ms, two calls {two:.1f} ms "
              f"(p50 of {n} steps each, alternated): ratio {one / two:.2f}", flush=True)


if __name__ == "__main__":
    main()
