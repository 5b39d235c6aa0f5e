"""The reward and termination heads, teacher-forced on real transitions: what the world would pay for what
really happened. Also the check of ``stage=agent_eval`` on an agent's real episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worldsim.diffusion.flow import add_noise, draft_inputs
from worldsim.models.latent_reward import previous_latents
from worldsim.world import World


@torch.no_grad()
def teacher_forced_heads(world: World, frames: np.ndarray, actions: np.ndarray,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reward and termination probability the model predicts for each frame of one real episode, uint8 (T, H, W, 3)
    with its actions (T, ...), read as the engine reads them, only with real frames as the past: each frame with
    at least half a window of real frames before it (windows of W frames, W/2 apart), every frame at the level and
    noise the engine gives it (a ``commit=pass`` world: the frame itself noised to the context level; a
    ``commit=draft`` world: its previous frame noised to the draft level, the input of the one call that reads
    the heads). ``seed`` fixes the noise. -> (T,), (T,)"""
    dev, cfg = world.device, world.dit.cfg
    w = cfg.window
    stride = max(1, w // 2)
    dtype = next(world.dit.parameters()).dtype
    rewards, dones = np.zeros(len(frames), np.float32), np.zeros(len(frames), np.float32)
    encode = world.latent_encoder()
    gen = torch.Generator().manual_seed(seed)
    done_to = 0  # frames [0, done_to) are read
    while done_to < len(frames):
        e = min(len(frames), done_to + (w if done_to == 0 else stride))
        s = max(0, e - w)
        z = encode(torch.from_numpy(frames[s:e][None]))
        noise = torch.randn(z.shape, generator=gen).to(z.device)
        if cfg.commit == "draft":
            x, lv = draft_inputs(z, cfg.draft_level, noise)
        else:
            lv = torch.full(z.shape[:2], world.sampler.context_level, device=z.device)
            x = add_noise(z, lv, noise)
        a = torch.as_tensor(actions[s:e][None], device=dev)
        null = torch.zeros(z.shape[:2], dtype=torch.bool, device=dev)
        null[:, 0] = s == 0  # nothing led to the reset frame
        _, r, d = world.dit(x.to(dtype), lv.to(dev), a, null, start=s)
        new = slice(done_to - s, e - s)
        if world.dit.latent_reward is not None:  # the engine's: from the clean latents of the frame and the last
            paid = world.dit.latent_reward.expected(previous_latents(z).to(dtype), z.to(dtype))[0, new]
        else:
            paid = cfg.reward(r[0, new])
        rewards[done_to:e] = paid.cpu().numpy()
        dones[done_to:e] = torch.sigmoid(d[0, new].float()).cpu().numpy()
        done_to = e
    return rewards, dones


def sum_correlation(pred: np.ndarray, real: np.ndarray, k: int) -> float | None:
    """Correlation of sums over consecutive blocks of ``k`` frames (None when the real sums do not vary)."""
    n = len(real) // k * k
    p, r = pred[:n].reshape(-1, k).sum(1), real[:n].reshape(-1, k).sum(1)
    return _correlation(p, r) if len(r) > 1 else None


def _correlation(pred: np.ndarray, real: np.ndarray) -> float | None:
    """Pearson correlation, None where either side is constant (a sign head that pays 0 on every frame)."""
    return float(np.corrcoef(pred, real)[0, 1]) if real.std() > 0 and pred.std() > 0 else None


def reward_termination(world: World, episodes: list) -> dict[str, Any]:
    """The heads on whole real episodes, against their real rewards and terminations."""
    rewards = np.concatenate([e.rewards for e in episodes])
    terms = np.concatenate([e.terminated for e in episodes])
    heads = [teacher_forced_heads(world, e.frames, e.actions, seed=i) for i, e in enumerate(episodes)]
    pred_r, pred_d = np.concatenate([h[0] for h in heads]), np.concatenate([h[1] for h in heads])
    return {"reward_mae": float(np.abs(pred_r - rewards).mean()),
            "reward_mae_predict_mean": float(np.abs(rewards.mean() - rewards).mean()),
            "reward_correlation": _correlation(pred_r, rewards),
            # What an agent that holds each action for 4 frames is paid, and the whole run's return: the world's
            # sums against the real ones (a ratio under 1: imagined returns fall short of real ones).
            "reward_correlation_4_frames": sum_correlation(pred_r, rewards, 4),
            "return_predicted_over_real": float(pred_r.sum() / rewards.sum()) if rewards.sum() else None,
            "termination_frames": int(terms.sum()),
            "termination_prob_at_terminal": float(pred_d[terms].mean()) if terms.any() else None,
            "termination_prob_elsewhere": float(pred_d[~terms].mean()),
            "termination_accuracy": float(((pred_d >= 0.5) == terms).mean())}


def reward_on_traces(world: World, traces: list[dict]) -> dict[str, Any] | None:
    """The world's reward head on an agent's real episodes (teacher-forced: real frames as its past): per-frame
    correlation with the real reward, and predicted vs real return — is the world's reward what the agent
    learned to chase? ``traces``: dicts of ``frames``, ``actions``, ``rewards`` (frame 0 is the reset)."""
    if not traces:
        return None
    pred, real = [], []
    for i, t in enumerate(traces):
        p, _ = teacher_forced_heads(world, t["frames"], t["actions"], seed=i)
        pred.append(p[1:])
        real.append(t["rewards"][1:].astype(np.float32))
    p, r = np.concatenate(pred), np.concatenate(real)
    return {"episodes": len(traces), "frames": len(p), "per_frame_correlation": _correlation(p, r),
            "predicted_return": float(np.mean([x.sum() for x in pred])), "real_return": float(np.mean([x.sum() for x in real]))}


def ended_episodes(data_dir, limit: int | None = None) -> list:
    """The episodes of a data folder that ended by termination (``terminated`` on their last frame: the car left
    the map, the bout was decided), in folder order, at most ``limit``."""
    from worldsim.data.dataset import EpisodeDataset

    data = EpisodeDataset(data_dir, allow_mixed=True)
    ended = [i for i, ref in enumerate(data.refs) if data.ended(ref)]
    return [data.episode(i) for i in ended[:limit]]


def main(argv: list[str] | None = None) -> None:
    """``python -m envs.evaluation.heads DATA WORLD [WORLD ...]``: each world's reward and termination heads on the
    episodes of DATA that ended by termination, one JSON line a world. Does the world know where the game ends
    and what it pays there? (An agent trained in a world that never ends an episode learns nothing of it.)"""
    import argparse
    import json

    from worldsim.world import load_world

    ap = argparse.ArgumentParser(prog="python -m envs.evaluation.heads", description=main.__doc__)
    ap.add_argument("data", help="a data folder (stage=collect, agent_eval.record, the loop's rounds)")
    ap.add_argument("worlds", nargs="+", help="world files")
    ap.add_argument("--episodes", type=int, default=8, help="at most this many ended episodes (default 8)")
    args = ap.parse_args(argv)
    if args.episodes < 1:
        ap.error(f"--episodes must be >= 1, got {args.episodes}")
    episodes = ended_episodes(args.data, args.episodes)
    if not episodes:
        raise SystemExit(f"{args.data}: no episode ended by termination (only time limits); record episodes that "
                         "end early, e.g. an agent's with agent_eval.record")
    for w in args.worlds:
        print(json.dumps({"world": w, "episodes": len(episodes), **reward_termination(load_world(w), episodes)}),
              flush=True)


if __name__ == "__main__":
    main()
