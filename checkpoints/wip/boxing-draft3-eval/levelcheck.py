"""Ad-hoc check of 2026-12-06 night (run from the repository root): mean frame change a step and the share of
frames with both boxers, over 150 random keys from env.reset(seed) for seeds 1 and 2, of the world file named on
the command line and of boxing-gd (its two-call teacher). Second argument: torch threads (default 2); third: a
sampler start level for both (the first try's check of the teacher started at 0.5 vs 0.8).

    python checkpoints/wip/boxing-draft3-eval/levelcheck.py runs/boxing-draft3-post/boxing-draft3.safetensors
"""

import sys

import numpy as np
import torch

from envs.games.objects.boxing import boxer_rate
from envs.worldenv.env import WorldModelEnv

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
start = float(sys.argv[3]) if len(sys.argv) > 3 else None
acts = np.random.default_rng(0).integers(0, 18, 150)
for path in (sys.argv[1], "checkpoints/wip/boxing-gd.safetensors"):
    changes, frames = [], []
    for seed in (1, 2):
        env = WorldModelEnv(path, device="cpu")
        if start is not None:
            env.core.sim.sampler.start_level = start
        obs, _ = env.reset(seed=seed)
        prev = obs.astype(np.float32)
        for a in acts:
            obs, *_ = env.step(int(a))
            changes.append(np.abs(obs.astype(np.float32) - prev).mean())
            prev = obs.astype(np.float32)
            frames.append(obs)
    print(path, "mean frame change", round(float(np.mean(changes)), 3), "boxers",
          round(float(boxer_rate(np.stack(frames))), 2), flush=True)
