"""``python train.py stage=imitate``: an agent that starts from the data's own driver (behaviour cloning).

The world's data was played by a driver (envs/games/policies.py; Boxing's reads the game's RAM, so it plays
well). This stage fits the agent network to that driver: on every frame of the data it sees what an agent would
see there (the stacked latents of its decisions, through the world's VAE: :mod:`envs.agent.view`) and learns
the action the driver took next (cross-entropy), and its value head learns the discounted return the game paid
from there on (so that PPO continued from it, ``agent.train.init_from``, starts with a critic of the right
scale instead of one that wipes the policy out in its first updates). An agent trained from scratch in a world
only learns what the world pays for; an imitated one starts where the real game pays, which is what the loop
(``loop.agent``) and the agent stage continue.

Pairs, with the shard alignment (``actions[t]`` led to ``frames[t]``): the observation at frame t holds the
latents of frames t, t - r, t - 2r, ... (r = ``action_repeat``; before the episode's start its first latent,
as :class:`~envs.agent.view.AgentView` starts), and its target is ``actions[t + 1]``. The value target is
G_t = (r_{t+1} + ... + r_{t+r}) + gamma * G_{t+r}, the return of decisions of r frames. The data's held-out
episodes (``heldout_every``, the split the world trained with) score it: top-1 agreement with the driver, next
to always answering the driver's most frequent action.

The latents are the world's VAE's, encoded once into the data folder (``latents-<agent VAE id>/``,
:mod:`worldsim.data.latents`) and reused by later runs. Writes ``run_dir/imitate/<world>-agent.safetensors``
(an agent file like PPO's), ``imitate_log.jsonl`` and ``imitate.json``. The weights of the epoch with the lowest
held-out cross-entropy are kept. At the time budget it writes that best epoch so far and says so (nothing to
resume: a run takes minutes once the latents are encoded).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from envs.agent.network import AgentConfig, AgentNet, save_agent
from envs.agent.training import agent_target, world_reference
from envs.agent.view import world_vae_id
from worldsim.config import to_dict
from worldsim.data.dataset import EpisodeDataset
from worldsim.data.latents import ensure_latents
from worldsim.integrity import write_json
from worldsim.signals import signals_deferred
from worldsim.training.budget import UNLIMITED, Budget
from worldsim.training.history import HISTORY, RunHistory
from worldsim.training.log import log_row
from worldsim.world import load_world


@dataclass
class ImitateConfig:
    """Behaviour cloning of the data's driver (``agent.imitate``)."""

    epochs: int = 6
    """Passes over the training episodes' frames."""
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-4
    value_weight: float = 0.5
    """Weight of the value head's loss (its squared error over the variance of the returns) beside the action's
    cross-entropy."""
    heldout_every: int = 10
    """Every n-th data episode is held out to score the imitation (the dynamics training's split)."""
    max_episodes: int | None = None
    """Use at most this many training episodes (None: all)."""
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        if min(self.epochs, self.batch_size, self.heldout_every) < 1 or self.lr <= 0 or self.value_weight < 0:
            raise ValueError(f"agent.imitate epochs, batch_size and heldout_every must be >= 1, lr above 0 and "
                             f"value_weight >= 0, got {self}")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"agent.imitate.max_episodes must be >= 1 (or null), got {self.max_episodes}")


def discounted_returns(rewards: np.ndarray, repeat: int, gamma: float) -> np.ndarray:
    """Per-frame rewards (T,) (``rewards[t]`` paid on reaching frame t) -> G (T,): the discounted return of the
    decisions taken from frame t on, each holding its action for ``repeat`` frames (0 past the episode's end)."""
    T = len(rewards)
    after = np.concatenate([np.asarray(rewards, np.float64)[1:], np.zeros(repeat)])  # after[t] = r_{t+1}
    window = np.convolve(after, np.ones(repeat))[repeat - 1 : repeat - 1 + T]  # r_{t+1} + ... + r_{t+repeat}
    G = np.zeros(T + repeat)
    for t in range(T - 1, -1, -1):
        G[t] = window[t] + gamma * G[t + repeat]
    return G[:T].astype(np.float32)


