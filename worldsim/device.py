"""Device choice, made once at an entry point."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cpu`` / ``cuda`` / ``cuda:N`` as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} asked for, but this machine has no CUDA GPU; use device=cpu or device=auto")
    return dev
