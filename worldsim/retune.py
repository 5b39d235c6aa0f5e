"""Change the sampler settings a world file carries, without retraining: the weights stay byte for byte.

A world file stores the settings its frames are sampled with (:class:`~worldsim.engine.simulator.SamplerConfig`):
steps, guidance, start level, context level, attention window. They are chosen by measurement after training
(``stage=eval`` takes the same settings as overrides: ``eval.window=8``, ``eval.start_level=...``), and once
measured better they belong in the file, so that every user of the world gets them:

    python -m worldsim.retune checkpoints/carracing.safetensors --window 8 --out runs/carracing-w8.safetensors

The new file holds the same tensors (verified against the old file's checksums when read, the new file read
back before it is published), the same metadata with the sampler changed, and a ``retuned`` entry recording
each change (old and new settings).
Nothing is written over an existing file unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worldsim.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from worldsim.config import from_dict, to_dict
from worldsim.engine.sampler import SamplerConfig
from worldsim.world import WORLD_KIND

OPTIONS = ("steps", "guidance", "context_level", "shift", "start_level", "window")
"""The sampler fields that can be changed (every field of SamplerConfig)."""


def retune(path: str | Path, out: str | Path, changes: dict, overwrite: bool = False, note: str = "") -> Path:
    """Write ``out``: the world file ``path`` with its stored sampler updated by ``changes`` (field -> value;
    ``window`` may be None for the trained window). Returns ``out``. Raises CheckpointError / ValueError."""
    path, out = Path(path), Path(out)
    unknown = sorted(set(changes) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown sampler settings {unknown}; these can be changed: {list(OPTIONS)}")
    if not changes:
        raise ValueError("nothing to change: give at least one sampler setting (e.g. --window 8)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; give --overwrite to replace it, or another --out")
    meta, tensors = read_checkpoint(path, WORLD_KIND)  # strict, and every tensor checked against its checksum
    old = from_dict(SamplerConfig, meta["sampler"], "sampler")
    new = from_dict(SamplerConfig, {**to_dict(old), **changes}, "sampler")  # validated like any sampler
    new.fit(int(meta["config"]["dit"]["window"]))  # no longer than the trained window
    if new == old:
        raise ValueError(f"{path} already samples with {to_dict(old)}; nothing to change")
    meta["sampler"] = to_dict(new)
    meta["retuned"] = [*meta.get("retuned", []), {"from": to_dict(old), "to": to_dict(new), **({"note": note} if note else {})}]
    # The same tensors as read (no module weights to cast); the new file is read back before it is published.
    return save_checkpoint(out, WORLD_KIND, {}, meta, tensors)


def _value(name: str, text: str):
    if name == "window" and text.lower() in ("none", "trained"):
        return None
    whole = name in ("steps", "window")
    try:
        return int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"--{name.replace('_', '-')} must be {'a whole number' if whole else 'a number'}, "
                         f"got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldsim.retune", description=__doc__.split("\n\n")[0])
    p.add_argument("world", help="the world file to read")
    p.add_argument("--out", required=True, help="the file to write (may equal the input, with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--note", default="", help="why (stored with the change, e.g. the command that measured it)")
    for name in OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                       help="frames attended to (none: the trained window)" if name == "window" else None)
    args = p.parse_args(argv)
    try:
        changes = {n: _value(n, getattr(args, n)) for n in OPTIONS if getattr(args, n) is not None}
        out = retune(args.world, args.out, changes, args.overwrite, args.note)
    except (CheckpointError, ValueError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta, _ = read_checkpoint(out, WORLD_KIND)
    print(f"{out}: sampler {meta['sampler']} (tensors unchanged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