class Decisions:
    """The data's (observation, driver's next action, return) triples, held as per-episode latents and built on
    demand: ``batch(idx)`` -> obs float32 (B, S*C, h, w), actions int64 (B,), returns float32 (B,)."""

    def __init__(self, latents: list[np.ndarray], actions: list[np.ndarray], returns: list[np.ndarray],
                 net: AgentConfig) -> None:
        self.latents, self.actions, self.returns, self.net = latents, actions, returns, net
        # Every frame but an episode's last has a next action.
        self.index = np.concatenate([np.stack([np.full(len(a) - 1, e), np.arange(len(a) - 1)], 1)
                                     for e, a in enumerate(actions) if len(a) > 1]) if actions else np.zeros((0, 2), int)

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        S, r = self.net.stack, self.net.action_repeat
        obs, act, ret = [], [], []
        for e, t in self.index[idx]:
            z = self.latents[e]
            frames = np.maximum(t - r * np.arange(S), 0)  # newest first; before the start, the first frame
            obs.append(z[frames].reshape(-1, *z.shape[2:]))
            act.append(self.actions[e][t + 1])
            ret.append(self.returns[e][t])
        return (torch.from_numpy(np.stack(obs)), torch.as_tensor(np.array(act), dtype=torch.int64),
                torch.as_tensor(np.array(ret), dtype=torch.float32))


def driver_episodes(data: EpisodeDataset, split: str, heldout_every: int) -> list:
    """The episodes of ``split`` that the data's driver played (not an agent's, which the loop and
    ``agent_eval.record`` add to the same folder)."""
    return [r for r in data.episodes(split, heldout_every)
            if (data.shards[r.shard].source.get("provenance") or {}).get("policy") != "agent"]


def data_decisions(data: EpisodeDataset, store, split: str, cfg: ImitateConfig, net: AgentConfig,
                   gamma: float, driver_only: bool = True) -> Decisions:
    """The driver's decisions of ``split`` (``cfg.max_episodes`` at most for training) as :class:`Decisions`;
    ``driver_only=False``: those of every real episode (the actions then are whoever played it)."""
    refs = driver_episodes(data, split, cfg.heldout_every) if driver_only else data.episodes(split, cfg.heldout_every)
    if split == "train" and cfg.max_episodes is not None:
        refs = refs[: cfg.max_episodes]
    latents, actions, returns = [], [], []
    for ref in refs:
        rec = data.read(ref, 0, ref.length, ("actions", "rewards"))
        latents.append(store.read(ref, 0, ref.length))
        actions.append(np.asarray(rec["actions"]).reshape(ref.length).astype(np.int64))
        returns.append(discounted_returns(rec["rewards"], net.action_repeat, gamma))
    return Decisions(latents, actions, returns, net)


def world_latents(world, data: EpisodeDataset):
    """The latents of ``data`` through ``world``'s VAE (encoded once into the data folder)."""
    return ensure_latents(data, world.latent_encoder(), world.vae, world_vae_id(world))


def driver_latents(world, data_dir: str | Path):
    """``data_dir``'s dataset, checked against ``world``, and its latents through the world's VAE."""
    data = EpisodeDataset(data_dir)
    _check(world, data, data_dir)
    return data, world_latents(world, data)


def _check(world, data: EpisodeDataset, data_dir) -> int:
    space = world.dit.action_space
    if space.get("type") != "Discrete":
        raise ValueError(f"stage=imitate clones discrete actions; {world.name}'s are {space.get('type')}")
    if not len(data):
        raise ValueError(f"{data_dir} holds no episodes: collect the driver's with `python train.py stage=collect`")
    env_id, theirs = world.source.get("env_id"), data.source.get("env_id")
    if env_id != theirs:
        raise ValueError(f"{data_dir} holds {theirs} episodes, the world {world.name!r} is {env_id}: give its data_dir")
    if data.source.get("action_space") != space:
        raise ValueError(f"{data_dir}'s action space {data.source.get('action_space')} is not the world's {space}")
    return int(space["n"])


