"""``python train.py stage=agent_eval``: an agent trained in a world drives the REAL game.

On held-out tracks (seeds ``seed`` .. ``seed + episodes - 1``; the data's tracks are hashed from
``collect.seed``), the agent plays the real env through its world's VAE (:class:`~envs.agent.in_game.RealAgentEnv`)
and is scored by the real game's reward. Next to it, on the same tracks: a random policy (same action
repeat), the data-collection driver (privileged: it reads the track), any other agent files (``compare``,
e.g. one trained in the real game), and the return the world predicts for the agent in the world itself —
where the two differ, the agent exploits the world or the world's reward is off.
Writes ``out/report.json`` and ``out/returns.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.agent.in_game import RealAgentEnv
from envs.agent.in_world import AgentWorlds
from envs.agent.network import Agent, load_agent
from envs.agent.record import check_record_target, check_writable, record_episodes
from envs.agent.view import sees_through
from envs.evaluation.heads import reward_on_traces
from envs.games.source import has_driver, source_game
from envs.worldenv.core import WorldCore
from worldsim.checkpoint import CheckpointError
from worldsim.engine.sampler import check_steps
from worldsim.integrity import write_json
from worldsim.shipped import checkpoints_dir
from worldsim.world import load_world, world_path

BASELINES = ("random", "driver")


@dataclass
class AgentEvalConfig:
    agent: str | None = None
    """The agent file (default: the run's)."""
    episodes: int = 20
    seed: int = 500_000_000
    """First track seed."""
    deterministic: bool = True
    """Take the most likely action (False: sample from the policy)."""
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    compare: list[str] = field(default_factory=list)
    """More agent files scored on the same tracks."""
    world_episodes: int = 8
    """Episodes of the agent in its own world (predicted return); 0 skips."""
    world_sampling_steps: int | None = None
    """Sampling steps of the world in the predicted return (1-8; default: the world's own sampler), e.g. to see
    what a world would pay the agent if each frame were sampled as a step-distilled world's teacher makes it."""
    max_frames: int | None = None
    """Frames per real episode (default: the world's source limit, 1000 for CarRacing)."""
    reward_check_episodes: int = 4
    """The world's reward head on this many of the agent's real episodes, against the real rewards."""
    record: str | None = None
    """A dataset folder: the agent's real episodes are added there as episode shards (``envs/agent/record.py``),
    to train its world on the states the agent reaches (the world's data folder, or a new one)."""
    out: str = "runs/agent_eval"

    def validate(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"agent_eval.episodes must be at least 1, got {self.episodes}")
        if self.world_sampling_steps is not None:
            check_steps(self.world_sampling_steps, "agent_eval.world_sampling_steps")
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"unknown agent_eval.baselines {unknown}; known: {list(BASELINES)}")


def _summary(returns: list[float], **extra) -> dict[str, Any]:
    r = np.asarray(returns, np.float64)
    return {"mean": float(r.mean()), "std": float(r.std()), "episodes": len(r), "returns": [float(x) for x in r],
            **extra}


def compare_labels(files: list[str]) -> list[str]:
    """The report's key of each compared agent: its file name, or the path as given where two compared files share a
    name (round folders all hold ``<world>-agent.safetensors``) or a name is a baseline's; each result is kept."""
    names = [str(f) for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"agent_eval.compare names {', '.join(twice)} more than once; name each agent file once")
    stems = [Path(f).stem for f in files]
    return [stem if stems.count(stem) == 1 and stem not in BASELINES else str(f) for f, stem in zip(files, stems, strict=True)]


def _world_for(agent: Agent, world_file: str | Path | None, device) -> Any:
    """The world whose VAE the agent sees through: the one named, else the file it was trained in, else the
    shipped world of its name; refused when its VAE is not the agent's."""
    candidates = [world_file] if world_file else recorded_world_paths(agent.world.get("file"))
    last = None
    for c in candidates:
        try:
            path = Path(c) if c else world_path(agent.world["name"])
            world = load_world(path, device)
        except (CheckpointError, FileNotFoundError, KeyError) as e:
            last = e
            continue
        if not sees_through(agent.world, world):
            last = ValueError(f"{path} sees the game through another VAE than the agent {agent.path} learned with; "
                              f"give its world: agent.world=PATH (it learned in {agent.world.get('file')})")
            if world_file:
                raise last
            continue
        return world, path
    raise ValueError(f"no world file for the agent {agent.path}: {last}; give it with agent.world=PATH")


