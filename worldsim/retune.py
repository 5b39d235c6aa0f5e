"""Change the sampler settings a world file carries, without retraining: the weights stay byte for byte.

A world file stores the settings its frames are sampled with (:class:`~worldsim.engine.simulator.SamplerConfig`):
steps, guidance, start level, context level, attention window. They are chosen by measurement after training
(``stage=eval`` takes the same settings as overrides: ``eval.window=8``, ``eval.start_level=...``), and once
measured better they belong in the file, so that every user of the world gets them:

    python -m worldsim.retune checkpoints/carracing.safetensors --window 8 --out runs/carracing-w8.safetensors

The new file holds the same tensors (checked against the old file's checksums before it is published), the
same metadata with the sampler changed, and a ``retuned`` entry recording each change (old and new settings).
Nothing is written over an existing file unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from .checkpoint import CheckpointError, read_checkpoint
from .config import from_dict, to_dict
from .engine.simulator import SamplerConfig
from .integrity import CHECKSUMS, save_checked

OPTIONS = ("steps", "guidance", "context_level", "shift", "start_level", "window")
"""The sampler fields that can be changed (every field of SamplerConfig)."""


def retune(path: str | Path, out: str | Path, changes: dict, overwrite: bool = False, note: str = "") -> Path:
    """Write ``out``: the world file ``path`` with its stored sampler updated by ``changes`` (field -> value;
    ``window`` may be None for the trained window). Returns ``out``. Raises CheckpointError / ValueError."""
    from safetensors import safe_open

    path, out = Path(path), Path(out)
    unknown = sorted(set(changes) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown sampler settings {unknown}; these can be changed: {list(OPTIONS)}")
    if not changes:
        raise ValueError("nothing to change: give at least one sampler setting (e.g. --window 8)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; give --overwrite to replace it, or another --out")
    meta, _ = read_checkpoint(path, "world")  # strict: format, version, kind, checksums
    old = from_dict(SamplerConfig, meta["sampler"], "sampler")
    new = from_dict(SamplerConfig, {**to_dict(old), **changes}, "sampler")  # validated like any sampler
    trained = int(meta["config"]["dit"]["window"])
    if new.window is not None and new.window > trained:
        raise ValueError(f"window {new.window} is longer than the {trained} frames this world was trained with")
    if new == old:
        raise ValueError(f"{path} already samples with {to_dict(old)}; nothing to change")
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    before = json.loads(header.pop(CHECKSUMS))
    history = json.loads(header.get("retuned", "[]"))
    history.append({"from": to_dict(old), "to": to_dict(new), **({"note": note} if note else {})})
    header["sampler"] = json.dumps(to_dict(new))
    header["retuned"] = json.dumps(history)
    save_checked(out, tensors, header, CheckpointError)
    with safe_open(str(out), framework="pt") as f:
        after = json.loads((f.metadata() or {})[CHECKSUMS])
    if after != before:  # cannot happen unless the tensors changed on the way: then the new file is not kept
        out.unlink(missing_ok=True)
        raise CheckpointError(f"{out}: its tensors differ from {path}'s; removed, nothing was replaced")
    return out


def _value(name: str, text: str):
    kind = {f.name: f.type for f in fields(SamplerConfig)}[name]
    if name == "window" and text.lower() in ("none", "trained"):
        return None
    return int(text) if "int" in str(kind) else float(text)


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
    meta, _ = read_checkpoint(out, "world")
    print(f"{out}: sampler {meta['sampler']} (tensors unchanged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
