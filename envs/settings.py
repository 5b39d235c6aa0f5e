"""The defaults of every ``train.py`` setting, read from the dataclasses: one source for each default.

Each section of the config tree is one dataclass (:data:`SECTIONS`); :func:`defaults_tree` turns their
defaults into the tree Hydra composes first (``worldsim_defaults`` in ``configs/config.yaml``'s defaults
list, stored by :func:`register`). The YAML files hold only what a recipe or a world changes, and the
wiring between sections (``${run_dir}/eval``, ``${world.frame_size}``); ``tests/test_settings.py`` fails
when a YAML file restates a default or names a setting no dataclass has.
"""

from __future__ import annotations

import importlib
from typing import Any

from worldsim.config import to_dict

SECTIONS: dict[str, str] = {
    "train": "worldsim.training.budget:TrainConfig",
    "collect": "envs.recording.collect:CollectConfig",
    "sampler": "worldsim.engine.sampler:SamplerConfig",
    "export": "worldsim.training.export:ExportConfig",
    "eval": "envs.evaluation.evaluate:EvalConfig",
    "vae.model": "worldsim.models.vae:VAEConfig",
    "vae.train": "worldsim.training.vae_trainer:VAETrainConfig",
    "dynamics.model": "worldsim.models.dit:DiTConfig",
    "dynamics.train": "worldsim.training.dynamics_trainer:DynamicsTrainConfig",
    "agent.net": "envs.agent.network:AgentConfig",
    "agent.train": "envs.agent.training:AgentTrainConfig",
    "agent.imitate": "envs.agent.imitation:ImitateConfig",
    "agent_eval": "envs.agent.evaluation:AgentEvalConfig",
    "loop": "envs.loop.config:LoopConfig",
}
"""Config section (dotted path in the tree) -> the dataclass it builds (``module:Class``)."""

ENTRY_POINT_FIELDS: dict[str, set[str]] = {"collect": {"out"}}
"""Fields the entry point sets from other settings, not from their section (``collect.out`` is ``data_dir``)."""


def section_class(section: str) -> type:
    """The dataclass of a config section, e.g. ``dynamics.train`` -> DynamicsTrainConfig."""
    module, name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module), name)


def section_defaults(section: str) -> dict[str, Any]:
    """The section's dataclass defaults as plain values (tuples as lists), without its entry-point fields."""
    skip = ENTRY_POINT_FIELDS.get(section, set())
    return {k: v for k, v in to_dict(section_class(section)()).items() if k not in skip}


def defaults_tree() -> dict[str, Any]:
    """Every section's defaults, nested as the config tree: {"collect": {...}, "vae": {"model": {...}, ...}}."""
    tree: dict[str, Any] = {}
    for section in SECTIONS:
        *parents, leaf = section.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = section_defaults(section)
    return tree


DEFAULTS_NAME = "worldsim_defaults"


def register() -> None:
    """Store :func:`defaults_tree` in Hydra's ConfigStore as ``worldsim_defaults`` (the entry point calls
    this before composing; calling it again replaces the stored node)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=DEFAULTS_NAME, node=defaults_tree())
