"""Track memory (CarRacing): does the world keep the track while the car leaves it?"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.evaluation.real import real_run, replay_to
from envs.games.objects.carracing import excursion, road_iou, road_mask
from envs.games.source import source_game
from worldsim.world import World


def track_memory(world: World, cfg) -> dict[str, Any] | None:
    """From held-out mid-track starts, the same scripted excursion (off the road and back) runs in the real env
    (replayed from the episode's seed) and in the world; the road masks of the two are compared frame by frame
    (IoU, 1 = the same road). Next to it: the IoU of the last context frame with the real frames (a world that
    froze the picture). ``cfg``: the :class:`~envs.evaluation.evaluate.EvalConfig`; None for other games."""
    if world.source.get("kind") != "carracing" or cfg.memory_episodes < 1:
        return None
    c, start = cfg.context, cfg.skip + 50
    eps = real_run(world, start + c, cfg.memory_episodes, cfg.seed + 15485863)
    script = excursion()
    env = source_game(dict(world.source, max_episode_steps=start + c + len(script) + 1)).make_env()
    real, ctx, ctx_acts = [], [], []
    try:
        for e in eps:
            if len(e) < start + c:
                continue
            if replay_to(env, e, start + c) is None:
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
