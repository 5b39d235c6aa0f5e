"""Ad-hoc check of 2026-12-06 (run from the repository root): how much the round-1 Boxing world's frames change a
step when its sampler starts each frame at its own start level (0.8) or at the draft level (0.5), beside the
one-call world distilled from it at 0.5 (runs/boxing-draft-post/boxing-draft.safetensors, not kept)."""

import numpy as np
import torch

from envs.games.objects.boxing import boxer_rate
from envs.worldenv.env import WorldModelEnv

torch.set_num_threads(1)
TEACHER = "checkpoints/wip/boxing-loop2/round-1/boxing.safetensors"
acts = np.random.default_rng(0).integers(0, 18, 150)
for label, path, start in (("teacher@0.8", TEACHER, 0.8), ("teacher@0.5", TEACHER, 0.5),
                           ("draft", "runs/boxing-draft-post/boxing-draft.safetensors", None)):
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
    print(label, "mean frame change", round(float(np.mean(changes)), 3), "boxers",
          round(float(boxer_rate(np.stack(frames))), 2), flush=True)
