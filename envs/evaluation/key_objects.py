"""Key objects: Pong's ball and paddles, Boxing's boxers and their punches, read from the reconstructed,
generated and copy-last frames and from the long rollout, against the real ones (the readers are in
:mod:`envs.games.objects`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.games.boxing import is_boxing
from envs.games.objects import boxing, pong
from envs.games.pong import is_pong
from worldsim.world import World


def key_object_game(world: World) -> str | None:
    """``pong`` or ``boxing`` where the world's game has key objects read from its 64x64 frames, else None."""
    env_id = str(world.source.get("env_id", ""))
    if world.source.get("frame_size", pong.FRAME_SIZE) != pong.FRAME_SIZE:
        return None
    return "pong" if is_pong(env_id) else "boxing" if is_boxing(env_id) else None


def _ball_rate_by_frame(clips: np.ndarray) -> list[float]:
    """(E, T, 64, 64, 3) -> the share of clips showing a ball at each frame (T,)."""
    return pong.find_ball(clips)[0].mean(0).tolist()


def key_objects(game: str | None, real: np.ndarray, recon: np.ndarray, gen: np.ndarray,
                c: int) -> dict[str, Any] | None:
    """The objects of the fidelity clips; None for games without key objects (``game`` from
    :func:`key_object_game`). ``real`` (E, c + H, ...), ``recon`` (E, 1 + H, ...) from the last context frame
    on, ``gen`` (E, H, ...)."""
    if game is None:
        return None
    target = real[:, c:]
    copy_last = np.broadcast_to(real[:, c - 1 : c], target.shape)
    if game == "boxing":
        return {"reconstructed": boxing.compare(target, recon[:, 1:]),
                "generated": boxing.compare(target, gen),
                "copy_last": boxing.compare(target, copy_last),
                "punches": {"real": boxing.punch_rates(target), "reconstructed": boxing.punch_rates(recon[:, 1:]),
                            "generated": boxing.punch_rates(gen)}}
    return {"reconstructed": pong.compare(target, recon[:, 1:]),
            "generated": pong.compare(target, gen),
            "copy_last": pong.compare(target, copy_last),
            "generated_by_frame_ball_rate": _ball_rate_by_frame(gen),
            "real_by_frame_ball_rate": _ball_rate_by_frame(target)}


def add_segment_rates(game: str | None, segments: list[dict[str, Any]], long_real: np.ndarray,
                      long_gen: np.ndarray, c: int, length: int) -> None:
    """Each long-rollout segment gets the share of its frames showing the game's key objects, world and real."""
    if game is None:
        return
    rate, name = (boxing.boxer_rate, "boxer") if game == "boxing" else (pong.ball_rate, "ball")
    for seg in segments:
        k = seg["start"]
        seg[f"generated_{name}_rate"] = rate(long_gen[k : k + length])
        seg[f"real_{name}_rate"] = rate(long_real[c + k : c + k + length])


def add_long_rollout_punches(game: str | None, objects: dict[str, Any] | None, long_real: np.ndarray,
                             long_gen: np.ndarray, c: int) -> None:
    """Boxing: the punches of the long rollout (``long_real`` (c + L, ...) with its context, ``long_gen`` (L, ...)),
    world against game, as ``objects["long_rollout_punches"]``: the share of in-reach frames with an arm out."""
    if game == "boxing" and objects is not None:
        objects["long_rollout_punches"] = {"real": boxing.punch_rates(long_real[c:]),
                                           "generated": boxing.punch_rates(long_gen)}


def paddle_response(objects: dict[str, Any], real: np.ndarray, c: int, model_last, real_held, held) -> None:
    """Pong's controllability: the inverse-dynamics classifier is at chance on its real transitions (a few
    pixels of paddle, FIRE = NOOP), so the paddle itself is read, world against game."""
    if real_held is not None:
        objects["paddle_response"] = pong.paddle_response(real[:, c - 1], model_last[0], real_held[1], held)
