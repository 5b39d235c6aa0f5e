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


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def exit_cleanly_on_stop_signals() -> dict[int, object]:
    """Make SIGTERM and SIGHUP (a kill, a closed terminal) exit through Python's normal shutdown, so that
    ``finally`` blocks and exit hooks run (e.g. a recorder writes its episode in flight), with exit status
    128 + signal as a shell reports it. Only signals still at their default action are changed (a program's
    own handlers are kept), and only from the main thread. -> the handlers replaced, for ``restore_handlers``."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        s = getattr(signal, name, None)
        if s is not None and signal.getsignal(s) is signal.SIG_DFL:
            old[s] = signal.signal(s, _exit_on_signal)
    return old


def restore_handlers(old: dict[int, object]) -> None:
    """Put back handlers that ``exit_cleanly_on_stop_signals`` replaced, where ours is still installed."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s, h in old.items():
        if signal.getsignal(s) is _exit_on_signal:
            signal.signal(s, h)
