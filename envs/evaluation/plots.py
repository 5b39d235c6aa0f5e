"""The report's figures: fidelity by horizon and the long rollout, against copy-last and the real game."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_report(report: dict[str, Any], out: Path) -> None:
    """``psnr_by_horizon.png`` and ``long_horizon.png`` from a report, into ``out``."""
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
