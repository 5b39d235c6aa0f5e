"""Fidelity of a world against its real env (``python train.py world=NAME stage=eval checkpoint=PATH``).

Real trajectories are played fresh with the world's data policy on held-out seeds
(tracks never seen in training); the world model replays the same actions from the
same start. Written to ``out``: ``report.json``, ``psnr_by_horizon.png``,
``long_horizon.png`` and ``side_by_side.mp4`` (real | generated).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldsim.device import resolve_device, resolve_dtype
from worldsim.frames import to_model, to_uint8
from worldsim.inverse_dynamics import accuracy, train_inverse_dynamics, transitions
from worldsim.metrics import (
    frame_activity,
    frame_change,
    histogram_distance,
    psnr_frames,
    sharpness,
    ssim_frames,
    warp_error,
)
from worldsim.response import held_actions, held_last_frames, spreads
from worldsim.two_sample import two_sample_accuracy
from worldsim.video import write_mp4
from worldsim.world import World, load_world

from . import boxing_objects, pong_objects
from .boxing import is_boxing
from .collect import run_episode
from .pong import is_pong
from .source import source_world


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
    memory_episodes: int = 8
    """Track memory (CarRacing): held-out starts from which a scripted excursion leaves the road and comes
    back, in the real env and in the world under the same keys (0 skips it)."""


def _real_run(world: World, frames_needed: int, episodes: int, seed: int, policy: str | None = None) -> list:
    """Episodes of the real env under the data policy (or ``policy``), each at most ``frames_needed`` frames
    (0: full)."""
    source = dict(world.source, **({"policy": policy} if policy else {}))
    if frames_needed:
        source["max_episode_steps"] = frames_needed - 1
    sw = source_world(source)
    env = sw.make_env()
    try:
        return [run_episode(sw, env, i, seed) for i in range(episodes)]
    finally:
        env.close()


@torch.no_grad()
def _teacher_forced_heads(world: World, frames: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reward and termination probability the model predicts for each real frame, given the real past
    (windows of W real frames at the context noise level). -> (T,), (T,)"""
    from worldsim.training.dynamics_trainer import LatentEncoder

    dev = world.device
    w = world.dit.cfg.window
    rewards, dones = np.zeros(len(frames), np.float32), np.zeros(len(frames), np.float32)
    encode = LatentEncoder(world.vae, {"latent_mean": world.latent_mean.tolist(), "latent_std": world.latent_std.tolist()}, dev)
    level = world.sampler.context_level
    for s in range(0, len(frames), w):
        e = min(len(frames), s + w)
        z = encode(torch.from_numpy(frames[s:e][None]))
        z = (1 - level) * z  # the context level's expected signal, without its noise
        lv = torch.full(z.shape[:2], level, device=dev)
        a = torch.as_tensor(actions[s:e][None], device=dev)
        null = torch.zeros(z.shape[:2], dtype=torch.bool, device=dev)
        null[:, 0] = s == 0
        _, r, d = world.dit(z.to(next(world.dit.parameters()).dtype), lv, a, null, start=s)
        rewards[s:e] = world.dit.cfg.reward(r[0]).cpu().numpy()
        dones[s:e] = torch.sigmoid(d[0].float()).cpu().numpy()
    return rewards, dones


def _sum_correlation(pred: np.ndarray, real: np.ndarray, k: int) -> float | None:
    """Correlation of sums over consecutive blocks of ``k`` frames (None when the real sums do not vary)."""
    n = len(real) // k * k
    p, r = pred[:n].reshape(-1, k).sum(1), real[:n].reshape(-1, k).sum(1)
    return float(np.corrcoef(p, r)[0, 1]) if len(r) > 1 and r.std() > 0 and p.std() > 0 else None


