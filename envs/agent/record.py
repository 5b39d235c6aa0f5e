"""The agent's real episodes as training data for its world (``agent_eval.record=FOLDER``).

A world learns the states its data policy reaches. An agent trained in it finds others — Boxing's agent hugs
the opponent, which the scripted driver never did — and there the world's reward head is a guess the agent
exploits (checkpoints/README.md). Dreamer, IRIS and DIAMOND close that loop by collecting real data with the
agent and training the world on it again; this writes the agent's real episodes, as ``stage=agent_eval`` plays
them, into an episode-shard folder: a new one, or the world's own data folder, numbered after its last episode
so that nothing there is touched, and the held-out split (every ``heldout_every``-th index) takes its share.
``stage=dynamics`` with ``dynamics.train.init_from=THE_WORLD`` (``train_only=heads`` to refit the reward and
termination heads only) then trains on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worldsim.data.dataset import EpisodeDataset
from worldsim.data.episodes import DatasetError, Episode, write_shard

EPISODES_PER_SHARD = 2


def trace_episode(trace: dict[str, Any], index: int, seed: int, agent_file: str) -> Episode:
    """One recorded real episode (``RealAgentEnv.trace`` plus how it ended) -> an :class:`Episode`
    (frames[0] the reset frame, actions[t] and rewards[t] what led to frames[t])."""
    frames = np.asarray(trace["frames"], np.uint8)
    t = len(frames)
    terminated, truncated = np.zeros(t, bool), np.zeros(t, bool)
    terminated[-1], truncated[-1] = bool(trace["terminated"]), bool(trace["truncated"])
    return Episode(frames, np.asarray(trace["actions"]), np.asarray(trace["rewards"], np.float32), terminated,
                   truncated, info={"index": index, "seed": int(seed), "policy": "agent", "agent_file": agent_file})


def record_episodes(folder: str | Path, traces: list[dict], seeds: list[int], source: dict[str, Any],
                    agent_file: str, provenance: dict[str, Any] | None = None) -> list[Path]:
    """Add the agent's real episodes (``traces``, played on ``seeds``) to ``folder`` as new shards, after the
    folder's last episode index. ``source``: the world's source description (its real env); ``provenance``:
    more to record of where they came from (the loop's round). -> shards written."""
    folder = Path(folder)
    first = 0
    if folder.is_dir() and any(p for p in folder.glob("*.safetensors") if not p.name.startswith(".")):
        data = EpisodeDataset(folder, allow_mixed=True)
        old = data.source
        for key in ("env_id", "frame_size", "action_space"):
            if old.get(key) != source.get(key):
                raise DatasetError(f"{folder} holds {key}={old.get(key)!r} data, the agent plays {key}="
                                   f"{source.get(key)!r}; record into another folder (agent_eval.record=...)")
        first = max(data.indices(), default=-1) + 1
    folder.mkdir(parents=True, exist_ok=True)
    src = dict(source, policy="agent", provenance={"kind": "real", "policy": "agent", "agent_file": agent_file,
                                                   **(provenance or {})})
    written = []
    for s in range(0, len(traces), EPISODES_PER_SHARD):
        idx = list(range(first + s, first + min(s + EPISODES_PER_SHARD, len(traces))))
        path = folder / f"ep{idx[0]:07d}-{idx[-1]:07d}.safetensors"
        if path.exists():  # cannot happen after the last index, unless another run writes here too
            raise DatasetError(f"{path} exists already; record into another folder (agent_eval.record=...)")
        episodes = [trace_episode(traces[i - first], i, seeds[i - first], agent_file) for i in idx]
        written.append(write_shard(path, episodes, src))
    return written
