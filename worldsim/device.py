"""Device choice, made once at an entry point."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cpu`` / ``cuda`` / ``cuda:N`` as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} asked for, but this machine has no CUDA GPU; use device=cpu or device=auto")
    return dev


def _cpu_feature(probe: str) -> bool:
    """One of torch.cpu's private feature probes; a torch without it gets the safe answer (False)."""
    try:
        return bool(getattr(torch.cpu, probe)())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX). There a bfloat16 DiT's linear layers
    run about 2.5x faster than float32 (BENCHMARKS.md); elsewhere bf16 is emulated and slower."""
    return _cpu_feature("_is_avx512_bf16_supported") or cpu_has_amx()


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later): there bfloat16 attention is faster than
    float32, as well as the linear layers (BENCHMARKS.md, "The batched world's attention")."""
    return _cpu_feature("_is_amx_tile_supported")


def cache_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The KV cache's and attention's dtype under a DiT of ``dtype``: the DiT's own on a GPU and on a CPU with
    AMX; float32 on other CPUs, where bf16 attention measured slower than float32 (BENCHMARKS.md, "Batched
    world for agents", an AVX-512 BF16 CPU without AMX)."""
    if device.type == "cpu" and dtype != torch.float32 and not cpu_has_amx():
        return torch.float32
    return dtype


def default_dtype(device: torch.device) -> torch.dtype:
    """The DiT's dtype when the user leaves it to us (``dtype=auto``): bfloat16 on a GPU and on a CPU with native
    bf16 (:func:`cache_dtype` says what attention runs in there), float32 otherwise."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32


DTYPES = ("auto", "float32", "bfloat16")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` (:func:`default_dtype`), ``float32`` or ``bfloat16`` -> the dtype; anything else: a clear error."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {name!r}")
    return default_dtype(device) if name == "auto" else getattr(torch, name)
