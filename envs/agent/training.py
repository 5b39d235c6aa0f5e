"""``python train.py stage=agent``: PPO (Stable-Baselines3) trains an agent inside a world only.

Stable-Baselines3 is used because its PPO is well tested and maintained, and the world is adapted to its
VecEnv API (:func:`envs.agent.in_world.sb3_vec_env`) so N worlds step as one batch. The network is ours
(:class:`envs.agent.network.Trunk`, plugged in as the policy's features extractor with no further layers),
so the shipped agent file needs no RL library.

Run folder ``run_dir/agent/``: ``state.safetensors`` (network + optimizer + steps; written every
``save_every`` rollouts and when stopped, so a killed run resumes), ``agent_log.jsonl`` and
``returns.png`` (the return the world predicts per episode), and the agent file.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.agent.in_game import RealAgentEnv
from envs.agent.in_world import AgentWorlds, sb3_vec_env
from envs.agent.network import AgentConfig, AgentNet, load_agent, save_agent
from envs.agent.starts import data_starts
from envs.agent.view import sees_through, world_vae_id
from envs.worldenv.core import WorldCore
from worldsim.checkpoint import read_checkpoint
from worldsim.config import to_dict
from worldsim.shipped import checkpoints_dir
from worldsim.signals import signals_deferred
from worldsim.training.budget import UNLIMITED, Budget, BudgetReached
from worldsim.training.history import HISTORY, RunHistory, history_of
from worldsim.training.log import log_row
from worldsim.training.plot import plot_log
from worldsim.training.state import load_state, save_state
from worldsim.world import load_world


@dataclass
class AgentTrainConfig:
    """PPO in the world (``agent.train``)."""

    worlds: int = 64
    """Worlds stepped together (one batched model call per frame)."""
    timesteps: int = 100_000
    """Agent decisions in all worlds together; world frames = timesteps x action_repeat."""
    n_steps: int = 32
    """Decisions per world per rollout (a rollout is worlds x n_steps decisions)."""
    batch_size: int = 256
    epochs: int = 8
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_frames: int = 200
    """World frames per imagined episode (the horizon: short, from real starts; the real game's limit is 1000;
    the value of what lies beyond is bootstrapped)."""
    starts: str = "data"
    """Where imagined episodes start: ``data`` (real clips of the world's training data: envs/agent/starts.py)
    or ``contexts`` (the world file's own few start contexts)."""
    start_episodes: int = 16
    """Data episodes the start clips are cut from (one clip every ``start_every`` frames)."""
    start_every: int = 25
    dtype: str = "auto"
    """The world's DiT dtype: ``auto`` is bf16 on a GPU or a CPU with native bf16 (attention in bf16 too on a CPU
    with AMX, float32 on other CPUs; bf16 matched fp32 fidelity, BENCHMARKS.md) and float32 elsewhere: emulated
    bf16 on an AVX2-only CPU made a Boxing world step 4x slower (10 decisions/s against 37 in float32 at 64 worlds)."""
    window: int | None = 8
    """Frames the world attends to (None: the world's own). 8, not the shipped world's 16: fidelity as good
    and a faster step (BENCHMARKS.md)."""
    save_every: int = 2
    """Rollouts between saves of the resumable state and the agent file."""
    seed: int = 0
    progress: bool = True
    env: str = "world"
    """``world``: PPO inside the world (the point); ``real``: the same agent and PPO in the real game (the
    baseline to compare with: ``worlds`` real envs, observed through the world's VAE as in evaluation)."""
    init_from: str | None = None
    """Continue from this agent file (its network; a fresh optimiser, the learning rate warmed up over
    ``warmup`` decisions): e.g. the shipped agent in a fine-tuned world. Its world must see the game through
    the same VAE. Ignored when the run folder holds a state to resume."""
    warmup: int = 8192
    """Decisions of linear learning-rate warm-up of a run continued from ``init_from`` (0: none; a run from
    scratch has none)."""

    imitate_weight: float = 0.0
    """Keep the policy near a policy that is right in the real game while PPO trains it in the world (0: off):
    after each rollout's update, ``imitate_steps`` gradient steps on this weight times the anchor's loss on the
    real decisions of ``data_dir`` (the observations of ``stage=imitate``, envs/agent/imitation.py). PPO alone
    moves an agent to whatever its world pays for, which is where a world is wrong (Boxing's agents were paid
    +382 a bout by their world and -33 by the game; CarRacing's round-4 agent went from 528 to 204 on its
    selection tracks after 18k more decisions in a fine-tuned world); the anchor holds it to what was right on
    real states while the world's reward shapes the rest."""
    imitate_steps: int = 4
    """Gradient steps of the anchor per rollout (batches of ``batch_size`` data decisions)."""
    anchor: str = "driver"
    """What ``imitate_weight`` holds the policy to: ``driver`` (the data's driver: the negative log-likelihood of
    its next action, on its own episodes) or ``init`` (the ``init_from`` agent: the KL divergence from its action
    probabilities, on every real episode of the data, the agent's own included; e.g. a loop round's starting
    agent, when it drives better than the driver)."""

    def validate(self) -> None:
        if self.imitate_weight < 0 or self.imitate_steps < 1:
            raise ValueError(f"agent.train.imitate_weight must be >= 0 and imitate_steps >= 1, got {self}")
        if self.anchor not in ("driver", "init"):
            raise ValueError(f"agent.train.anchor is driver or init, got {self.anchor!r}")
        if self.imitate_weight > 0 and self.anchor == "init" and not self.init_from:
            raise ValueError("agent.train.anchor=init holds the policy to the agent it continues: set "
                             "agent.train.init_from=AGENT (or anchor=driver)")
        if self.starts not in ("data", "contexts"):
            raise ValueError(f"agent.train.starts must be data or contexts, got {self.starts!r}")
        if self.env not in ("world", "real"):
            raise ValueError(f"agent.train.env must be world or real, got {self.env!r}")
        if min(self.worlds, self.timesteps, self.n_steps, self.batch_size, self.epochs, self.save_every) < 1:
            raise ValueError(f"agent.train sizes must be >= 1, got {self}")
        if self.warmup < 0:
            raise ValueError(f"agent.train.warmup must be >= 0, got {self.warmup}")
        if self.worlds * self.n_steps < 2:
            raise ValueError("a rollout needs at least two decisions: raise agent.train.worlds or n_steps")


def _policy_kwargs(net_cfg: AgentConfig, latent_shape):
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    from envs.agent.network import Trunk

    class Features(BaseFeaturesExtractor):
        def __init__(self, observation_space, **_):
            super().__init__(observation_space, net_cfg.hidden)
            self.trunk = Trunk(net_cfg, observation_space.shape[0], observation_space.shape[1])

        def forward(self, obs):
            return self.trunk(obs)

    return {"features_extractor_class": Features, "net_arch": {"pi": [], "vf": []}, "normalize_images": False,
            "share_features_extractor": True}


def agent_net(policy, net_cfg: AgentConfig, latent_shape, n: int) -> AgentNet:
    """The RL library's policy -> our standalone network (same weights)."""
    net = AgentNet(net_cfg, latent_shape, n)
    net.trunk.load_state_dict(policy.features_extractor.trunk.state_dict())
    net.action_net.load_state_dict(policy.action_net.state_dict())
    net.value_net.load_state_dict(policy.value_net.state_dict())
    return net.eval()


def imitation_steps(policy, decisions, cfg: AgentTrainConfig, rng: np.random.Generator,
                    teacher: AgentNet | None = None) -> float:
    """The anchor (``cfg.imitate_weight``): ``cfg.imitate_steps`` optimiser steps of ``policy`` (an RL-library
    actor-critic) on random ``decisions`` -> the mean loss: the driver's negative log-likelihood, or with
    ``teacher`` KL(teacher || policy) over the actions."""
    total = 0.0
    policy.set_training_mode(True)
    for _ in range(cfg.imitate_steps):
        obs, actions, _ = decisions.batch(rng.integers(len(decisions), size=cfg.batch_size))
        obs = obs.to(policy.device)
        log_q = policy.get_distribution(obs).distribution.logits  # normalised log-probabilities (B, n)
        if teacher is None:
            loss = -log_q.gather(1, actions.to(policy.device)[:, None]).mean()
        else:
            with torch.no_grad():
                log_p = torch.log_softmax(teacher(obs)[0], -1)
            loss = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
        policy.optimizer.zero_grad(set_to_none=True)
        (cfg.imitate_weight * loss).backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
        policy.optimizer.step()
        total += loss.item()
    policy.set_training_mode(False)
    return total / cfg.imitate_steps


def _modules(policy) -> dict:
    # The features extractor appears under three names in the policy's state dict (shared): save it once.
    return {"trunk": policy.features_extractor.trunk, "action_net": policy.action_net, "value_net": policy.value_net}


def agent_target(out: str | Path | None, folder: Path, world_name: str, overwrite: bool) -> Path:
    """The agent file a run writes: ``out``, or ``folder/<world>-agent.safetensors``. An existing ``out`` is
    replaced only with ``overwrite`` or when it is this run folder's own agent (recorded in its state)."""
    default = folder / f"{world_name}-agent.safetensors"
    if out is None:
        return default
    out = Path(out)
    if out.exists() and not overwrite and out.resolve() != default.resolve():
        state = folder / "state.safetensors"
        own = state.exists() and read_checkpoint(state, "training-state")[0].get("out") == str(out.resolve())
        if not own:
            raise FileExistsError(f"agent.out={out} exists and would be replaced; to replace it, add "
                                  "agent.overwrite=true (or leave agent.out unset to write the run's own agent)")
    return out


def world_reference(world, world_path: str | Path) -> dict:
    """How an agent file names its world: name, VAE id, source and the file, relative to the project when it
    lies inside it (never this machine's absolute path: a clone elsewhere resolves it from its own root)."""
    path = Path(world_path)
    root = checkpoints_dir().parent
    try:
        file = str(path.resolve().relative_to(root))
    except ValueError:
        file = str(path)
    return {"name": world.name, "vae_id": world_vae_id(world), "source": world.source, "file": file}


def train_agent(world_path: str | Path, net_cfg: AgentConfig, cfg: AgentTrainConfig, run_dir: str | Path,
                out: str | Path | None = None, device: torch.device | str = "cpu",
                data_dir: str | Path | None = None, budget: Budget = UNLIMITED, overwrite: bool = False) -> Path:
    """Train (or resume) PPO in ``world_path``'s world; writes the agent file (default
    ``run_dir/agent/<world>-agent.safetensors``) and returns its path. ``data_dir``: the world's dataset, where
    start clips are cut from (``starts=data``; without it the data policy is replayed on the data's tracks).

    Saves (the resumable state and the agent file) fall between rollouts, after the policy learned from every
    rollout counted, so a resumed run has the weights, optimiser, decision count and episode count of the
    uninterrupted one at that point. What differs after a resume: the worlds start new episodes (the
    interrupted ones are not stored) and the library's sampling is reseeded from (seed, decisions). At
    ``budget`` the run saves and raises :class:`BudgetReached`."""
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.logger import Logger
    except ImportError:
        raise ModuleNotFoundError("stage=agent needs Stable-Baselines3: pip install -e \".[rl]\"") from None
    net_cfg.validate()
    cfg.validate()
    folder = Path(run_dir) / "agent"
    state_path, log_path = folder / "state.safetensors", folder / "agent_log.jsonl"
    init = None
    if cfg.init_from and not state_path.exists():
        init = load_agent(cfg.init_from)
        if to_dict(init.cfg) != to_dict(net_cfg):
            raise ValueError(f"agent.train.init_from={cfg.init_from} has the network {to_dict(init.cfg)}, the config "
                             f"asks for {to_dict(net_cfg)}: continue with the file's agent.net settings")
    if cfg.env == "world":
        core = WorldCore(cfg.worlds, world_path, device=str(device), dtype=cfg.dtype, observation="latents",
                         window=cfg.window)
        world = core.world
    else:
        core, world = None, load_world(world_path, device)
    if init is not None and not sees_through(init.world, world):
        raise ValueError(f"agent.train.init_from={cfg.init_from} learned through another VAE than {world_path}'s "
                         f"(it learned in {init.world.get('file') or init.world.get('name')}): continue it in a "
                         "world with its VAE")
    out = agent_target(out, folder, world.name, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    arch = {"net": to_dict(net_cfg), "world_vae": world_vae_id(world)}
    seed = cfg.seed
    start = 0
    starts = None
    if cfg.env == "world" and cfg.starts == "data":
        print(f"cutting start clips from {cfg.start_episodes} data episodes", flush=True)
        starts = data_starts(world, data_dir, cfg.start_episodes, min(8, world.dit.cfg.window), cfg.start_every)
        print(f"{len(starts[0])} start clips", flush=True)
    anchor, teacher = None, None
    if cfg.imitate_weight > 0:
        if not data_dir:
            raise ValueError("agent.train.imitate_weight needs the world's data (data_dir): its real decisions hold "
                             "the anchor")
        from envs.agent.imitation import ImitateConfig, data_decisions, driver_latents

        if cfg.anchor == "init":
            teacher = (init or load_agent(cfg.init_from)).net.to(device).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        anchor = data_decisions(*driver_latents(world, data_dir), "train", ImitateConfig(), net_cfg, cfg.gamma,
                                driver_only=teacher is None)
        whose = "the data's driver" if teacher is None else f"the agent {cfg.init_from}"
        print(f"anchored to {whose} on {len(anchor)} real decisions, weight {cfg.imitate_weight}", flush=True)
    warm: dict = {"continued": False, "model": None}

    def lr_schedule(_progress_remaining: float) -> float:
        """The learning rate; a run continued from a file warms up over its first ``cfg.warmup`` decisions."""
        if not warm["continued"] or cfg.warmup == 0:
            return cfg.lr
        done = warm["model"].num_timesteps if warm["model"] is not None else 0
        return cfg.lr * min(1.0, (done + 1) / cfg.warmup)

    def build(start_step: int):
        run_seed = int(np.random.SeedSequence([seed, start_step]).generate_state(1)[0]) % 2**31
        if core is not None:
            worlds = AgentWorlds(core, net_cfg, cfg.max_frames, seed=run_seed, starts=starts)
            env = sb3_vec_env(worlds)
        else:
            from stable_baselines3.common.monitor import Monitor
            from stable_baselines3.common.vec_env import DummyVecEnv

            env = DummyVecEnv([lambda: Monitor(RealAgentEnv(world, net_cfg, cfg.max_frames))] * cfg.worlds)
            env.seed(run_seed)
            worlds = env.envs[0].unwrapped
        model = PPO("MlpPolicy", env, n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.epochs,
                    learning_rate=lr_schedule, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range,
                    ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, seed=run_seed, device=str(device),
                    policy_kwargs=_policy_kwargs(net_cfg, worlds.latent_shape), verbose=0)
        model.set_logger(Logger(None, []))  # in memory only (the library's default makes a folder in /tmp)
        return model, worlds

    episodes_before = 0
    if state_path.exists():
        state_meta = read_checkpoint(state_path, "training-state")[0]
        start = int(state_meta["step"])
        episodes_before = int(state_meta.get("episodes", 0))
        prior = history_of(state_meta)
        warm["continued"] = bool(state_meta.get("init_from"))
    else:
        prior = history_of(init.meta) if init is not None else []
        warm["continued"] = init is not None
    model, worlds = build(start)  # on resume: fresh worlds and library RNG for the remaining steps
    warm["model"] = model
    if state_path.exists():
        load_state(state_path, _modules(model.policy), model.policy.optimizer, arch)
        model.num_timesteps = start
        print(f"resuming the agent from {start} decisions ({state_path})", flush=True)
    elif init is not None:
        model.policy.features_extractor.trunk.load_state_dict(init.net.trunk.state_dict())
        model.policy.action_net.load_state_dict(init.net.action_net.state_dict())
        model.policy.value_net.load_state_dict(init.net.value_net.state_dict())
        print(f"continuing the agent {cfg.init_from} ({init.meta.get('decisions')} decisions before)", flush=True)
    n = int(worlds.action_space.n)
    meta_world = world_reference(world, world_path)
    hist = RunHistory("agent", folder, prior, start, net_cfg.action_repeat, device, init_from=cfg.init_from,
                      trained_in=cfg.env, world=meta_world["file"])
    before = int(init.meta.get("decisions") or 0) if init is not None else 0
    before = int(state_meta.get("decisions_before", 0)) if state_path.exists() else before

    def write_agent(steps: int, history: list) -> Path:
        net = agent_net(model.policy, net_cfg, worlds.latent_shape, n)
        return save_agent(out, net, world=meta_world, action_space=world.dit.action_space,
                          meta={"decisions": before + steps, "world_frames": (before + steps) * net_cfg.action_repeat,
                                "trained_in": cfg.env, "train": to_dict(cfg), HISTORY: history})

    def save(steps: int, episodes: int, finished: bool = False) -> None:
        history = hist.entries(steps, finished)
        with signals_deferred("saving the agent"):
            save_state(state_path, steps, _modules(model.policy), model.policy.optimizer,
                       {"config": arch, "episodes": episodes, "out": str(out.resolve()), "init_from": cfg.init_from,
                        "decisions_before": before, HISTORY: history})
            write_agent(steps, history)

    from tqdm import tqdm

    # The mean return of the last 50 episodes: what the world predicts, or what the real game paid (env=real).
    ret_key = "predicted_return" if cfg.env == "world" else "real_return"

    bar = tqdm(total=cfg.timesteps, initial=min(start, cfg.timesteps), unit="decision", disable=not cfg.progress,
               desc="agent in the world" if cfg.env == "world" else "agent in the real game")

    class Progress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.episodes: list[tuple[float, int]] = []
            self.rollouts, self.t0, self.last = 0, time.perf_counter(), model.num_timesteps
            self.saved, self.stop = model.num_timesteps, False
            self.snapshot = None
            self.anchor_loss: float | None = None

        def save_snapshot(self) -> int | None:
            """Write the state of the last rollout boundary (unless it is saved already) -> its decisions."""
            if self.snapshot is None:
                return None
            steps, episodes, modules, optim = self.snapshot
            if steps != self.saved or not state_path.exists():
                for k, m in _modules(self.model.policy).items():
                    m.load_state_dict(modules[k])
                self.model.policy.optimizer.load_state_dict(optim)
                save(steps, episodes)
                self.saved = steps
            return steps

        def _on_rollout_start(self) -> None:
            # Here the policy has learned from every rollout counted in num_timesteps: a save is exact, and so
            # is this in-memory copy, which a stop in the middle of the next rollout saves.
            steps = self.model.num_timesteps
            if anchor is not None and steps > start:  # after each update of this run (not before the first)
                rng = np.random.default_rng([seed, steps])
                self.anchor_loss = imitation_steps(self.model.policy, anchor, cfg, rng, teacher)
            self.snapshot = (steps, episodes_before + len(self.episodes),
                             {k: copy.deepcopy(m.state_dict()) for k, m in _modules(self.model.policy).items()},
                             copy.deepcopy(self.model.policy.optimizer.state_dict()))
            if self.rollouts and self.rollouts % cfg.save_every == 0:
                save(steps, episodes_before + len(self.episodes))
                self.saved = steps
            if budget.expired():
                if self.saved != steps or not state_path.exists():
                    save(steps, episodes_before + len(self.episodes))
                    self.saved = steps
                self.stop = True

        def _on_step(self) -> bool:
            if self.stop:
                return False
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.episodes.append((info["episode"]["r"], info["episode"]["l"]))
            bar.update(max(0, min(self.model.num_timesteps, cfg.timesteps) - bar.n))
            if budget.limited:
                bar.set_postfix_str(budget.left_text(), refresh=False)
            return True

        def _on_rollout_end(self) -> None:
            self.rollouts += 1
            steps = self.model.num_timesteps
            recent = [r for r, _ in self.episodes[-50:]]
            elapsed = time.perf_counter() - self.t0
            row = {"step": steps, "world_frames": steps * net_cfg.action_repeat,
                   "episodes": episodes_before + len(self.episodes),
                   ret_key: float(np.mean(recent)) if recent else None,
                   "world_frames_per_s": (steps - self.last) * net_cfg.action_repeat / max(elapsed, 1e-9)}
            if anchor is not None and self.anchor_loss is not None:
                row["driver_nll" if teacher is None else "anchor_kl"] = self.anchor_loss
            for k in ("train/entropy_loss", "train/value_loss", "train/approx_kl"):
                v = self.model.logger.name_to_value.get(k)
                if v is not None:
                    row[k.split("/")[1]] = float(v)
            log_row(log_path, row, echo=not cfg.progress)
            bar.set_postfix({ret_key: row[ret_key], "fps": round(row["world_frames_per_s"])})
            self.t0, self.last = time.perf_counter(), steps

    remaining = cfg.timesteps - start
    progress = Progress()
    try:
        if remaining > 0:
            model.learn(total_timesteps=remaining, callback=progress, reset_num_timesteps=False, progress_bar=False)
    except KeyboardInterrupt:
        # The state at the last rollout boundary is saved and resumes; the rollout in progress is dropped.
        with signals_deferred("saving the agent", raise_after=False):
            done = progress.save_snapshot()
        _plot(log_path, folder / "returns.png", ret_key)
        if done is not None:
            print(f"saved the agent at {done} decisions ({state_path}; the rollout in progress is dropped); "
                  "run again to resume", flush=True)
        else:
            print("stopped before the first rollout: nothing to resume; run again to start over", flush=True)
        raise
    finally:
        bar.close()
    if progress.stop:
        _plot(log_path, folder / "returns.png", ret_key)
        raise BudgetReached("agent", f"{progress.saved} of {cfg.timesteps} decisions (saved: {out})")
    if anchor is not None and remaining > 0:  # the last update is anchored too, as each before it was
        imitation_steps(model.policy, anchor, cfg, np.random.default_rng([seed, model.num_timesteps]), teacher)
    save(model.num_timesteps, episodes_before + len(progress.episodes), finished=True)
    _plot(log_path, folder / "returns.png", ret_key)
    return out


def _plot(log: Path, png: Path, key: str) -> None:
    """The mean return per rollout (worldsim.training.plot); nothing when there is none yet."""
    try:
        plot_log(log, png, [key])
    except (ValueError, FileNotFoundError, ImportError):
        pass
