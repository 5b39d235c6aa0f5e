"""Resumable training state (model, EMA, optimizer, step) in one safetensors file, no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldsim.checkpoint import CheckpointError, load_module, read_checkpoint, save_checkpoint

KIND = "training-state"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def save_state(path: str | Path, step: int, modules: dict[str, nn.Module], opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    tensors, opt_meta = _flatten_optimizer(opt)
    save_checkpoint(path, KIND, modules, dict(meta, step=step, optimizer=opt_meta), tensors)


def load_state(path: str | Path, modules: dict[str, nn.Module], opt: torch.optim.Optimizer,
               config: Any) -> tuple[int, dict[str, Any], dict[str, torch.Tensor]]:
    """Restore modules and optimizer from ``path``; ``config`` (the architecture) must match the stored one.
    -> (step, the file's metadata, its tensors): what a trainer reads beside (its history, optional modules),
    without reading the file again."""
    meta, tensors = read_checkpoint(path, KIND)
    if json.dumps(meta.get("config"), sort_keys=True) != json.dumps(config, sort_keys=True):
        raise CheckpointError(
            f"{path}: this run folder holds a model with another architecture; "
            "resume with the same config or train into a new folder (run_dir=...)"
        )
    for name, module in modules.items():
        load_module(module, tensors, name, path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    return int(meta["step"]), meta, tensors