def recorded_world_paths(file: str | None) -> list[Path | None]:
    """Where to look for the world an agent names (None: the shipped world of its name): the recorded file
    relative to here and to the project's root (agents record it relative to the project), then the shipped
    world; an absolute path (older agents recorded the path of the machine they were trained on) only after
    the shipped world. Every candidate is still checked against the agent's VAE id."""
    if not file:
        return [None]
    p = Path(file)
    if p.is_absolute():
        return [None, p]
    return [p, checkpoints_dir().parent / p, None]


def _episode_line(label: str, i: int, n: int, seed: int, total: float, steps: str, t0: float) -> None:
    """One line per finished episode: a scoring run takes minutes, and says how far it is."""
    if label:
        print(f"{label}: episode {i + 1}/{n} (seed {seed}): return {total:.1f}, {steps}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)


def play_real(policy, world, agent_cfg, seeds: list[int], max_frames: int | None, repeat: int,
              traces: int = 0, observe: bool = True, label: str = "") -> tuple[list[float], list[dict]]:
    """Real returns of ``policy(obs, env) -> action`` on these track seeds, and the frames, actions and rewards
    of the first ``traces`` episodes. ``observe=False``: the policy does not look (no encoding). A ``label``
    prints a line per episode."""
    env = RealAgentEnv(world, agent_cfg, max_frames, observe)
    returns, kept = [], []
    try:
        for i, s in enumerate(seeds):
            t0 = time.perf_counter()
            env.record = i < traces
            obs, _ = env.reset(seed=int(s))
            total, done, decisions = 0.0, False, 0
            while not done:
                obs, r, term, trunc, _ = env.step(policy(obs, env))
                total += r
                decisions += 1
                done = term or trunc
            returns.append(total)
            _episode_line(label, i, len(seeds), int(s), total, f"{decisions} decisions", t0)
            if env.record:
                kept.append({**{k: np.asarray(v) for k, v in env.trace.items()}, "terminated": bool(term),
                             "truncated": bool(trunc)})
    finally:
        env.close()
    return returns, kept


def play_driver(world, seeds: list[int], max_frames: int | None, label: str = "") -> list[float]:
    """The data-collection driver (every frame, privileged) on these tracks (a ``label``: a line per episode)."""
    source = dict(world.source, policy="driver")
    if max_frames is not None:
        source["max_episode_steps"] = int(max_frames)
    sw = source_game(source)
    env = sw.make_env()
    out = []
    try:
        for i, s in enumerate(seeds):
            t0 = time.perf_counter()
            policy = sw.make_policy(np.random.default_rng([int(s), 1]), env)
            obs, _ = env.reset(seed=int(s))
            policy.reset(env)
            total, done, frames = 0.0, False, 0
            while not done:
                obs, r, term, trunc, _ = env.step(policy(obs))
                total += float(r)
                frames += 1
                done = term or trunc
            out.append(total)
            _episode_line(label, i, len(seeds), int(s), total, f"{frames} frames", t0)
    finally:
        env.close()
    return out


def predicted_in_world(agent: Agent, world_file: Path, episodes: int, seed: int, deterministic: bool,
                       device, agent_frames: int | None = None, sampling_steps: int | None = None) -> list[float]:
    """The agent in its world, ``episodes`` worlds at once, whole episodes (``agent_frames``, default the real
    game's limit) from the world's start contexts, sampled in ``sampling_steps`` (default the world's): the
    return the world predicts for each."""
    train = agent.meta.get("train", {})
    core = WorldCore(episodes, world_file, device=str(device), sampling_steps=sampling_steps,
                     dtype=train.get("dtype", "auto"), observation="latents", window=train.get("window"))
    frames = int(agent_frames or core.world.episode_limit)
    worlds = AgentWorlds(core, agent.cfg, frames, seed=seed)  # from the world's start contexts, like a real episode
    obs = worlds.reset()
    rng = None if deterministic else np.random.default_rng(seed)
    returns: list[float | None] = [None] * episodes
    while any(r is None for r in returns):
        obs, _, term, trunc, infos = worlds.step(agent.net.act(obs, rng), autoreset=False)
        for i in np.flatnonzero(term | trunc):
            if returns[i] is None:
                returns[i] = infos[i]["episode"]["r"]
    return [float(r) for r in returns]


def evaluate_agent(agent_file: str | Path, cfg: AgentEvalConfig, world_file: str | Path | None = None,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    cfg.validate()
    started = time.perf_counter()
    agent = load_agent(agent_file, device)
    world, wpath = _world_for(agent, world_file, device)
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    repeat = agent.cfg.action_repeat
    rng = np.random.default_rng(cfg.seed)
    # Every target checked before the first episode is played: nothing found wrong after minutes of play.
    labels = compare_labels(cfg.compare)  # a file named twice is refused before anything is played
    others = [(other, load_agent(other, device)) for other in cfg.compare]
    others = [(other, a, _world_for(a, None, device)[0]) for other, a in others]
    if cfg.record:
        check_record_target(cfg.record, world.source, str(agent_file), seeds)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"agent_eval.out={out} is a file; give a folder")
    check_writable(out, "agent_eval.out")

    def agent_policy(a: Agent):
        pick = None if cfg.deterministic else np.random.default_rng(cfg.seed + 1)
        return lambda obs, env: int(a.net.act(obs[None], pick)[0])

    report: dict[str, Any] = {"agent_file": str(agent_file), "world_file": str(wpath), "track_seeds": seeds,
                              "action_repeat": repeat, "deterministic": cfg.deterministic,
                              "agent_decisions_in_world": agent.meta.get("decisions"),
                              "agent_world_frames": agent.meta.get("world_frames")}
    returns, traces = play_real(agent_policy(agent), world, agent.cfg, seeds, cfg.max_frames, repeat,
                                cfg.episodes if cfg.record else cfg.reward_check_episodes, label="agent (real)")
    report["agent"] = _summary(returns)
    report["agent"]["world_reward_on_real_episodes"] = reward_on_traces(world, traces[: cfg.reward_check_episodes])
    if cfg.world_episodes:
        t0 = time.perf_counter()
        pred = predicted_in_world(agent, wpath, cfg.world_episodes, cfg.seed, cfg.deterministic, device, cfg.max_frames,
                                  cfg.world_sampling_steps)
        steps = {} if cfg.world_sampling_steps is None else {"sampling_steps": cfg.world_sampling_steps}
        report["agent"]["predicted_in_world"] = _summary(pred, **steps)
        print(f"agent (in its world): {len(pred)} episodes, predicted return {np.mean(pred):.1f} ± "
              f"{np.std(pred):.1f}, {time.perf_counter() - t0:.0f} s", flush=True)
    baselines: dict[str, Any] = {}
    n = int(world.action_space.n)
    if "random" in cfg.baselines:
        baselines["random"] = _summary(play_real(lambda obs, env: int(rng.integers(n)), world, agent.cfg, seeds,
                                                 cfg.max_frames, repeat, observe=False, label="random")[0])
    if "driver" in cfg.baselines and has_driver(str(world.source.get("kind")), str(world.source.get("env_id", ""))):
        baselines["driver"] = _summary(play_driver(world, seeds, cfg.max_frames, label="driver"), privileged=True)
    for (other, a, w2), label in zip(others, labels, strict=True):
        baselines[label] = _summary(play_real(agent_policy(a), w2, a.cfg, seeds, cfg.max_frames,
                                              a.cfg.action_repeat, label=label)[0],
                                    file=str(other), decisions=a.meta.get("decisions"),
                                    trained_in=a.meta.get("trained_in", "world"))
    report["baselines"] = baselines
    report["seconds"] = time.perf_counter() - started
    _write_report(out, report)  # before the episodes are recorded: the scores are kept whatever follows
    _plot(report, out / "returns.png")
    if cfg.record:
        shards = record_episodes(cfg.record, traces, seeds, world.source, str(agent_file))
        report["recorded"] = {"folder": cfg.record, "episodes": len(traces), "shards": [p.name for p in shards],
                              "frames": int(sum(len(t["frames"]) for t in traces))}
        _write_report(out, report)
        print(f"recorded {len(traces)} real episodes of the agent into {cfg.record} ({', '.join(p.name for p in shards)})")
    return report


def _write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)


def _plot(report: dict[str, Any], png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [("agent (real)", report["agent"])]
    if "predicted_in_world" in report["agent"]:
        rows.append(("agent (world's prediction)", report["agent"]["predicted_in_world"]))
    rows += list(report["baselines"].items())
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 1, 3.2))
    ax.bar(range(len(rows)), [r["mean"] for _, r in rows], yerr=[r["std"] for _, r in rows], capsize=4)
    ax.set_xticks(range(len(rows)), [name for name, _ in rows], rotation=20, ha="right")
    ax.set_ylabel("return")
    ax.axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
