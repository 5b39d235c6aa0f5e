"""Choose sampler settings by measurement: open-loop fidelity on held-out dataset clips per setting.

    python -m worldsim.sampler_sweep --world checkpoints/carracing.safetensors --data data/carracing \\
        --steps 1,2,4,8 --guidance 1,2 --context-level 0.1

For each setting: PSNR at horizons 1, 4, 16 and 32 frames after an 8-frame real context
(held-out episodes, their real actions), the copy-last-frame baseline, the mean
absolute change between the last generated frames (noise shows up as a large change), and the
key response from the same contexts (``worldsim.metrics.response``: every action held ``--response-frames``
frames; ``key_spread`` between actions, ``noise_spread`` between two sampling seeds). PSNR alone
favours settings that keep the previous frame and ignore the keys: read both.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

import numpy as np

from worldsim.data.dataset import EpisodeDataset, in_split
from worldsim.metrics.image import psnr_frames
from worldsim.metrics.response import action_response
from worldsim.world import load_world


def heldout_clips(data: EpisodeDataset, n: int, length: int, skip: int, heldout_every: int = 10):
    """n clips (frames, actions) of ``length`` frames from distinct held-out episodes."""
    refs = [r for r in data.refs if in_split(r.index, "heldout", heldout_every) and r.length >= skip + length]
    if not refs:
        raise ValueError(f"{data.root}: no held-out episode of {skip + length} frames")
    picked = [refs[i] for i in np.linspace(0, len(refs) - 1, min(n, len(refs))).round().astype(int)]
    clips = [data.read(r, skip, skip + length, fields=("frames", "actions")) for r in picked]
    return np.stack([c["frames"] for c in clips]), np.stack([c["actions"] for c in clips])


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m worldsim.sampler_sweep", description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True)
    p.add_argument("--data", required=True, help="the dataset folder the world was trained on (held-out episodes)")
    p.add_argument("--steps", default="1,2,4,8")
    p.add_argument("--guidance", default="1")
    p.add_argument("--context-level", default="0.1")
    p.add_argument("--start-level", default="1.0")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--horizon", type=int, default=32)
    p.add_argument("--skip", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-every", type=int, default=10, help="the training run's held-out split (every Nth episode)")
    p.add_argument("--response-frames", type=int, default=16, help="frames each key is held (0: skip the key response)")
    args = p.parse_args(argv)
    world = load_world(args.world)
    frames, actions = heldout_clips(EpisodeDataset(args.data), args.clips, args.context + args.horizon, args.skip,
                                      args.heldout_every)
    c, hs = args.context, [h for h in (1, 4, 16, 32, 64) if h <= args.horizon]
    rows = []
    settings = itertools.product([int(x) for x in args.steps.split(",")], [float(x) for x in args.guidance.split(",")],
                                 [float(x) for x in args.context_level.split(",")],
                                 [float(x) for x in args.start_level.split(",")])
    for steps, guidance, level, start in settings:
        sampler = replace(world.sampler, steps=steps, guidance=guidance, context_level=level, start_level=start)
        sim = world.simulator(len(frames), sampler, seed=args.seed)
        gen = sim.rollout(frames[:, :c], actions[:, :c], actions[:, c : c + args.horizon])
        row = {"steps": steps, "guidance": guidance, "context_level": level, "start_level": start}
        for h in hs:
            row[f"psnr@{h}"] = float(psnr_frames(gen[:, h - 1], frames[:, c + h - 1]).mean())
            row[f"copy@{h}"] = float(psnr_frames(frames[:, c - 1], frames[:, c + h - 1]).mean())
        row["change_last"] = float(np.abs(np.diff(gen[:, -4:].astype(np.float32), axis=1)).mean())
        row["real_change"] = float(np.abs(np.diff(frames[:, -4:].astype(np.float32), axis=1)).mean())
        if args.response_frames > 0:
            r = action_response(world, frames[:, :c], actions[:, :c], args.response_frames, args.seed, sampler)
            row["key_spread"], row["noise_spread"] = r["action_spread"], r["seed_spread"]
        rows.append(row)
        print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


if __name__ == "__main__":
    main()
