"""The reward and termination heads, teacher-forced on real transitions: what the world would pay for what
really happened. Also the check of ``stage=agent_eval`` on an agent's real episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worldsim.world import World


@torch.no_grad()
def teacher_forced_heads(world: World, frames: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reward and termination probability the model predicts for each real frame uint8 (T, H, W, 3), given the
    real past (windows of W real frames at the context noise level). -> (T,), (T,)"""
    dev = world.device
    w = world.dit.cfg.window
    rewards, dones = np.zeros(len(frames), np.float32), np.zeros(len(frames), np.float32)
    encode = world.latent_encoder()
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
    frames = np.concatenate([e.frames for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    rewards = np.concatenate([e.rewards for e in episodes])
    terms = np.concatenate([e.terminated for e in episodes])
    pred_r, pred_d = teacher_forced_heads(world, frames, actions)
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
    for t in traces:
        p, _ = teacher_forced_heads(world, t["frames"], t["actions"])
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
