"""Collect episode shards from a source world with several worker processes, resumably.

Episode ``i`` always gets the same seeds (from the base seed and ``i``), and a
shard is only ever written whole (atomically), so re-running continues where the
last run stopped: episodes already on disk are skipped, a shard a killed worker
left half-written is discarded and redone, nothing is duplicated.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.games.source import SourceConfig, SourceGame
from worldsim.data.dataset import EpisodeDataset, source_value
from worldsim.data.episodes import DatasetError, Episode, write_shard
from worldsim.spaces import action_array_spec, null_action


@dataclass
class CollectConfig:
    """How much data to record and how (``collect.*`` overrides)."""

    out: str = "data/carracing"
    """Dataset folder; re-running with the same folder resumes."""
    frames: int = 100_000
    """Target size in frames: collection stops once the folder holds at least this many."""
    workers: int = 2
    """Worker processes, each running its own env."""
    episodes_per_shard: int = 2
    """Episodes per shard file (the unit of work and of atomic writes)."""
    seed: int = 0
    """Base seed; episode i's env and policy seeds derive from (seed, i)."""
    progress: bool = True
    """Show a progress bar."""


def episode_seed(base: int, index: int) -> int:
    return int(np.random.SeedSequence([base, index]).generate_state(1)[0])


def run_episode(game: SourceGame, env, index: int, base_seed: int) -> Episode:
    """Play one episode of the data policy; arrays follow the shard alignment (actions[t] led to frames[t])."""
    seed = episode_seed(base_seed, index)
    policy = game.make_policy(np.random.default_rng([base_seed, index, 1]), env)
    obs, _ = env.reset(seed=seed)
    policy.reset(env)
    shape, dtype = action_array_spec(env.action_space)
    frames, actions = [obs], [null_action(env.action_space)]
    rewards, terms, truncs = [0.0], [False], [False]
    while True:
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        actions.append(np.asarray(action, dtype=dtype).reshape(shape))
        rewards.append(float(reward))
        terms.append(bool(terminated))
        truncs.append(bool(truncated))
        if terminated or truncated:
            break
    return Episode(
        np.stack(frames),
        np.stack(actions),
        np.asarray(rewards, np.float32),
        np.asarray(terms),
        np.asarray(truncs),
        info={"index": index, "seed": seed, "return": float(np.sum(rewards))},
    )


def shard_name(indices: list[int]) -> str:
    return f"ep{indices[0]:07d}-{indices[-1]:07d}.safetensors"


def _exit_with_parent(parent: int) -> None:
    """Worker start-up: exit as soon as the collecting process is gone (even killed with SIGKILL), instead of
    recording on as an orphan."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _collect_shard(source_cfg: SourceConfig, indices: list[int], base_seed: int, out: str) -> tuple[list[int], int]:
    """Worker: play the episodes ``indices`` and write them as one shard. Returns (indices, frames)."""
    import torch

    torch.set_num_threads(1)  # frames are resized with torch; one thread per worker
    game = SourceGame(source_cfg)
    env = game.make_env()
    try:
        episodes = [run_episode(game, env, i, base_seed) for i in indices]
        write_shard(Path(out) / shard_name(indices), episodes, game.describe(env) | {"seed": base_seed})
    finally:
        env.close()
    return indices, sum(len(e) for e in episodes)


def describe_source(source_cfg: SourceConfig) -> dict:
    game = SourceGame(source_cfg)
    env = game.make_env()
    try:
        return game.describe(env)
    finally:
        env.close()


def collect(source_cfg: SourceConfig, cfg: CollectConfig) -> EpisodeDataset:
    """Grow ``cfg.out`` to at least ``cfg.frames`` frames and return the dataset."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp*"):  # half-written shards of a killed run
        stale.unlink()
    data = EpisodeDataset(out)
    source = describe_source(source_cfg)
    if data.shards:
        old = data.source
        for key in ("env_id", "frame_size", "action_space", "policy", "frame_skip"):
            if source_value(old, key) != source_value(source, key):
                raise DatasetError(
                    f"{out} holds {key}={source_value(old, key)!r} data, this run records {key}={source.get(key)!r}; "
                    "use another data_dir=... folder"
                )
        if old.get("seed") != cfg.seed:
            raise DatasetError(f"{out} was collected with collect.seed={old.get('seed')}; resume with the same seed")
    done, total = data.indices(), data.num_frames
    if total >= cfg.frames:
        print(f"{out}: {total} frames in {len(data)} episodes already, target {cfg.frames}: nothing to do")
        return data

    def chunks():
        i, chunk = 0, []
        while True:
            if i not in done:
                chunk.append(i)
                if len(chunk) == cfg.episodes_per_shard:
                    yield chunk
                    chunk = []
            i += 1

    todo = chunks()
    est = data.num_frames / len(data) if len(data) else source_cfg.max_episode_steps  # frames per episode
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.frames, initial=total, unit="frame", desc=f"collect {source_cfg.name}", smoothing=0.1)
    start, new_frames = time.perf_counter(), 0
    # Fresh interpreters (spawn): no forked torch thread pools. A worker that dies
    # breaks the pool with an error instead of hanging the run.
    pool = ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent,
                               initargs=(os.getpid(),))
    pending: dict = {}
    try:
        while True:
            while len(pending) < cfg.workers and total + sum(map(len, pending.values())) * est < cfg.frames:
                c = next(todo)
                pending[pool.submit(_collect_shard, source_cfg, c, cfg.seed, str(out))] = c
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                del pending[fut]
                _, n = fut.result()  # re-raises a worker's exception
                total += n
                new_frames += n
                if bar is not None:
                    bar.update(n)
    except BaseException:
        # Finished shards are on disk; in-flight ones are redone by the next run.
        for fut in pending:
            fut.cancel()
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    secs = time.perf_counter() - start
    print(f"{out}: +{new_frames} frames in {secs:.1f} s ({new_frames / max(secs, 1e-9):.0f} frames/s), {total} in all")
    return EpisodeDataset(out)
