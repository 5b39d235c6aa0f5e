"""The loop's phase (a): the agent plays the real game for data, a little exploration mixed in.

Everything is a function of the agent file and the seeds: episode i is played on seed ``first + i`` with
its own random stream ``(first, i)`` for sampled actions and exploration, so a round's episodes are rebuilt
exactly by playing the same agent on the same seeds again (on the same machine and thread count: the VAE and
the agent run in float32 on the CPU). :func:`shard_sums` names the result, to compare a rebuild with it.
"""

from __future__ import annotations

import numpy as np
import torch

from envs.agent.in_game import RealAgentEnv
from envs.agent.network import Agent
from worldsim.world import World


def play_for_data(agent: Agent, world: World, frames: int, first_seed: int, explore: float, sample: bool,
                  max_frames: int | None = None) -> tuple[list[dict], list[int]]:
    """Whole real episodes until at least ``frames`` frames -> (traces as ``RealAgentEnv`` keeps them, with
    ``terminated`` / ``truncated``; their seeds)."""
    env = RealAgentEnv(world, agent.cfg, max_frames)
    env.record = True
    n = int(env.action_space.n)
    traces, seeds, total = [], [], 0
    try:
        while total < frames:
            seed = first_seed + len(seeds)
            rng = np.random.default_rng([first_seed, len(seeds)])
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                with torch.no_grad():
                    logits, _ = agent.net(torch.as_tensor(obs[None], dtype=torch.float32))
                if rng.random() < explore:
                    action = int(rng.integers(n))
                elif sample:
                    p = torch.softmax(logits[0].double(), -1).numpy()
                    action = int(rng.choice(n, p=p / p.sum()))
                else:
                    action = int(logits[0].argmax())
                obs, _, term, trunc, _ = env.step(action)
                done = term or trunc
            traces.append({**{k: np.asarray(v) for k, v in env.trace.items()}, "terminated": bool(term),
                           "truncated": bool(trunc)})
            seeds.append(seed)
            total += len(env.trace["frames"])
            print(f"play for data: episode {len(seeds)} (seed {seed}): return {sum(env.trace['rewards']):.1f}, "
                  f"{len(env.trace['frames'])} frames; {total} of {frames}", flush=True)
    finally:
        env.close()
    return traces, seeds


def shard_sums(paths) -> dict[str, str]:
    """{shard file name: the checksums entry of its metadata}: equal for equal episodes (the shard format
    stores no time or machine), so a rebuilt round's data can be compared with the first."""
    import hashlib

    from safetensors import safe_open

    out = {}
    for p in paths:
        with safe_open(str(p), framework="np") as f:
            sums = (f.metadata() or {}).get("checksums", "")
        out[p.name] = hashlib.sha256(sums.encode()).hexdigest()[:16]
    return out
