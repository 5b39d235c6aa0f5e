"""The loop's selection (``loop.select_episodes``): the agent a round trained goes on only where it drives the real
game at least as well as the agent the round started from, on real episodes of their own.

A few thousand PPO updates in a world that is wrong where the agent goes can lose real score (CarRacing's loop,
rounds 4-7 from one agent lineage: 529, 427, 453, 326 on the same 20 scoring tracks), and the agent that lost it
then plays the next round's data and starts its training. With a selection, the better of the two on the selection
tracks goes on (the round's scoring and the next round's play and training use it); the other stays in the round's
folder. Its episodes are on seeds of their own (neither the data's nor the scoring's) and count as real frames
used: they decide what trains on. An agent's selection returns are kept in ``select.json`` and read again when the
same agent is a candidate on the same seeds (the next round's starting agent), so each agent plays them once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from envs.agent.evaluation import play_real
from envs.agent.network import load_agent
from worldsim.world import load_world


def selection_returns(agent_file: str | Path, world_file: str | Path, seeds: list[int], max_frames: int | None,
                      device="cpu") -> dict:
    """The agent's most likely actions on these real seeds, seeing through ``world_file``'s VAE -> its mean, std,
    returns and the real frames played."""
    agent = load_agent(agent_file, device)
    world = load_world(world_file, device)
    t0 = time.perf_counter()
    returns, traces = play_real(lambda obs, env: int(agent.net.act(obs[None])[0]), world, agent.cfg, seeds,
                                max_frames, agent.cfg.action_repeat, traces=len(seeds), label="selection")
    r = np.asarray(returns, dtype=np.float64)
    return {"mean": float(r.mean()), "std": float(r.std()), "returns": [float(x) for x in r],
            "frames": int(sum(len(t["frames"]) for t in traces)), "minutes": (time.perf_counter() - t0) / 60}


def known_returns(record: dict | None, agent: str, seeds: list[int]) -> dict | None:
    """An agent's selection returns on these seeds as an earlier round's ``select.json`` recorded them, or None."""
    if not record or record.get("seeds") != seeds:
        return None
    return record.get("candidates", {}).get(agent)


def choose(candidates: dict[str, dict], new: str, old: str) -> str:
    """The agent that goes on: the new one unless its selection mean is below the old one's (a tie keeps the new)."""
    return old if candidates[new]["mean"] < candidates[old]["mean"] else new
