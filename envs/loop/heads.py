"""Refit a world's reward and termination heads on its frozen network: the loop's second world step, and
``python -m envs.loop.heads WORLD --data DATA_DIR --out OUT``.

An agent trained in a world finds where the world pays for what the game punishes; that is the reward head
(and the termination head), not the frames, and a few hundred steps of the whole network at a fine-tune's
learning rate hardly move it. Here only the heads learn (``dynamics.train.train_only=heads``), at a higher
rate, with the agent's real episodes (``agent_eval.record``, ``stage=loop``'s play) drawn more often; the
frames the world generates stay exactly the same. ``--reward-space sign`` also switches the reward head to
three classes (worldsim/models/dit.py: ``reward_space``); its last layer starts afresh. ``--head-pool attention``
lets each head read a frame through learned queries instead of the mean of its tokens (``head_pool``: a landed
punch or a score digit that changes is a token or two of a frame); the queries start at zero, i.e. at the mean.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from envs.loop.cli import out_refused
from worldsim.locks import FolderInUse, lock_folder
from worldsim.training.budget import UNLIMITED, Budget, BudgetReached
from worldsim.training.dynamics_trainer import DynamicsTrainConfig, train_dynamics
from worldsim.training.export import ExportConfig, export_world
from worldsim.world import load_world


def refit_heads(world_file: str | Path, data_dir: str | Path, run_dir: str | Path, out: str | Path,
                train: DynamicsTrainConfig, *, steps: int, lr: float = 1e-3, agent_weight: float = 8.0,
                warmup: int = 20, ema_decay: float = 0.99, reward_space: str | None = None,
                head_pool: str | None = None, device: torch.device | str = "cpu", budget: Budget = UNLIMITED, overwrite: bool = False) -> int:
    """Train the heads of ``world_file`` for ``steps`` steps in ``run_dir`` (resumed when it holds a state of the
    same run) and export the world as ``out`` -> the steps made (0: the budget ran out before the first
    checkpoint, and nothing is written). ``train``: batch, clip and loss settings (``dynamics.train``);
    ``reward_space``, ``head_pool``: None keeps the world's. A stop by ``budget`` exports what was made and is re-raised."""
    world_file, out = Path(world_file), Path(out)
    prev = load_world(world_file)
    model = replace(prev.dit.cfg, reward_space=reward_space or prev.dit.cfg.reward_space,
                    head_pool=head_pool or prev.dit.cfg.head_pool)
    model.validate()
    hcfg = replace(train, steps=steps, lr=lr, warmup=min(warmup, steps), init_from=str(world_file),
                   agent_data_weight=agent_weight, distill_guidance=0.0, anchor_weight=0.0, ema_decay=ema_decay, pre_encode=False,
                   train_only="heads", eval_every=min(train.eval_every, steps))
    print(f"refitting the reward and termination heads of {world_file} for {steps} steps (lr {lr}, agent "
          f"episodes x{agent_weight}, reward space {model.reward_space}, "
          f"{model.head_pool} pooling)", flush=True)
    stopped = None
    try:
        train_dynamics(model, hcfg, prev.sampler, data_dir, run_dir, torch.device(device), budget=budget)
    except BudgetReached as e:
        stopped = e
    run_dir = Path(run_dir)
    if (run_dir / "dynamics.safetensors").exists():
        export_world(ExportConfig(out=str(out), overwrite=overwrite), data_dir, run_dir, prev.sampler, prev.name)
    if stopped is not None:
        raise stopped
    return int(load_world(out).meta.get("dynamics_step") or 0) if out.exists() else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m envs.loop.heads", description=__doc__.split("\n\n")[0])
    ap.add_argument("world", help="the world file whose heads are refitted")
    ap.add_argument("--data", required=True, help="its data folder, with the agent's recorded episodes")
    ap.add_argument("--out", required=True, help="the new world file")
    ap.add_argument("--run-dir", help="the refit's run folder (default: OUT without .safetensors, + '-heads')")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--agent-weight", type=float, default=8.0, help="agent episodes drawn this many times as often")
    ap.add_argument("--reward-space", choices=("symlog", "raw", "sign"), help="default: the world's")
    ap.add_argument("--head-pool", choices=("mean", "attention"), help="how the heads read a frame's tokens; "
                    "default: the world's")
    ap.add_argument("--reward-weight", type=float, default=DynamicsTrainConfig.reward_weight,
                    help="the reward loss's weight beside the termination loss's (dynamics.train.reward_weight)")
    ap.add_argument("--negative-weight", type=float, default=DynamicsTrainConfig.reward_negative_weight,
                    help="the reward loss of frames paid < 0 counts this many times (dynamics.train.reward_negative_weight)")
    ap.add_argument("--terminal-weight", type=float, default=50.0,
                    help="an episode's last clip drawn this many times as often (loop.terminal_weight's default)")
    ap.add_argument("--precision", default=DynamicsTrainConfig.precision, help="dynamics.train.precision")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--clip-length", type=int, default=16)
    ap.add_argument("--heldout-every", type=int, default=10, help="every n-th episode is held out (as in training)")
    ap.add_argument("--minutes", type=float, help="wall-clock budget; at it the heads made so far are exported")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out_refused(out, args.overwrite):
        return 2
    if args.steps < 1:
        print("error: --steps must be at least 1", file=sys.stderr)
        return 2
    stem = out.name.removesuffix(".safetensors")
    run_dir = Path(args.run_dir) if args.run_dir else out.with_name(stem + "-heads")
    budget = Budget(args.minutes) if args.minutes else UNLIMITED
    try:
        lock_folder(run_dir, "run folder")
        train = DynamicsTrainConfig(batch_size=args.batch_size, clip_length=args.clip_length,
                                    heldout_every=args.heldout_every, reward_weight=args.reward_weight,
                                    reward_negative_weight=args.negative_weight,
                                    terminal_weight=args.terminal_weight, precision=args.precision)
        steps = refit_heads(args.world, args.data, run_dir, out, train,
                            steps=args.steps, lr=args.lr, agent_weight=args.agent_weight,
                            reward_space=args.reward_space, head_pool=args.head_pool, budget=budget, overwrite=True)
    except BudgetReached:
        print(f"stopped at the budget; {'wrote ' + str(out) if out.exists() else 'nothing exported'}; the same "
              "command with --overwrite continues from the run folder", file=sys.stderr)
        return 0
    except (ValueError, OSError, FolderInUse) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({steps} head steps; run folder {run_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
