"""Checksums of the tensors in a safetensors file: stored in its metadata when written, verified when read.

Every file worldsim writes (world files, training checkpoints, episode shards) carries a metadata entry
``checksums``: JSON ``{tensor name: crc32 of its bytes, 8 hex digits}``. CRC-32 runs at about 2 GB/s on one
core of this project's 2-core CPU, so verifying a 10 MiB world file costs ~5 ms. The checksums cover the
tensor bytes as stored; the metadata itself is JSON that fails loudly when damaged.

Files written before checksums load unverified, with a one-line warning; re-save one with
``python -m worldsim.integrity FILE`` (in place, atomically, after checking that it reads).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

CHECKSUMS = "checksums"
"""The metadata entry that holds the checksums."""

log = logging.getLogger("worldsim")


def checksum(buf) -> str:
    """CRC-32 of a bytes-like object as 8 hex digits."""
    return f"{zlib.crc32(buf) & 0xFFFFFFFF:08x}"


def tensor_bytes(x) -> memoryview:
    """The raw little-endian bytes of a contiguous numpy array or CPU torch tensor, as safetensors stores them."""
    if isinstance(x, np.ndarray):
        return memoryview(np.ascontiguousarray(x).reshape(-1).view(np.uint8))
    import torch

    t = x.detach().cpu().contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


def checksums_of(tensors: dict[str, Any]) -> str:
    """The ``checksums`` metadata value for tensors about to be written."""
    return json.dumps({k: checksum(tensor_bytes(v)) for k, v in sorted(tensors.items())})


def _file_layout(f) -> tuple[dict[str, Any], int]:
    """(safetensors JSON header, offset where the tensor data starts) of an open file."""
    (n,) = struct.unpack("<Q", f.read(8))
    if n > 100 * 2**20:
        raise ValueError(f"header of {n} bytes")
    return json.loads(f.read(n)), 8 + n


def damaged_tensors(path: str | Path) -> list[str] | None:
    """Names of the tensors whose bytes no longer match the checksums stored in ``path`` ([] = all match);
    None when the file stores no checksums (written before them). Raises ValueError on an unreadable layout."""
    with open(path, "rb") as f:
        header, start = _file_layout(f)
        stored = (header.get("__metadata__") or {}).get(CHECKSUMS)
        if stored is None:
            return None
        stored = json.loads(stored)
        size = os.fstat(f.fileno()).st_size
        names = [k for k in header if k != "__metadata__"]
        if set(names) != set(stored):
            return sorted(set(names) ^ set(stored))
        if size == start:
            return []
        bad = []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            try:
                for k in names:
                    a, b = header[k]["data_offsets"]
                    if start + b > size or checksum(view[start + a:start + b]) != stored[k]:
                        bad.append(k)
            finally:
                view.release()
        return bad


def verify(path: str | Path, error: type[Exception], fix: str, warn: bool = True) -> bool:
    """Check ``path`` against its stored checksums: raise ``error`` naming the damaged tensors (and ``fix``)
    on a mismatch; -> False (after a one-line warning unless ``warn`` is off) when it has none, True when it checks."""
    try:
        bad = damaged_tensors(path)
    except (ValueError, OSError, struct.error) as e:
        raise error(f"{path}: not a readable safetensors file ({e}); {fix}") from None
    if bad is None:
        if warn:
            log.warning(f"warning: {path} carries no checksums (written by an older worldsim) and is loaded "
                        f"unverified; add them with `python -m worldsim.integrity {path}`")
        return False
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise error(f"{path} is damaged: the bytes of {', '.join(bad[:3])}{more} do not match the checksums "
                    f"stored when it was written; {fix}")
    return True


def atomic_path(path: Path) -> Path:
    """A temporary sibling of ``path`` that keeps its suffix (some writers pick a format by suffix)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk and rename it over ``path`` in one step. The file gets the mode any new file
    gets under the user's umask (safetensors writes its files 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (a temporary sibling, flushed, renamed over ``path``)."""
    path = Path(path)
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(obj, indent=1))
    publish(tmp, path)
    return path


def save_checked(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str], error: type[Exception]) -> Path:
    """Write a safetensors file atomically with the checksums of its tensors (numpy arrays or torch tensors),
    read it back against them, then publish it as ``path``; ``error`` if it does not read back as written."""
    path = Path(path)
    if all(isinstance(v, np.ndarray) for v in tensors.values()):
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}  # it writes strided arrays wrongly
    else:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    try:
        save_file(tensors, str(tmp), metadata={**metadata, CHECKSUMS: checksums_of(tensors)})
        bad = damaged_tensors(tmp)
        if bad:
            raise error(f"{path}: the file did not read back as written (tensors {bad[:3]}); the disk may be "
                        "failing or full; nothing was replaced")
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def add_checksums(path: str | Path) -> Path:
    """Re-write a safetensors file with checksums of its tensors (same tensors and metadata otherwise)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = {k: v for k, v in (f.metadata() or {}).items() if k != CHECKSUMS}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return save_checked(path, tensors, header, OSError)


def _not_ours_to_rewrite(path: str | Path) -> str | None:
    """Why ``path`` must not be re-written with checksums, or None: only worldsim's own files (a ``format``
    entry of ``worldsim.*``) that the user may write are; a read-only file stays as it is."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        fmt = (f.metadata() or {}).get("format", "")
    if not str(fmt).startswith("worldsim."):
        return "not a worldsim file (checksums are added to worldsim's own world, checkpoint and shard files only)"
    if not os.access(path, os.W_OK) or not os.access(Path(path).resolve().parent, os.W_OK):
        return "read-only (make it writable to add checksums)"
    if not os.stat(path).st_mode & 0o222:
        return "read-only (make it writable to add checksums)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m worldsim.integrity FILE [FILE ...]: add checksums to worldsim files written "
              "without them (in place), or report the damage of files that have them", file=sys.stderr)
        return 2
    status = 0
    for p in args:
        try:
            bad = damaged_tensors(p)
        except (ValueError, OSError, struct.error) as e:
            print(f"{p}: unreadable ({e})", file=sys.stderr)
            status = 1
            continue
        if bad is None:
            why = _not_ours_to_rewrite(p)
            if why:
                print(f"{p}: left as it is: {why}", file=sys.stderr)
                status = 1
                continue
            add_checksums(p)
            print(f"{p}: checksums added")
        elif bad:
            print(f"{p}: DAMAGED tensors {bad}", file=sys.stderr)
            status = 1
        else:
            print(f"{p}: ok")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
