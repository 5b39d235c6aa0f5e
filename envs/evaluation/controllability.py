"""Controllability: can an inverse-dynamics classifier, trained on real transitions, read the actions from
generated ones?"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldsim.metrics.inverse_dynamics import accuracy, train_inverse_dynamics, transitions


def _pairs(clips, clip_actions, start: int):
    both = [transitions(x, a - start) for x, a in zip(clips, clip_actions, strict=True)]
    return np.concatenate([p for p, _ in both]), np.concatenate([a for _, a in both])


def controllability(space, long_eps: list, real: np.ndarray, gen: np.ndarray, recon: np.ndarray, acts: np.ndarray,
                    c: int, steps: int) -> dict[str, Any]:
    """The classifier learns on the long run's real transitions (``long_eps``), then reads the real, generated
    and reconstructed transitions over the fidelity clips' generated span. Empty for non-discrete actions."""
    if not hasattr(space, "n"):
        return {}
    n, start = int(space.n), int(space.start)
    pairs, labels = [], []
    for e in long_eps:
        p, a = transitions(e.frames, e.actions - start)
        pairs.append(p)
        labels.append(a)
    idm = train_inverse_dynamics(np.concatenate(pairs), np.concatenate(labels), n, steps=steps)
    rp, ra = _pairs(real[:, c - 1 :], acts[:, c - 1 :], start)  # real transitions over the generated span
    # Generated transitions: the first pairs the last real context frame with the first generated one.
    gp, ga = _pairs(np.concatenate([real[:, c - 1 : c], gen], 1), acts[:, c - 1 :], start)
    cp, ca = _pairs(recon, acts[:, c - 1 :], start)
    acc_real, acc_gen = accuracy(idm, rp, ra), accuracy(idm, gp, ga)
    # The same real transitions through the VAE: the share of the gap the autoencoder accounts for.
    return {"idm_accuracy_real": acc_real, "idm_accuracy_generated": acc_gen,
            "idm_accuracy_reconstructed": accuracy(idm, cp, ca),
            "ratio": acc_gen / max(acc_real, 1e-9), "balanced": True, "classes": n}
