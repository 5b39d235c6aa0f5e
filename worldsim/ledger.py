"""``python -m worldsim.ledger FILE [FILE ...]``: a world's or agent's training history as a Markdown table.

Each row is one training process recorded in the file's metadata (worldsim/training/history.py): the stage,
the steps it went from and to, the frames (or agent decisions' frames) it saw, its wall-clock hours and the
machine. ``checkpoints/README.md`` shows these tables for the shipped and work-in-progress files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors import safe_open

from worldsim.training.history import HISTORY


def read_history(path: str | Path) -> list[dict] | None:
    """The history in a worldsim file's metadata; None for a file from before histories."""
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
    if HISTORY not in meta:
        return None
    return json.loads(meta[HISTORY])


def table(history: list[dict]) -> str:
    rows = ["| stage | steps | frames | hours | machine | began | from |", "|---|---|---|---|---|---|---|"]
    for e in history:
        a, b = e.get("steps", [None, None])
        note = e.get("init_from") or ""
        for extra in ("distill_guidance", "distill_steps", "distill_rescale", "rollout_frames", "anchor_weight", "anchor_guidance", "anchor_actions", "teacher",
                      "reward_negative_weight", "train_only", "trained_in"):
            if e.get(extra):
                note += f" {extra}={e[extra]}"
        done = "" if e.get("finished") else " (stopped)"
        rows.append(f"| {e.get('stage')} | {a} → {b}{done} | {e.get('frames', 0):,} | {e.get('hours', 0):.2f} | "
                    f"{e.get('machine', '')} | {e.get('began', '')} | {note.strip()} |")
    hours = sum(float(e.get("hours", 0)) for e in history)
    rows.append(f"| **total** | | {sum(int(e.get('frames', 0)) for e in history):,} | {hours:.2f} | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m worldsim.ledger FILE [FILE ...]: the training history of world and agent files",
              file=sys.stderr)
        return 2
    status = 0
    for p in args:
        try:
            history = read_history(p)
        except (OSError, ValueError) as e:
            print(f"{p}: unreadable ({e})", file=sys.stderr)
            status = 1
            continue
        print(f"{p}:")
        print(table(history) if history else "no training history recorded (written before histories: its "
              "training is described in checkpoints/README.md)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
