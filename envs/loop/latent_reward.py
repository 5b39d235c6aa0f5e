"""Fit a world's latent reward (worldsim/models/latent_reward.py) on its data and write the world with it:
``python -m envs.loop.latent_reward WORLD --data DATA_DIR --out OUT``.

The world's networks stay exactly as they are; a small classifier learns each frame's reward from the clean
latents of the frame and the one before it (the data's pre-encoded latents, made once for the world's VAE as
``dynamics.train.pre_encode`` makes them), and the engine then pays its expected value instead of the reward
head's. For games whose rewards take a few values (Atari's scores); a world whose data has many (CarRacing's
tiles) is refused and keeps its head. Every ``heldout_every``-th episode is held out, and the report (printed,
and stored in the file's metadata) is on those: the return the latent reward pays against the game's, per
episode.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from envs.evaluation.heads import _correlation
from envs.loop.cli import out_refused
from worldsim.data.dataset import EpisodeDataset, in_split
from worldsim.data.episodes import DatasetError
from worldsim.data.latents import ensure_latents, vae_file_id
from worldsim.locks import FolderInUse, lock_folder
from worldsim.models.dit import DiT
from worldsim.models.latent_reward import LatentReward, previous_latents
from worldsim.models.vae import load_vae
from worldsim.spaces import space_from_dict
from worldsim.training.budget import UNLIMITED, Budget
from worldsim.training.dynamics_trainer import vae_from_world
from worldsim.training.history import HISTORY, RunHistory, history_of
from worldsim.world import World, load_world, save_world

MAX_VALUES = 8
"""At most this many distinct rewards in the data (Boxing has 5: -2 to 2)."""


def reward_values(rewards: list[np.ndarray]) -> tuple[float, ...]:
    """The distinct reward values of the data, increasing; ValueError when there are too many to classify."""
    vals = np.unique(np.round(np.concatenate(rewards).astype(np.float64), 6))
    if len(vals) > MAX_VALUES:
        raise ValueError(f"the data's rewards take {len(vals)} values (e.g. {vals[:4].tolist()}...); the latent "
                         f"reward reads at most {MAX_VALUES} (a game's score steps): this world keeps its reward head")
    if len(vals) < 2:
        raise ValueError(f"every reward in the data is {vals.tolist()}: there is nothing for a latent reward to read")
    return tuple(float(v) for v in vals)


def episode_rewards(data: EpisodeDataset) -> list[np.ndarray]:
    """Each episode's rewards (float32 (L,)), in the order of ``data.refs``."""
    return [data.shards[ref.shard].read(ref.j, fields=("rewards",))["rewards"].astype(np.float32) for ref in data.refs]


def world_latents(world_file: Path, world: World, data: EpisodeDataset, log=print):
    """The data's latents for the world's VAE (encoded once into the data folder, as dynamics training does)."""
    with tempfile.TemporaryDirectory() as tmp:
        vae_path = Path(tmp) / "vae.safetensors"
        vae_from_world(world_file, vae_path)
        vid = vae_file_id(vae_path, load_vae(vae_path)[1])
    return ensure_latents(data, world.latent_encoder(), world.vae, vid, log)


