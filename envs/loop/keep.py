"""``python -m envs.loop.keep LOOP_DIR OUT``: what a loop's finished rounds need, copied out to be committed.

A session may end on a machine whose ``runs/`` and ``data/`` are gone by the next one. What a round needs to
be continued and rebuilt elsewhere is small: each phase's record (``<phase>.json``), the round's world and
agent files, its scoring report, and the loop's id and report; its training logs come along (a few hundred KiB)
so the curves stay with the files. This copies exactly those (no trainer states, no data) from ``LOOP_DIR``
(``run_dir/loop``) into ``OUT`` (e.g. ``checkpoints/wip/boxing-loop``), checks each
against its source, and refuses files over the repository's 16 MiB limit. To continue elsewhere, copy ``OUT``
back to ``run_dir/loop`` and run the same ``stage=loop`` command: the rounds' episodes are rebuilt.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
from pathlib import Path

from envs.loop.config import PHASES
from worldsim.integrity import atomic_path, publish
from worldsim.training.rounds import Rounds

LIMIT = 16 * 2**20
LOGS = {"agent/agent_log.jsonl": "agent_log.jsonl", "world/dynamics_log.jsonl": "dynamics_log.jsonl",
        "heads/dynamics_log.jsonl": "heads_log.jsonl"}
"""A round's training logs (agent, world fine-tune, heads refit) and the names they are kept under, flat in the
round's folder beside its files (the run folder's own subfolders hold trainer states that are not kept)."""


def round_files(loop_dir: Path) -> list[tuple[Path, Path]]:
    """(source, kept name), both relative to ``loop_dir``, of what to keep: its id and report, the agent it started
    from (``round-0/``), and per finished round its phase records (and ``rebuilt.json``), world and agent files,
    scoring report and training logs."""
    keep = [Path(n) for n in ("loop.json", "report.json", "loop.png") if (loop_dir / n).exists()]
    # The agent round 1 started from, as the loop keeps it (envs/loop/run.py, start_agent): round 1 is rebuilt by it.
    keep += sorted(p.relative_to(loop_dir) for p in (loop_dir / "round-0").glob("*.safetensors"))
    logs = []
    for k in Rounds(loop_dir).finished_rounds(PHASES):
        d = Path(f"round-{k}")
        keep += [d / f"{p}.json" for p in PHASES]
        for extra in ("rebuilt.json", "select.json"):  # rebuilt elsewhere (loop.rebuild=keep); loop.select_episodes
            if (loop_dir / d / extra).exists():
                keep.append(d / extra)
        keep += sorted(p.relative_to(loop_dir) for p in (loop_dir / d).glob("*.safetensors"))
        report = d / "agent_eval" / "report.json"
        if (loop_dir / report).exists():
            keep.append(report)
        logs += [(d / src, d / dst) for src, dst in LOGS.items() if (loop_dir / d / src).exists()]
    return [(f, f) for f in keep] + logs


def keep(loop_dir: str | Path, out: str | Path) -> list[Path]:
    """Copy :func:`round_files` from ``loop_dir`` to ``out`` -> the files written."""
    loop_dir, out = Path(loop_dir), Path(out)
    pairs = round_files(loop_dir)
    if not pairs:
        raise ValueError(f"{loop_dir} holds no loop (no loop.json, report.json or finished round)")
    big = [src for src, _ in pairs if (loop_dir / src).stat().st_size > LIMIT]
    if big:
        raise ValueError(f"{', '.join(map(str, big))} over {LIMIT // 2**20} MiB: not for the repository")
    written = []
    for src, f in pairs:
        dst = out / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic_path(dst)
        shutil.copyfile(loop_dir / src, tmp)
        if not filecmp.cmp(loop_dir / src, tmp, shallow=False):
            tmp.unlink()
            raise OSError(f"{dst}: the copy does not read back as its source; nothing replaced")
        publish(tmp, dst)
        written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0].startswith("-"):
        print("usage: python -m envs.loop.keep LOOP_DIR OUT: copy a loop's finished rounds (records, world and "
              "agent files, reports, training logs) to OUT, e.g. checkpoints/wip/boxing-loop", file=sys.stderr)
        return 2
    try:
        written = keep(args[0], args[1])
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in written) / 2**20
    print(f"kept {len(written)} files ({size:.1f} MiB) in {args[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