def real_held_last_frames(world: World, episodes: list, end: int, frames: int, seed: int) -> tuple[list, np.ndarray] | None:
    """The action-response test in the real env: each episode is replayed from its seed up to frame ``end`` - 1
    (the last context frame), then every action is held for ``frames`` frames: (the actions, the last frames
    (E, n, H, W, 3) float32). None when a replay does not reproduce the recorded frame (the env is not
    deterministic given its seed and actions)."""
    acts = held_actions(world.action_space, 4, seed)
    sw = source_world(dict(world.source))
    env = sw.make_env()
    last = []
    try:
        for e in episodes:
            runs = []
            for act in acts:
                obs, _ = env.reset(seed=e.info["seed"])
                for a in e.actions[1:end]:
                    obs = env.step(a)[0]
                if not np.array_equal(obs, e.frames[end - 1]):
                    return None
                for _ in range(frames):
                    obs, _, terminated, truncated, _ = env.step(act)
                    if terminated or truncated:  # the episode ended while the key was held: keep its last frame
                        break
                runs.append(obs.astype(np.float32))
            last.append(np.stack(runs))
    finally:
        env.close()
    return acts, np.stack(last)


def realism(real: np.ndarray, gen: np.ndarray, steps: int, seed: int) -> dict[str, float]:
    """What a viewer sees, generated clips (N, T, H, W, 3) against the real ones they replay: sharpness and
    frame-to-frame change as ratios to the real game (1 = the same), and the two-sample classifier's held-out
    accuracy on single frames and on consecutive pairs (0.5 = it cannot tell them apart)."""
    frames_of = real.reshape(-1, *real.shape[2:]), gen.reshape(-1, *gen.shape[2:])
    return {"sharpness_ratio": sharpness(frames_of[1]) / max(sharpness(frames_of[0]), 1e-9),
            "frame_change_ratio": frame_change(gen) / max(frame_change(real), 1e-9),
            "classifier_accuracy_frames": two_sample_accuracy(real, gen, False, steps, seed=seed),
            "classifier_accuracy_pairs": two_sample_accuracy(real, gen, True, steps, seed=seed)}


def fidelity_at(real: np.ndarray, gen: np.ndarray, c: int, horizons) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of generated frames (E, H, ...) against real clips (E, c + H, ...) at each horizon, next to
    copying the last context frame."""
    out = {}
    for h in horizons:
        r, g, last = real[:, c + h - 1], gen[:, h - 1], real[:, c - 1]
        out[str(h)] = {
            "psnr": float(psnr_frames(g, r).mean()), "ssim": float(ssim_frames(g, r).mean()),
            "copy_last_psnr": float(psnr_frames(last, r).mean()), "copy_last_ssim": float(ssim_frames(last, r).mean()),
        }
    return out


def second_driver(world: World, cfg: EvalConfig) -> dict[str, Any] | None:
    """Fidelity and realism under a driver that did not collect the data, from random mid-track starts of
    held-out tracks. None when the world's env is not one that driver can drive."""
    from .source import WorldConfig

    if not cfg.second_driver or cfg.second_episodes < 2:
        return None
    try:
        WorldConfig(kind=world.source.get("kind", "gym"), policy=cfg.second_driver).validate()
    except ValueError:
        return None
    c, horizon = cfg.context, max(cfg.horizons)
    limit = int(world.source.get("max_episode_steps") or 1000) + 1
    top = max(cfg.skip, min(cfg.second_skip_max, limit - c - horizon))
    rng = np.random.default_rng(cfg.seed + 31)
    starts = rng.integers(cfg.skip, top + 1, cfg.second_episodes)
    eps = _real_run(world, top + c + horizon, cfg.second_episodes, cfg.seed + 104729, cfg.second_driver)
    keep = [(e, int(s)) for e, s in zip(eps, starts, strict=True) if len(e) >= s + c + horizon]
    if len(keep) < 2:
        return None
    real = np.stack([e.frames[s : s + c + horizon] for e, s in keep])
    acts = np.stack([e.actions[s : s + c + horizon] for e, s in keep])
    gen = world.simulator(len(real), seed=cfg.seed + 2).rollout(real[:, :c], acts[:, :c], acts[:, c:])
    return {"driver": cfg.second_driver, "episodes": len(keep), "starts": [s for _, s in keep],
            "fidelity_by_horizon": fidelity_at(real, gen, c, cfg.horizons),
            "realism": realism(real[:, c:], gen, cfg.realism_steps, cfg.seed)}


