"""Self-describing safetensors checkpoints: weights plus JSON metadata, loaded strictly.

Metadata keys: ``format`` (= ``worldsim.checkpoint``), ``version``, ``kind`` (what
the file holds, e.g. ``vae``) and JSON values such as ``config``. Tensors of a
module ``name`` are stored as ``name.<state_dict key>``. No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from worldsim.integrity import CHECKSUMS, save_checked, verify

FORMAT = "worldsim.checkpoint"
VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint is missing, foreign, of the wrong kind, or does not fit the model."""


def save_checkpoint(
    path: str | Path, kind: str, modules: dict[str, nn.Module], meta: dict[str, Any],
    tensors: dict[str, torch.Tensor] | None = None, weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write modules' weights, extra tensors and JSON metadata to one file, atomically.

    ``weights_dtype`` stores the modules' floating-point weights in that dtype (e.g. float16
    to halve a shipped file); loading casts them back to the model's dtype."""
    path = Path(path)
    out: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for k, v in module.state_dict().items():
            if weights_dtype is not None and v.is_floating_point():
                v = v.to(weights_dtype)
            out[f"{name}.{k}"] = v.detach().cpu().contiguous()
    for k, v in (tensors or {}).items():
        out[k] = v.detach().cpu().contiguous()
    bad = sorted(k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"{path}: not written, tensors {bad[:3]} hold NaN or infinite values (training diverged: "
                              "lower the learning rate or resume from an earlier checkpoint)")
    header = {"format": FORMAT, "version": VERSION, "kind": kind}
    header.update({k: json.dumps(v) for k, v in meta.items() if k not in header})  # a file's own meta re-saved
    return save_checked(path, out, header, CheckpointError)


def read_checkpoint(path: str | Path, kind: str, hint: str = "") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata with JSON values parsed, tensors) of a ``kind`` checkpoint; clear errors otherwise.

    ``hint`` tells how to make a missing checkpoint (e.g. the train.py command).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}" + (f"; make one with `{hint}`" if hint else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it may be truncated or not a checkpoint") from None
    if header.get("format") != FORMAT:
        what = header.get("format") or "a safetensors file without worldsim metadata"
        raise CheckpointError(f"{path}: this is {what}, not a worldsim checkpoint (expected a {kind!r} checkpoint)")
    if header.get("kind") != kind:
        raise CheckpointError(f"{path}: a worldsim {header.get('kind')!r} checkpoint, but a {kind!r} checkpoint is needed here")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {header.get('version')!r}, this worldsim reads {VERSION!r}")
    verify(path, CheckpointError, "it cannot be trusted: restore it from where it came from (git checkout, a copy) "
                                  "or make it again")
    meta = {}
    header.pop(CHECKSUMS, None)
    for k, v in header.items():
        try:
            meta[k] = json.loads(v) if k not in ("format", "version", "kind") else v
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: damaged metadata entry {k!r}") from None
    return meta, tensors


def check_fits(build, tensors: dict[str, torch.Tensor], name: str, path: str | Path = "", allow_missing: bool = False) -> None:
    """Refuse a file whose ``name.*`` weights do not fit the module its config describes, before anything is
    allocated: ``build()`` runs on the meta device (no memory), so a damaged config cannot exhaust memory."""
    with torch.device("meta"):
        module = build()
    _compare(module.state_dict(), tensors, name, path, allow_missing, finite=False)  # values: at load_module


def _compare(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], name: str, path, allow_missing: bool,
             finite: bool = True):
    """(the file's ``name.*`` tensors by module key, the module's keys it lacks) or a CheckpointError: keys and
    shapes must match the module's (``own``); ``finite``: every floating-point value must be finite too."""
    prefix = f"{name}."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(state))
    kept, missing = (missing, []) if allow_missing else ([], missing)
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}")
        raise CheckpointError(f"{path}: {name} weights do not fit the model ({'; '.join(parts)})")
    bad = sorted(k for k, v in state.items() if finite and v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise CheckpointError(f"{path}: {name} weights {bad[:3]} hold NaN or infinite values; this model cannot "
                              "generate anything: use an earlier checkpoint of the run")
    return state, kept


def load_module(
    module: nn.Module, tensors: dict[str, torch.Tensor], name: str, path: str | Path = "", allow_missing: bool = False,
) -> list[str]:
    """Load ``name.*`` tensors into ``module`` strictly: every key present, nothing extra, same shapes.
    ``allow_missing`` (fine-tuning from an older model): the module's keys the file lacks keep their
    initialisation. Returns those keys."""
    state, kept = _compare(module.state_dict(), tensors, name, path, allow_missing)
    module.load_state_dict(state, strict=not allow_missing)
    return kept
