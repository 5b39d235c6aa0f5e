"""Training logs: one JSON object per line in a .jsonl file, echoed as key=value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def log_row(path: str | Path, row: dict[str, Any], echo: bool = True) -> None:
    if echo:
        import sys

        from tqdm import tqdm

        # Above any progress bar; flushed, so a log redirected to a file is current.
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                   file=sys.stdout)
        sys.stdout.flush()
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
