"""Stop signals around work that must finish once begun (a checkpoint write, an episode flush)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextmanager
def signals_deferred(what: str = "saving", raise_after: bool = True) -> Iterator[list[int]]:
    """Inside the block, Ctrl-C, SIGTERM and SIGHUP wait: the block runs to its end, then (``raise_after``)
    KeyboardInterrupt is raised for the first signal that came. Yields the list of signals received.
    Outside the main thread (where Python cannot handle signals) the block simply runs."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def wait(signum, frame):
        got.append(signum)
        print(f"signal {signum} while {what}: stopping once that is done", file=sys.stderr, flush=True)

    old = {s: signal.signal(s, wait) for s in STOP_SIGNALS}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got and raise_after:
        raise KeyboardInterrupt(f"signal {got[0]}")