def fit_latent_reward(world_file: str | Path, data_dir: str | Path, out: str | Path, *, steps: int = 4000,
                      batch_size: int = 128, lr: float = 2e-3, heldout_every: int = 10, seed: int = 0,
                      budget: Budget = UNLIMITED, log=print) -> dict[str, Any]:
    """Train the latent reward of ``world_file`` on ``data_dir`` for ``steps`` steps (or until ``budget``) and
    write the world with it as ``out`` -> the held-out report."""
    world_file, out = Path(world_file), Path(out)
    world = load_world(world_file)
    data = EpisodeDataset(data_dir)
    if space_from_dict(data.source["action_space"]) != space_from_dict(world.dit.action_space):
        raise ValueError(f"{data_dir} was recorded with actions {data.source.get('action_space')}, the world "
                         f"takes {world.dit.action_space}: give the world's own data folder")
    store = world_latents(world_file, world, data, log)
    eps = {"train": [], "heldout": []}
    for ref, rewards in zip(data.refs, episode_rewards(data), strict=True):
        split = "heldout" if in_split(ref.index, "heldout", heldout_every) else "train"
        eps[split].append((torch.from_numpy(np.ascontiguousarray(store.read(ref, 0, ref.length))), rewards))
    if not eps["train"] or not eps["heldout"]:
        raise ValueError(f"{data_dir} has {len(data.refs)} episodes: too few to hold every {heldout_every}-th out "
                         "and train on the rest")
    values = reward_values([r for _, r in eps["train"]])
    cls = world.dit.cfg
    torch.manual_seed(seed)
    net = LatentReward(cls.latent_channels, cls.latent_size, values)
    # Every training frame (t >= 1) by its class: the frame and the one before it.
    z_all = torch.cat([z for z, _ in eps["train"]])
    starts = np.cumsum([0] + [len(z) for z, _ in eps["train"]])[:-1]
    frame = np.concatenate([s + np.arange(1, len(r)) for s, (_, r) in zip(starts, eps["train"], strict=True)])
    target = np.searchsorted(values, np.round(np.concatenate([r[1:] for _, r in eps["train"]]), 6))
    true = np.bincount(target, minlength=len(values)) / len(target)
    common = int(true.argmax())
    rare = np.flatnonzero(target != common)
    # Half of each batch from frames that pay something other than the common value (a punch), half from all.
    sampled = 0.5 * true + 0.5 * np.where(np.arange(len(values)) == common, 0.0, true / max(1e-12, 1 - true[common]))
    if not len(rare):
        rare = np.arange(len(frame))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    # Cosine to a tenth over the steps: the last steps settle the class probabilities the return adds up.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.1 + 0.45 * (1 + math.cos(math.pi * min(k, steps) / steps)))
    tgt = torch.from_numpy(target)
    net.train()
    made, loss_avg = 0, None
    hist = RunHistory("latent_reward", out, history_of(world.meta), 0, batch_size, "cpu", data=str(data_dir))
    log(f"latent reward of {world_file}: values {list(values)} (data shares {np.round(true, 4).tolist()}), "
        f"{len(frame)} training frames, {sum(len(r) for _, r in eps['heldout'])} held out")
    while made < steps and budget.left_s() > 0:
        half = batch_size // 2
        pick = np.concatenate([rare[torch.randint(len(rare), (half,), generator=gen).numpy()],
                               torch.randint(len(frame), (batch_size - half,), generator=gen).numpy()])
        i = torch.from_numpy(frame[pick])
        logits = net(z_all[i - 1][:, None], z_all[i][:, None])[:, 0]
        loss = F.cross_entropy(logits, tgt[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        made += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if made % 250 == 0:
            log(f"step {made}: loss {loss_avg:.4f} ({budget.left_s() / 60:.1f} min left)")
    if made == 0:
        raise ValueError("the budget ended before the first step: nothing written")
    net.fold_prior(torch.as_tensor(sampled, dtype=torch.float32), torch.as_tensor(true, dtype=torch.float32))
    net.eval()
    report = heldout_report(net, eps["heldout"])
    report.update(steps=made, values=list(values), train_frames=int(len(frame)))
    log(json.dumps(report))
    dit = DiT(replace(world.dit.cfg, latent_reward=values), world.dit.action_space)
    dit.load_state_dict({**world.dit.float().state_dict(), **{f"latent_reward.{k}": v for k, v in net.state_dict().items()}})
    meta = {**world.meta, HISTORY: hist.entries(made, finished=made >= steps), "latent_reward_report": report}
    save_world(out, world.vae, dit, source=world.source, sampler=world.sampler, latent_mean=world.latent_mean,
               latent_std=world.latent_std, context_frames=world.context_frames,
               context_actions=world.context_actions, meta=meta)
    return report


@torch.no_grad()
def heldout_report(net: LatentReward, eps: list[tuple[torch.Tensor, np.ndarray]]) -> dict[str, Any]:
    """What ``net`` pays on whole held-out episodes (real latents) against the game."""
    paid, real, per_frame_p, per_frame_r = [], [], [], []
    for z, r in eps:
        p = net.expected(previous_latents(z[None]), z[None])[0].numpy()[1:]
        paid.append(float(p.sum()))
        real.append(float(r[1:].sum()))
        per_frame_p.append(p)
        per_frame_r.append(r[1:])
    p, r = np.concatenate(per_frame_p), np.concatenate(per_frame_r)
    return {"heldout_episodes": len(eps), "per_frame_correlation": _correlation(p, r),
            "per_episode_correlation": _correlation(np.array(paid), np.array(real)) if len(eps) > 1 else None,
            "return_paid": float(np.mean(paid)), "return_real": float(np.mean(real)),
            "paid_over_real": float(sum(paid) / sum(real)) if sum(real) else None,
            "mean_abs_episode_error": float(np.mean(np.abs(np.subtract(paid, real))))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m envs.loop.latent_reward", description=__doc__.split("\n\n")[0])
    ap.add_argument("world", help="the world file")
    ap.add_argument("--data", required=True, help="its data folder (the driver's data and the agent's recorded episodes)")
    ap.add_argument("--out", required=True, help="the new world file")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--heldout-every", type=int, default=10, help="every n-th episode is held out (as in training)")
    ap.add_argument("--minutes", type=float, help="wall-clock budget; at it the steps made so far are written")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out_refused(out, args.overwrite):
        return 2
    if args.steps < 1 or args.batch_size < 2 or args.heldout_every < 2 or not math.isfinite(args.lr) or args.lr <= 0:
        print("error: --steps >= 1, --batch-size >= 2, --heldout-every >= 2 and a positive --lr, please", file=sys.stderr)
        return 2
    try:
        lock_folder(Path(args.data), "data folder")
        report = fit_latent_reward(args.world, args.data, out, steps=args.steps, batch_size=args.batch_size,
                                   lr=args.lr, heldout_every=args.heldout_every, seed=args.seed,
                                   budget=Budget(args.minutes) if args.minutes else UNLIMITED)
    except (ValueError, OSError, DatasetError, FolderInUse) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (latent reward, {report['steps']} steps; held out: paid {report['return_paid']:.1f} a "
          f"episode where the game paid {report['return_real']:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
