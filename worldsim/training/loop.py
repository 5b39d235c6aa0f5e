"""The optimisation loop both trainers share, and DistributedDataParallel when launched by torchrun.

One step: learning-rate schedule, loss under autocast, backward, gradient clipping,
optimizer step, EMA update. Around it: log lines, periodic held-out evaluation and
checkpoints, and on Ctrl-C / SIGTERM a last checkpoint before stopping. With several
processes (``torchrun --nproc_per_node=N train.py ...``) each rank draws its own
batches, gradients are averaged by DDP, and rank 0 alone evaluates, logs and writes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from worldsim.signals import signals_deferred
from worldsim.training.budget import UNLIMITED, Budget, BudgetReached
from worldsim.training.ema import EMA
from worldsim.training.log import log_row


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun launch (1 process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Read torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); with more than one process, join
    the process group (NCCL on CUDA, gloo on CPU) and give each rank its own GPU. -> (ranks, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(rank, world_size, local), device


def lr_at(step: int, cfg: Any) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine decay to 10% of ``cfg.lr`` at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """``fp32`` -> None, ``bf16`` -> bfloat16, ``auto`` -> bfloat16 on GPUs that support it, else None."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of one optimiser step's randomness (which clips, levels, noise): a function of the step alone,
    so a run resumed at step k draws what an uninterrupted run draws from step k on."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class StepBatches(Sampler[list[int]]):
    """Batch sampler: step s's clip indices, drawn with replacement from ``step_seed(seed, s, rank)``,
    from ``start`` on without end (the loop stops at its last step); uniformly, or in proportion to
    ``weights`` (n,) when given."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, rank: int = 0,
                 weights: torch.Tensor | None = None) -> None:
        if n < 1:
            raise ValueError("no training clips: collect more data, or use shorter clips (clip_length)")
        if weights is not None and (weights.shape != (n,) or not bool((weights >= 0).all()) or weights.sum() <= 0):
            raise ValueError(f"clip weights must be {n} non-negative numbers, not all zero")
        self.n, self.batch_size, self.seed, self.start, self.rank = n, batch_size, seed, start, rank
        self.weights = None if weights is None else weights.double()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            g = torch.Generator().manual_seed(step_seed(self.seed, step, self.rank) ^ 0x5EED)
            if self.weights is None:
                yield torch.randint(self.n, (self.batch_size,), generator=g).tolist()
            else:
                yield torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g).tolist()
            step += 1

    def __len__(self) -> int:
        return 2**62


LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, Any], int]]
"""(network, batch) -> (loss, scalars to log, frames in the batch)."""


def run_training(
    model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, cfg: Any, step: int, batches: Iterator[Any],
    loss_fn: LossFn, evaluate: Callable[[int], tuple[dict[str, Any], dict[str, Any]]],
    checkpoint: Callable[[int, dict[str, Any]], None], log_path: Path, state_path: Path, ranks: Ranks = Ranks(),
    generator: torch.Generator | None = None, budget: Budget = UNLIMITED, what: str = "training",
) -> int:
    """Train ``model`` from ``step`` to ``cfg.steps``; returns the last step.

    ``cfg`` supplies lr, warmup, steps, grad_clip, log_every, eval_every and seed; each step reseeds torch's
    global RNG and ``generator`` from (seed, step, rank), so a resumed run equals an uninterrupted one. ``evaluate(step)`` ->
    (stats kept with the checkpoint, row to log); ``checkpoint(step, stats)`` writes the files, the resumable
    state first. Stop signals during a write wait for it; an interrupt writes the state of the step reached
    (unless that step is already saved) and says "saved" only once the write succeeded. When ``budget`` is
    spent after a step, that step is saved likewise and :class:`BudgetReached` is raised (``what`` names the
    stage in its message); a progress bar shows the steps and the time left."""
    net = model
    if ranks.world_size > 1:
        dev = next(model.parameters()).device
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    stats: dict[str, Any] = {}
    saved = step if state_path.exists() else -1  # the step whose state is on disk
    t0, seen = time.perf_counter(), 0
    bar = progress_bar(cfg.steps, step, what, disable=not ranks.main)
    device = next(model.parameters()).device
    try:
        while step < cfg.steps:
            batch = next(batches)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            # This step's randomness depends on the step alone: resuming reproduces the uninterrupted run.
            torch.manual_seed(step_seed(cfg.seed, step, ranks.rank))
            if generator is not None:
                generator.manual_seed(step_seed(cfg.seed, step, ranks.rank) ^ 0x1E7E15)
            loss, parts, frames = loss_fn(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(model)
            step += 1
            seen += frames * ranks.world_size
            if ranks.main and (step % cfg.log_every == 0 or step == cfg.steps):
                row = {"step": step, **{k: float(v) for k, v in parts.items()}, "grad_norm": gnorm.item(),
                       "lr": lr_at(step, cfg), "frames_per_s": seen / (time.perf_counter() - t0)}
                log_row(log_path, row)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                if ranks.main:
                    stats, row = evaluate(step)
                    log_row(log_path, {"step": step, **row})
                    with signals_deferred(f"writing the step-{step} checkpoint"):
                        checkpoint(step, stats)
                        saved = step
                if ranks.world_size > 1:
                    dist.barrier()
            bar.update(1)
            if budget.limited:
                bar.set_postfix_str(budget.left_text())
                if _agreed_expired(budget, ranks, device):
                    if ranks.main and saved != step:
                        with signals_deferred(f"writing the step-{step} checkpoint"):
                            checkpoint(step, stats)
                            saved = step
                    raise BudgetReached(what, f"step {step} of {cfg.steps} (saved: {state_path})")
    except KeyboardInterrupt:
        if ranks.main and saved != step:
            print(f"interrupted at step {step}: saving a resumable state to {state_path} (another Ctrl-C waits "
                  "for the save)", flush=True)
            try:
                with signals_deferred("saving", raise_after=False):
                    checkpoint(step, stats)
            except Exception as e:
                print(f"could NOT save step {step} ({type(e).__name__}: {e}); the last saved state is on disk",
                      flush=True)
                raise
            print(f"saved step {step}: {state_path}", flush=True)
        elif ranks.main:
            print(f"interrupted at step {step}, which is saved: {state_path}", flush=True)
        raise
    finally:
        bar.close()
    return step


def _agreed_expired(budget: Budget, ranks: Ranks, device: torch.device) -> bool:
    """Whether the budget is spent, as rank 0 sees it (every rank stops at the same step)."""
    flag = torch.tensor([1.0 if budget.expired() else 0.0], device=device)
    if ranks.world_size > 1:
        dist.broadcast(flag, 0)
    return bool(flag.item())


def progress_bar(total: int, start: int, what: str, disable: bool = False):
    """A tqdm bar over optimiser steps (log lines print above it)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=min(start, total), desc=what, unit="step", disable=disable, leave=False,
                dynamic_ncols=True)
