"""One run at a time per folder: a data folder or run folder in use is locked, and a second run refuses.

Two ``stage=collect`` runs into one ``data_dir`` would number their shards alike and one would overwrite the
other's; two agent runs into one ``run_dir`` would write one agent file and interleave their logs. The lock
is an advisory ``flock`` on ``<folder>/.worldsim.lock``, which the system drops when the process ends however
it ends (no stale locks after a kill); the file also says who holds it. Within one process a lock is
re-entrant (the loop takes the run folder, then its stages take it again).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

LOCK_NAME = ".worldsim.lock"

_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (file descriptor, depth)


class FolderInUse(RuntimeError):
    """Another process holds the folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another run"
    return f"pid {info.get('pid')} since {info.get('since')}: {info.get('command')}"


def lock_folder(folder: str | Path, what: str = "folder") -> Path:
    """Take ``folder``'s lock for the rest of this process (made if missing) -> the folder. Raises
    :class:`FolderInUse` with one line naming the folder and its holder when another process has it."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        return folder
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderInUse(f"the {what} {folder} is in use by {_holder(path)}; wait for that run to end or use "
                          "another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join(sys.argv)}).encode())
    _held[key] = (fd, 1)
    return folder


def unlock_folder(folder: str | Path) -> None:
    """Give back one level of this process's lock on ``folder`` (the last one releases it)."""
    import fcntl

    key = str(Path(folder).resolve())
    if key not in _held:
        return
    fd, depth = _held[key]
    if depth > 1:
        _held[key] = (fd, depth - 1)
        return
    del _held[key]
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
