"""What the loop's stand-alone commands (``python -m envs.loop.heads``, ``python -m envs.loop.latent_reward``)
share: a world file they write is never one that exists, unless the user says so."""

from __future__ import annotations

import sys
from pathlib import Path


def out_refused(out: Path, overwrite: bool) -> bool:
    """True (and the reason on stderr) when ``out`` exists and ``--overwrite`` was not given."""
    if out.exists() and not overwrite:
        print(f"error: {out} exists; give another --out or --overwrite", file=sys.stderr)
        return True
    return False
