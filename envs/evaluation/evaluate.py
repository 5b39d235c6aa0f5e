"""Fidelity of a world against its real env (``python train.py world=NAME stage=eval checkpoint=PATH``).

Real trajectories are played fresh with the world's data policy on held-out seeds (tracks never seen in
training); the world model replays the same actions from the same start. The measures run in turn, each from
its own module; written to ``out``: ``report.json``, ``psnr_by_horizon.png``, ``long_horizon.png`` and
``side_by_side.mp4`` (real | generated).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.evaluation import goals, key_objects
from envs.evaluation.consistency import mean_warp_error, warp_report
from envs.evaluation.controllability import controllability
from envs.evaluation.fidelity import fidelity_at, reconstruct
from envs.evaluation.heads import reward_termination
from envs.evaluation.long_horizon import long_episodes, long_rollout, segments
from envs.evaluation.plots import plot_report
from envs.evaluation.real import real_run
from envs.evaluation.realism import realism
from envs.evaluation.response import action_response
from envs.evaluation.second_driver import second_driver
from envs.evaluation.track_memory import track_memory
from worldsim.device import resolve_device, resolve_dtype
from worldsim.metrics.image import psnr_frames
from worldsim.video import write_mp4
from worldsim.world import load_world


@dataclass
class EvalConfig:
    """What the evaluation measures (``eval.*`` overrides)."""

    out: str = "runs/world/eval"
    """Folder for the report, plots and video."""
    episodes: int = 8
    """Held-out real episodes for the open-loop fidelity figures."""
    context: int = 8
    """Real frames given as context before generation."""
    horizons: tuple[int, ...] = (1, 4, 16, 64)
    """Open-loop horizons (frames after the context) at which PSNR and SSIM are reported."""
    skip: int = 50
    """Frames of each episode skipped before the context (CarRacing zooms in for 50)."""
    long_frames: int = 5000
    """Length of the long-horizon rollout (actions from real episodes of the data policy)."""
    segment: int = 500
    """Segment length for the long-horizon statistics."""
    idm_steps: int = 400
    """Training steps of the inverse-dynamics classifier (on the long run's real transitions)."""
    response_frames: int = 16
    """Action response: frames each action is held for, from the held-out contexts."""
    seed: int = 1_000_003
    """Base seed of the held-out episodes (collection uses 0 by default)."""
    device: str = "auto"
    """Device of the world model."""
    sampling_steps: int | None = None
    """Override the world's sampling steps (to choose the default by measurement)."""
    guidance: float | None = None
    """Override the world's action guidance scale (likewise)."""
    start_level: float | None = None
    """Override the level the sampler noises the previous frame to as its start (1: pure noise; likewise)."""
    window: int | None = None
    """Override the frames each new frame attends to (at most the trained window; likewise)."""
    dtype: str = "auto"
    """The DiT's dtype, as the env picks it: auto (bfloat16 on a GPU or a CPU with native bf16, else float32),
    float32 or bfloat16."""
    second_driver: str | None = "pursuit"
    """A driver that did not collect the training data (a world.policy name): fidelity and realism are measured
    under it too, on other held-out tracks. None (or a world whose env it cannot drive) skips it."""
    second_episodes: int = 24
    """Held-out episodes of the second driver."""
    second_skip_max: int = 400
    """The second driver's clips start at a random frame in [skip, second_skip_max]: mid-track."""
    realism_steps: int = 1000
    """Training steps of the real-vs-generated classifier (two-sample test). On the shipped world under the
    second driver: 0.71 / 0.75 (frames / pairs) after 300 steps, 0.82 / 0.83 after 1,000, 0.85 / 0.84 after
    2,000 — fewer steps flatter a world."""
    realism_seeds: int = 1
    """Classifier seeds of the two-sample test; each seed fits twice (either half of the episodes trains it, the
    other scores it) and the report quotes the mean. One fit on the data driver's 8 episodes swung 0.65-0.94 with
    its seed on one world; more seeds cost two fits each."""
    memory_episodes: int = 8
    """Track memory (CarRacing): held-out starts from which a scripted excursion leaves the road and comes
    back, in the real env and in the world under the same keys (0 skips it)."""


def evaluate_world(checkpoint: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    """Run every measurement and write the report; returns it."""
    if cfg.realism_seeds < 1:
        raise ValueError(f"eval.realism_seeds={cfg.realism_seeds}: the classifier needs at least one seed (1 fits it "
                         "twice, each half of the episodes training it once)")
    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    world = load_world(checkpoint, device, dtype)
    world.sampler = world.sampler.override(steps=cfg.sampling_steps, guidance=cfg.guidance,
                                           start_level=cfg.start_level, window=cfg.window)
    horizon, c, s = max(cfg.horizons), cfg.context, cfg.skip
    if c > world.dit.cfg.window:
        raise ValueError(f"eval.context={c} exceeds the world's window {world.dit.cfg.window}")
    # 1. Open-loop fidelity on held-out episodes.
    need = s + c + horizon
    eps = [e for e in real_run(world, need, cfg.episodes, cfg.seed) if len(e) >= need]
    if not eps:
        raise RuntimeError(f"no held-out episode reached {need} frames; lower eval.horizons or eval.skip")
    real = np.stack([e.frames[s : s + c + horizon] for e in eps])  # (E, c + H, ...)
    acts = np.stack([e.actions[s : s + c + horizon] for e in eps])
    gen = world.simulator(len(real), seed=cfg.seed).rollout(real[:, :c], acts[:, :c], acts[:, c:])
    fidelity = fidelity_at(real, gen, c, cfg.horizons)
    looks = realism(real[:, c:], gen, cfg.realism_steps, cfg.seed, cfg.realism_seeds) if len(real) >= 2 else None
    # 2. Temporal consistency of generated vs real clips; the real frames through the VAE are the reference
    # for what the autoencoder alone does to them.
    warp_gen, warp_real = mean_warp_error(gen), mean_warp_error(real[:, c:])
    recon = reconstruct(world, real[:, c - 1 :])
    warp = warp_report(warp_gen, warp_real, mean_warp_error(recon[:, 1:]))
    recon_psnr = float(psnr_frames(recon[:, 1:], real[:, c:]).mean())
    # 3. Long horizon under the data policy's actions (real episodes played back to back).
    long_eps = long_episodes(world, cfg.long_frames, c, s, cfg.seed)
    long_real, long_gen = long_rollout(world, long_eps, cfg.long_frames, c, s, cfg.seed)
    segs = segments(long_real, long_gen, c, cfg.long_frames, cfg.segment)
    # 4. Action controllability: an inverse-dynamics classifier trained on real transitions; the keys held.
    control = controllability(world.action_space, long_eps, real, gen, recon, acts, c, cfg.idm_steps)
    response, held, model_last, real_held = action_response(world, eps, real, acts, c, s, cfg.response_frames,
                                                            cfg.seed)
    # 5. Reward and termination heads, teacher-forced on held-out real transitions.
    heads = reward_termination(world, long_eps)
    other = second_driver(world, cfg)
    memory = track_memory(world, cfg)
    game = key_objects.key_object_game(world)
    objects = key_objects.key_objects(game, real, recon, gen, c)
    if game == "pong":
        key_objects.paddle_response(objects, real, c, model_last, real_held, held)
    key_objects.add_segment_rates(game, segs, long_real, long_gen, c, cfg.segment)
    key_objects.add_long_rollout_punches(game, objects, long_real, long_gen, c)
    report = {
        "checkpoint": str(checkpoint), "world": world.name, "config": asdict(cfg), "episodes": len(eps),
        "sampler": asdict(world.sampler), "device": str(world.device), "dtype": str(dtype).removeprefix("torch."),
        "fidelity_by_horizon": fidelity,
        "realism": looks,
        "second_driver": other,
        "track_memory": memory,
        "key_objects": objects,
        "vae_reconstruction_psnr": recon_psnr,
        "warp_error": warp,
        "long_horizon": segs, "controllability": control, "action_response": response,
        "reward_termination": heads,
        "goals": {**goals.fidelity_goals(fidelity, control, warp, segs), **goals.second_driver_goals(other),
                  **goals.key_object_goals(game, objects, segs)},
        "seconds": time.perf_counter() - started,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, out)
    side = np.concatenate([real[:4], np.concatenate([real[:4, :c], gen[:4]], 1)], axis=3)  # (4, T, H, 2W, 3)
    write_mp4(out / "side_by_side.mp4", np.concatenate(list(side), axis=1), world.fps, scale=4)
    return report