def road_mask(frames: np.ndarray) -> np.ndarray:
    """CarRacing's road pixels: grey (R = G = B within 12) between 70 and 150 (the HUD bar is black, grass green).
    uint8 (..., H, W, 3) -> bool (..., H, W)."""
    f = frames.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (np.abs(r - g) < 12) & (np.abs(g - b) < 12) & (g > 70) & (g < 150)


def road_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of the road masks of two clips (..., H, W, 3) -> (...)."""
    ma, mb = road_mask(a), road_mask(b)
    inter, union = (ma & mb).sum((-2, -1)), (ma | mb).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def excursion() -> np.ndarray:
    """Keys that take the car off the road to one side and back across it (CarRacing's discrete actions)."""
    from .carracing import GAS, LEFT, RIGHT

    return np.array([GAS] * 8 + [LEFT] * 10 + [GAS] * 12 + [RIGHT] * 20 + [GAS] * 12 + [LEFT] * 10 + [GAS] * 8)


def track_memory(world: World, cfg: EvalConfig) -> dict[str, Any] | None:
    """Does the world keep the track while the car leaves it? From held-out mid-track starts, the same scripted
    excursion (off the road and back) runs in the real env (replayed from the episode's seed) and in the world;
    the road masks of the two are compared frame by frame (IoU, 1 = the same road). Next to it: the IoU of the
    last context frame with the real frames (a world that froze the picture)."""
    if world.source.get("kind") != "carracing" or cfg.memory_episodes < 1:
        return None
    c, start = cfg.context, cfg.skip + 50
    eps = _real_run(world, start + c, cfg.memory_episodes, cfg.seed + 15485863)
    script = excursion()
    sw = source_world(dict(world.source, max_episode_steps=start + c + len(script) + 1))
    env = sw.make_env()
    real, ctx, ctx_acts = [], [], []
    try:
        for e in eps:
            if len(e) < start + c:
                continue
            obs, _ = env.reset(seed=e.info["seed"])
            for a in e.actions[1 : start + c]:
                obs = env.step(a)[0]
            if not np.array_equal(obs, e.frames[start + c - 1]):
                return None  # the env does not replay deterministically
            frames = []
            for a in script:
                obs, _, terminated, truncated, _ = env.step(a)
                frames.append(obs)
                if terminated or truncated:
                    break
            if len(frames) == len(script):
                real.append(np.stack(frames))
                ctx.append(e.frames[start : start + c])
                ctx_acts.append(e.actions[start : start + c])
    finally:
        env.close()
    if not real:
        return None
    real = np.stack(real)
    gen = world.simulator(len(real), seed=cfg.seed + 3).rollout(np.stack(ctx), np.stack(ctx_acts),
                                                                 np.repeat(script[None], len(real), 0))
    iou = road_iou(gen, real).mean(0)  # (L,)
    frozen = road_iou(np.stack(ctx)[:, -1:], real).mean(0)
    tail = slice(len(script) - 10, None)
    return {"episodes": len(real), "frames": len(script), "road_iou_by_frame": iou.tolist(),
            "road_iou_last_10": float(iou[tail].mean()), "frozen_road_iou_last_10": float(frozen[tail].mean()),
            "road_fraction_last_10": {"real": float(road_mask(real[:, tail]).mean()),
                                      "generated": float(road_mask(gen[:, tail]).mean())}}


def _second_driver_goals(other: dict[str, Any] | None) -> dict[str, bool]:
    """The shipped world's goals under the second driver (issue 16): detail without shimmer, hard to tell apart."""
    if not other:
        return {}
    h16, look = other["fidelity_by_horizon"].get("16"), other["realism"]
    return {"second_driver_psnr_16_ge_copy_last_plus_3": bool(h16) and h16["psnr"] >= h16["copy_last_psnr"] + 3,
            "second_driver_sharpness_within_0.9_1.1": 0.9 <= look["sharpness_ratio"] <= 1.1,
            "second_driver_frame_change_within_0.9_1.1": 0.9 <= look["frame_change_ratio"] <= 1.1,
            "second_driver_classifier_frames_le_0.70": look["classifier_accuracy_frames"] <= 0.70,
            "second_driver_classifier_pairs_le_0.75": look["classifier_accuracy_pairs"] <= 0.75}


def key_objects(game: str | None, real: np.ndarray, recon: np.ndarray, gen: np.ndarray,
                c: int) -> dict[str, Any] | None:
    """Pong's ball and paddles (envs/pong_objects.py), Boxing's boxers (envs/boxing_objects.py) in the
    reconstructed, generated and copy-last frames of the fidelity clips, against the real ones; None for other
    games (``game`` from ``key_object_game``). ``real`` (E, c + H, ...), ``recon`` (E, 1 + H, ...) from the last
    context frame on, ``gen`` (E, H, ...)."""
    if game is None:
        return None
    target = real[:, c:]
    copy_last = np.broadcast_to(real[:, c - 1 : c], target.shape)
    if game == "boxing":
        return {"reconstructed": boxing_objects.compare(target, recon[:, 1:]),
                "generated": boxing_objects.compare(target, gen),
                "copy_last": boxing_objects.compare(target, copy_last)}
    return {"reconstructed": pong_objects.compare(target, recon[:, 1:]),
            "generated": pong_objects.compare(target, gen),
            "copy_last": pong_objects.compare(target, copy_last),
            "generated_by_frame_ball_rate": _ball_rate_by_frame(gen),
            "real_by_frame_ball_rate": _ball_rate_by_frame(target)}


def key_object_game(world: World) -> str | None:
    """``pong`` or ``boxing`` where the world's game has key objects read from its 64x64 frames, else None."""
    env_id = str(world.source.get("env_id", ""))
    if world.source.get("frame_size", pong_objects.FRAME_SIZE) != pong_objects.FRAME_SIZE:
        return None
    return "pong" if is_pong(env_id) else "boxing" if is_boxing(env_id) else None


def _ball_rate_by_frame(clips: np.ndarray) -> list[float]:
    """(E, T, 64, 64, 3) -> the share of clips showing a ball at each frame (T,)."""
    return pong_objects.find_ball(clips)[0].mean(0).tolist()


def _key_object_goals(game: str | None, objects: dict[str, Any] | None,
                      segments: list[dict[str, Any]]) -> dict[str, bool]:
    if objects is None:
        return {}
    recon = objects["reconstructed"]
    if game == "boxing":
        return {"vae_keeps_boxers_recall_ge_0.9": min(recon["white_recall"] or 0, recon["black_recall"] or 0) >= 0.9,
                # Neither boxer fades out of a long rollout: every segment shows both in 90% of its frames.
                "boxers_survive_long_rollout": all(x["generated_boxer_rate"] >= 0.9 * x["real_boxer_rate"]
                                                   for x in segments)}
    return {"vae_keeps_ball_recall_ge_0.9": (recon["ball_recall"] or 0) >= 0.9,
            # The ball does not fade out of a long rollout: every segment shows it at least half as often as the game.
            "ball_survives_long_rollout": all(x["generated_ball_rate"] >= 0.5 * x["real_ball_rate"] for x in segments),
            # In place of the inverse-dynamics ratio, which is meaningless on Pong: the paddle follows the keys.
            **({"paddle_gap_ratio_ge_0.9": (paddle["ratio"] or 0) >= 0.9,
                "paddle_direction_agreement_ge_0.9": (paddle["direction_agreement"] or 0) >= 0.9}
               if (paddle := objects.get("paddle_response")) else {})}


def _reconstruct(world: World, clips: np.ndarray) -> np.ndarray:
    """Real clips (E, T, H, W, 3) through the world's VAE (encode, decode): what the world model could at best show."""
    with torch.no_grad():
        return np.stack([to_uint8(world.vae.decode(world.vae.encode(to_model(c[None], world.device))))[0] for c in clips])


def evaluate_world(checkpoint: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    """Run every measurement and write the report; returns it."""
    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    world = load_world(checkpoint, device, dtype)
    world.sampler = world.sampler.override(steps=cfg.sampling_steps or None, guidance=cfg.guidance,
                                           start_level=cfg.start_level, window=cfg.window)
    horizon = max(cfg.horizons)
    c = cfg.context
    if c > world.dit.cfg.window:
        raise ValueError(f"eval.context={c} exceeds the world's window {world.dit.cfg.window}")
    # 1. Open-loop fidelity on held-out episodes.
    need = cfg.skip + c + horizon
    eps = [e for e in _real_run(world, need, cfg.episodes, cfg.seed) if len(e) >= need]
    if not eps:
        raise RuntimeError(f"no held-out episode reached {need} frames; lower eval.horizons or eval.skip")
    s = cfg.skip
    real = np.stack([e.frames[s : s + c + horizon] for e in eps])  # (E, c + H, ...)
    acts = np.stack([e.actions[s : s + c + horizon] for e in eps])
    gen = world.simulator(len(real), seed=cfg.seed).rollout(real[:, :c], acts[:, :c], acts[:, c:])
    fidelity = fidelity_at(real, gen, c, cfg.horizons)
    looks = realism(real[:, c:], gen, cfg.realism_steps, cfg.seed) if len(real) >= 2 else None
    # 2. Temporal consistency of generated vs real clips.
    warp_gen = float(np.mean([warp_error(x) for x in gen]))
    warp_real = float(np.mean([warp_error(x) for x in real[:, c:]]))
    # The real frames through the VAE: what the autoencoder alone does to them, a reference for each measure.
    recon = _reconstruct(world, real[:, c - 1 :])
    warp_recon = float(np.mean([warp_error(x) for x in recon[:, 1:]]))
    recon_psnr = float(psnr_frames(recon[:, 1:], real[:, c:]).mean())
    # 3. Long horizon under the data policy's actions (real episodes played back to back).
    long_eps, need_long = [], cfg.long_frames + c + s
    limit = int(world.source.get("max_episode_steps") or 1000) + 1
    while (have := sum(len(e) for e in long_eps)) < need_long:
        long_eps += _real_run(world, min(limit, need_long - have + s + 1), 1, cfg.seed + 7919 + len(long_eps))
    long_real = np.concatenate([e.frames for e in long_eps])[s : s + c + cfg.long_frames]
    long_acts = np.concatenate([e.actions for e in long_eps])[s : s + c + cfg.long_frames]
    long_gen = world.simulator(1, seed=cfg.seed + 1).rollout(long_real[None, :c], long_acts[None, :c],
                                                             long_acts[None, c:])[0]
    segments = []
    for k in range(0, cfg.long_frames, cfg.segment):
        g, r = long_gen[k : k + cfg.segment], long_real[c + k : c + k + cfg.segment]
        segments.append({"start": k, "histogram_distance": histogram_distance(g, r), "warp_error": warp_error(g),
                         "real_warp_error": warp_error(r), **{f"generated_{a}": b for a, b in frame_activity(g).items()},
                         **{f"real_{a}": b for a, b in frame_activity(r).items()}})
    # 4. Action controllability: an inverse-dynamics classifier trained on real transitions.
    controllability: dict[str, Any] = {}
    space = world.action_space
    if hasattr(space, "n"):
        n = int(space.n)
        pairs, labels = [], []
        for e in long_eps:
            p, a = transitions(e.frames, e.actions - int(space.start))
            pairs.append(p)
            labels.append(a)
        idm = train_inverse_dynamics(np.concatenate(pairs), np.concatenate(labels), n, steps=cfg.idm_steps)
        def clip_pairs(clips, clip_actions):
            both = [transitions(x, a - int(space.start)) for x, a in zip(clips, clip_actions, strict=True)]
            return np.concatenate([p for p, _ in both]), np.concatenate([a for _, a in both])

        rp, ra = clip_pairs(real[:, c - 1 :], acts[:, c - 1 :])  # real transitions over the generated span
        # Generated transitions: the first pairs the last real context frame with the first generated one.
        gp, ga = clip_pairs(np.concatenate([real[:, c - 1 : c], gen], 1), acts[:, c - 1 :])
        cp, ca = clip_pairs(recon, acts[:, c - 1 :])
        acc_real, acc_gen = accuracy(idm, rp, ra), accuracy(idm, gp, ga)
        # The same real transitions through the VAE: the share of the gap the autoencoder accounts for.
        controllability = {"idm_accuracy_real": acc_real, "idm_accuracy_generated": acc_gen,
                           "idm_accuracy_reconstructed": accuracy(idm, cp, ca),
                           "ratio": acc_gen / max(acc_real, 1e-9), "balanced": True, "classes": n}
    held, model_last = held_last_frames(world, real[:, :c], acts[:, :c], cfg.response_frames, cfg.seed)
    real_held = real_held_last_frames(world, eps, s + c, cfg.response_frames, cfg.seed)
    response = {"model": spreads(model_last[0], model_last[1], held, cfg.response_frames),
                "real": None if real_held is None else spreads(real_held[1], None, held, cfg.response_frames)}
    if response["real"]:
        response["model_vs_real"] = response["model"]["action_spread"] / max(response["real"]["action_spread"], 1e-9)
    # 5. Reward and termination heads, teacher-forced on held-out real transitions.
    all_frames = np.concatenate([e.frames for e in long_eps])
    all_acts = np.concatenate([e.actions for e in long_eps])
    all_rewards = np.concatenate([e.rewards for e in long_eps])
    all_terms = np.concatenate([e.terminated for e in long_eps])
    pred_r, pred_d = _teacher_forced_heads(world, all_frames, all_acts)
    heads = {"reward_mae": float(np.abs(pred_r - all_rewards).mean()),
             "reward_mae_predict_mean": float(np.abs(all_rewards.mean() - all_rewards).mean()),
             "reward_correlation": float(np.corrcoef(pred_r, all_rewards)[0, 1]) if all_rewards.std() > 0 else None,
             # What an agent that holds each action for 4 frames is paid, and the whole run's return: the world's
             # sums against the real ones (a ratio under 1: imagined returns fall short of real ones).
             "reward_correlation_4_frames": _sum_correlation(pred_r, all_rewards, 4),
             "return_predicted_over_real": float(pred_r.sum() / all_rewards.sum()) if all_rewards.sum() else None,
             "termination_frames": int(all_terms.sum()),
             "termination_prob_at_terminal": float(pred_d[all_terms].mean()) if all_terms.any() else None,
             "termination_prob_elsewhere": float(pred_d[~all_terms].mean()),
             "termination_accuracy": float(((pred_d >= 0.5) == all_terms).mean())}
    other = second_driver(world, cfg)
    memory = track_memory(world, cfg)
    game = key_object_game(world)
    objects = key_objects(game, real, recon, gen, c)
    if game == "boxing":
        for seg in segments:
            k = seg["start"]
            seg["generated_boxer_rate"] = boxing_objects.boxer_rate(long_gen[k : k + cfg.segment])
            seg["real_boxer_rate"] = boxing_objects.boxer_rate(long_real[c + k : c + k + cfg.segment])
    elif game == "pong":
        if real_held is not None:
            # Pong's controllability: the inverse-dynamics classifier is at chance on its real transitions (a few
            # pixels of paddle, FIRE = NOOP), so the paddle itself is read, world against game.
            objects["paddle_response"] = pong_objects.paddle_response(real[:, c - 1], model_last[0], real_held[1], held)
        for seg in segments:
            k = seg["start"]
            seg["generated_ball_rate"] = pong_objects.ball_rate(long_gen[k : k + cfg.segment])
            seg["real_ball_rate"] = pong_objects.ball_rate(long_real[c + k : c + k + cfg.segment])
    h16 = fidelity.get("16")
    report = {
        "checkpoint": str(checkpoint), "world": world.name, "config": asdict(cfg), "episodes": len(eps),
        "sampler": asdict(world.sampler), "device": str(world.device), "dtype": str(dtype).removeprefix("torch."),
        "fidelity_by_horizon": fidelity,
        "realism": looks,
        "second_driver": other,
        "track_memory": memory,
        "key_objects": objects,
        "vae_reconstruction_psnr": recon_psnr,
        "warp_error": {"generated": warp_gen, "real": warp_real, "ratio": warp_gen / max(warp_real, 1e-9),
                       "reconstructed": warp_recon, "reconstructed_ratio": warp_recon / max(warp_real, 1e-9)},
        "long_horizon": segments, "controllability": controllability, "action_response": response,
        "reward_termination": heads,
        "goals": {
            "psnr_1_step_ge_30": fidelity.get("1", {}).get("psnr", 0) >= 30,
            "psnr_16_ge_copy_last_plus_3": bool(h16) and h16["psnr"] >= h16["copy_last_psnr"] + 3,
            "idm_ratio_ge_0.9": controllability.get("ratio", 0) >= 0.9,
            "warp_error_within_1.2x": warp_gen <= 1.2 * warp_real,
            "no_collapse": all(x["histogram_distance"] < 0.5 and x["generated_pixel_std"] > 0.2 * x["real_pixel_std"]
                               and x["generated_frame_change"] > 0.1 * x["real_frame_change"] for x in segments),
            **_second_driver_goals(other),
            **_key_object_goals(game, objects, segments),
        },
        "seconds": time.perf_counter() - started,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plots(report, out)
    side = np.concatenate([real[:4], np.concatenate([real[:4, :c], gen[:4]], 1)], axis=3)  # (4, T, H, 2W, 3)
    write_mp4(out / "side_by_side.mp4", np.concatenate(list(side), axis=1), world.fps, scale=4)
    return report


def _plots(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = report["fidelity_by_horizon"]
    hs = [int(h) for h in f]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for i, metric in enumerate(("psnr", "ssim")):
        ax[i].plot(hs, [f[str(h)][metric] for h in hs], "o-", label="world model")
        ax[i].plot(hs, [f[str(h)][f"copy_last_{metric}"] for h in hs], "s--", label="copy last frame")
        ax[i].set_xscale("log", base=2)
        ax[i].set_xlabel("frames after the context")
        ax[i].set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
        ax[i].legend()
    fig.suptitle(f"{report['world']}: open-loop fidelity")
    fig.tight_layout()
    fig.savefig(out / "psnr_by_horizon.png", dpi=100)
    plt.close(fig)
    seg = report["long_horizon"]
    x = [s["start"] for s in seg]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(x, [s["histogram_distance"] for s in seg], "o-")
    ax[0].set_ylabel("colour histogram distance to real")
    ax[1].plot(x, [s["warp_error"] for s in seg], "o-", label="generated")
    ax[1].plot(x, [s["real_warp_error"] for s in seg], "s--", label="real")
    ax[1].set_ylabel("warping error")
    ax[1].legend()
    for a in ax:
        a.set_xlabel("frame")
    fig.suptitle(f"{report['world']}: long-horizon rollout")
    fig.tight_layout()
    fig.savefig(out / "long_horizon.png", dpi=100)
    plt.close(fig)
