"""A file's training history (its ledger): one entry per training process that shaped its weights.

Worlds and agents here improve over many bounded sessions, each continuing from a committed file, so a
file says how it came to be: every VAE, dynamics or agent run, resumed or continued from another file, adds
one entry ``{stage, run, steps: [from, to], frames, hours, machine, finished}`` to the ``history`` list in
the metadata. A run continued from a file (``init_from``) inherits that file's list; an exported world
joins its VAE's and its dynamics' lists. ``python -m worldsim.ledger FILE`` prints it as a table.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HISTORY = "history"
"""The metadata entry (a list of entries, oldest first)."""


def machine(device: torch.device | str = "cpu") -> str:
    """This machine in a few words: CPU model, cores, the vector flags that change speed here, and the GPU."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vec = "AVX-512 BF16" if "avx512_bf16" in flags else "AVX2" if "avx2" in flags else ""
    text = f"{model}, {os.cpu_count()} cores" + (f", {vec}" if vec else "")
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(dev)}"
    return text + f", torch {torch.__version__}"


def history_of(meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The history stored in a file's metadata ([] for files from before histories)."""
    h = (meta or {}).get(HISTORY)
    return [dict(e) for e in h] if isinstance(h, list) else []


class RunHistory:
    """The entry of the running process on top of what came before (``prior``: the resumed state's or the
    ``init_from`` file's history). ``entries(step)`` is what a save writes."""

    def __init__(self, stage: str, run: str | Path, prior: list[dict[str, Any]], start_step: int,
                 frames_per_step: int, device: torch.device | str = "cpu", **extra: Any) -> None:
        self.stage, self.run, self.prior, self.start = stage, str(run), list(prior), int(start_step)
        self.frames_per_step, self.extra = int(frames_per_step), extra
        self.t0 = time.monotonic()
        self.began = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.machine = machine(device)

    def entries(self, step: int, finished: bool = False) -> list[dict[str, Any]]:
        if step <= self.start and not finished:
            return list(self.prior)
        entry = {"stage": self.stage, "run": self.run, "began": self.began, "steps": [self.start, int(step)],
                 "frames": (int(step) - self.start) * self.frames_per_step,
                 "hours": round((time.monotonic() - self.t0) / 3600.0, 4), "machine": self.machine,
                 "finished": bool(finished), **self.extra}
        return [*self.prior, entry]


def joined(*histories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several files' histories as one (an exported world: its VAE's, then its dynamics'), each entry once."""
    out, seen = [], set()
    for h in histories:
        for e in h:
            key = repr(sorted(e.items()))
            if key not in seen:
                seen.add(key)
                out.append(e)
    return out
