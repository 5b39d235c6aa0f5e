"""Plot a training log (``runs/<world>/{vae,dynamics}_log.jsonl``) as a PNG of its curves.

    python -m worldsim.training.plot runs/carracing/dynamics_log.jsonl out.png [--keys flow,heldout_flow]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot_log(log: str | Path, out: str | Path, keys: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    numeric = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k != "step"}
    keys = keys or sorted(k for k in numeric if k in ("loss", "flow", "heldout_flow", "heldout_psnr", "train_psnr",
                                                     "rollout_psnr", "reward_loss", "heldout_reward_loss"))
    if not keys:
        raise ValueError(f"{log}: nothing to plot; columns are {sorted(numeric)}")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-" if len(pts) < 40 else "-")
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return Path(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m worldsim.training.plot", description=__doc__.splitlines()[0])
    p.add_argument("log")
    p.add_argument("out")
    p.add_argument("--keys", help="comma-separated columns (default: the losses and PSNRs present)")
    args = p.parse_args(argv)
    print(f"wrote {plot_log(args.log, args.out, args.keys.split(',') if args.keys else None)}")


if __name__ == "__main__":
    main()