def imitate(world_path: str | Path, net_cfg: AgentConfig, cfg: ImitateConfig, data_dir: str | Path,
            run_dir: str | Path, out: str | Path | None = None, gamma: float = 0.99,
            device: torch.device | str = "cpu", budget: Budget = UNLIMITED, overwrite: bool = False) -> Path:
    """Fit an agent to the driver of ``data_dir`` through ``world_path``'s VAE; -> the agent file written.
    ``gamma``: the discount of the PPO that will continue it (``agent.train.gamma``)."""
    net_cfg.validate()
    cfg.validate()
    world = load_world(world_path, device)
    data = EpisodeDataset(data_dir)
    n = _check(world, data, data_dir)  # before the target and the encoding: a wrong folder costs nothing
    folder = Path(run_dir) / "imitate"
    out = agent_target(out, folder, world.name, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "imitate_log.jsonl"
    log_path.unlink(missing_ok=True)  # a run starts over: its log is this run's
    hist = RunHistory("imitate", folder, [], 0, 1, device, data=str(data_dir))
    store = world_latents(world, data)
    train = data_decisions(data, store, "train", cfg, net_cfg, gamma)
    held = data_decisions(data, store, "heldout", cfg, net_cfg, gamma)
    if not len(train) or not len(held):
        raise ValueError(f"{data_dir} needs training and held-out episodes of its driver (every {cfg.heldout_every}th "
                         f"is held out): it has {len(data)} episodes in all; collect more or lower "
                         "agent.imitate.heldout_every")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = AgentNet(net_cfg, tuple(int(x) for x in train.latents[0].shape[1:]), n).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ret_var = float(np.var(np.concatenate(train.returns))) + 1e-6
    counts = np.bincount(np.concatenate([a[1:] for a in train.actions]), minlength=n)
    majority = int(counts.argmax())
    held_majority = float(np.mean(np.concatenate([a[1:] for a in held.actions]) == majority))
    print(f"imitating the driver: {len(train)} training decisions ({len(train.actions)} episodes), {len(held)} "
          f"held out ({len(held.actions)}); the most frequent action ({majority}) is right on {held_majority:.3f} of "
          "the held-out ones", flush=True)

    def losses(obs, act, ret):
        logits, value = net(obs.to(device))
        ce = F.cross_entropy(logits, act.to(device))
        vl = F.mse_loss(value, ret.to(device)) / ret_var
        return ce, vl, logits

    @torch.no_grad()
    def score(d: Decisions) -> dict:
        net.eval()
        ce = vl = right = 0.0
        for s in range(0, len(d), 1024):
            idx = np.arange(s, min(s + 1024, len(d)))
            obs, act, ret = d.batch(idx)
            c, v, logits = losses(obs, act, ret)
            ce, vl = ce + float(c) * len(idx), vl + float(v) * len(idx)
            right += float((logits.argmax(-1).cpu() == act).sum())
        net.train()
        return {"ce": ce / len(d), "value_loss": vl / len(d), "accuracy": right / len(d)}

    from tqdm import tqdm

    steps_per_epoch = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    bar = tqdm(total=cfg.epochs * steps_per_epoch, unit="batch", disable=not cfg.progress, desc="imitating")
    best, best_state, epochs_done, stopped = None, None, 0, False
    t0 = time.monotonic()
    try:
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(train))
            tl = tc = 0.0
            for s in range(0, len(order), cfg.batch_size):
                ce, vl, _ = losses(*train.batch(order[s : s + cfg.batch_size]))
                loss = ce + cfg.value_weight * vl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tl, tc = tl + loss.item(), tc + 1
                bar.update(1)
                if budget.limited:
                    bar.set_postfix_str(budget.left_text(), refresh=False)
                if budget.expired():
                    stopped = True
                    break
            h = score(held)
            epochs_done = epoch + 1
            row = {"epoch": epochs_done, "train_loss": tl / max(tc, 1), **{f"heldout_{k}": v for k, v in h.items()},
                   "minutes": round((time.monotonic() - t0) / 60, 2)}
            log_row(log_path, row, echo=not cfg.progress)
            if best is None or h["ce"] < best["ce"]:
                best, best_state = dict(h, epoch=epochs_done), copy.deepcopy(net.state_dict())
            if stopped:
                break
    finally:
        bar.close()
    net.load_state_dict(best_state)
    net.eval()
    report = {"heldout": best, "heldout_majority_accuracy": held_majority, "majority_action": majority,
              "train_decisions": len(train), "heldout_decisions": len(held), "train_episodes": len(train.actions),
              "heldout_episodes": len(held.actions), "epochs": epochs_done, "stopped_by_budget": stopped,
              "data": str(data_dir), "world": world_reference(world, world_path)["file"], "out": str(out)}
    with signals_deferred("saving the agent"):
        save_agent(out, net.cpu(), world=world_reference(world, world_path), action_space=world.dit.action_space,
                   meta={"decisions": 0, "world_frames": 0, "trained_in": "data", "imitation": report,
                         "imitate": to_dict(cfg),
                         HISTORY: hist.entries(len(train) * epochs_done, finished=not stopped)})
        write_json(folder / "imitate.json", report)
    note = " (stopped by train.minutes: the best epoch so far)" if stopped else ""
    print(f"held-out agreement with the driver {best['accuracy']:.3f} (most frequent action {held_majority:.3f}) at "
          f"epoch {best['epoch']} of {epochs_done}{note}", flush=True)
    return out
