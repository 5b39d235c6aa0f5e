"""The goals a world's report is checked against (``report["goals"]``)."""

from __future__ import annotations

from typing import Any


def fidelity_goals(fidelity: dict[str, Any], controllability: dict[str, Any], warp: dict[str, Any],
                   segments: list[dict[str, Any]]) -> dict[str, bool]:
    """Every world's: one frame ahead, 16 frames ahead against copy-last, keys visible, steady motion, no
    collapse over the long rollout."""
    h16 = fidelity.get("16")
    return {
        "psnr_1_step_ge_30": fidelity.get("1", {}).get("psnr", 0) >= 30,
        "psnr_16_ge_copy_last_plus_3": bool(h16) and h16["psnr"] >= h16["copy_last_psnr"] + 3,
        "idm_ratio_ge_0.9": controllability.get("ratio", 0) >= 0.9,
        "warp_error_within_1.2x": warp["generated"] <= 1.2 * warp["real"],
        "no_collapse": all(x["histogram_distance"] < 0.5 and x["generated_pixel_std"] > 0.2 * x["real_pixel_std"]
                           and x["generated_frame_change"] > 0.1 * x["real_frame_change"] for x in segments),
    }


def second_driver_goals(other: dict[str, Any] | None) -> dict[str, bool]:
    """Under the second driver: detail without shimmer, hard to tell apart."""
    if not other:
        return {}
    h16, look = other["fidelity_by_horizon"].get("16"), other["realism"]
    return {"second_driver_psnr_16_ge_copy_last_plus_3": bool(h16) and h16["psnr"] >= h16["copy_last_psnr"] + 3,
            "second_driver_sharpness_within_0.9_1.1": 0.9 <= look["sharpness_ratio"] <= 1.1,
            "second_driver_frame_change_within_0.9_1.1": 0.9 <= look["frame_change_ratio"] <= 1.1,
            "second_driver_classifier_frames_le_0.70": look["classifier_accuracy_frames"] <= 0.70,
            "second_driver_classifier_pairs_le_0.75": look["classifier_accuracy_pairs"] <= 0.75}


def punches_drawn(punches: dict[str, Any]) -> bool:
    """Boxing's punches: in the long rollout each boxer has an arm out in at least half as many in-reach frames
    as in the game (a soft world draws boxers without arms, and its reward head guesses the punches)."""
    real, gen = punches["real"], punches["generated"]
    return all(gen[b] is not None and gen[b] >= 0.5 * real[b] for b in ("white", "black") if real[b])


def key_object_goals(game: str | None, objects: dict[str, Any] | None,
                     segments: list[dict[str, Any]]) -> dict[str, bool]:
    """Pong's ball and paddle, Boxing's boxers: kept by the VAE, alive over the long rollout, following keys."""
    if objects is None:
        return {}
    recon = objects["reconstructed"]
    if game == "boxing":
        return {"vae_keeps_boxers_recall_ge_0.9": min(recon["white_recall"] or 0, recon["black_recall"] or 0) >= 0.9,
                # Neither boxer fades out of a long rollout: every segment shows both in 90% of its frames.
                "boxers_survive_long_rollout": all(x["generated_boxer_rate"] >= 0.9 * x["real_boxer_rate"]
                                                   for x in segments),
                **({"punches_drawn_ge_half_the_games": punches_drawn(objects["long_rollout_punches"])}
                   if "long_rollout_punches" in objects else {})}
    return {"vae_keeps_ball_recall_ge_0.9": (recon["ball_recall"] or 0) >= 0.9,
            # The ball does not fade out of a long rollout: every segment shows it at least half as often as the game.
            "ball_survives_long_rollout": all(x["generated_ball_rate"] >= 0.5 * x["real_ball_rate"] for x in segments),
            # In place of the inverse-dynamics ratio, which is meaningless on Pong: the paddle follows the keys.
            **({"paddle_gap_ratio_ge_0.9": (paddle["ratio"] or 0) >= 0.9,
                "paddle_direction_agreement_ge_0.9": (paddle["direction_agreement"] or 0) >= 0.9}
               if (paddle := objects.get("paddle_response")) else {})}
