"""One source for every default: the dataclasses. The YAML files restate none of them, name no setting a
dataclass lacks, and the composed config builds every section's dataclass."""

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from envs.settings import ENTRY_POINT_FIELDS, SECTIONS, register, section_class, section_defaults
from worldsim.config import from_dict, to_dict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Each group's default file, and the file it is placed at in the config tree.
DEFAULT_FILES = {"config.yaml": "", "vae/default.yaml": "vae", "dynamics/default.yaml": "dynamics"}


def _compose(*overrides):
    register()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and path not in SECTIONS:
            yield from _leaves(v, path)
        else:
            yield path, v


def test_the_default_yaml_files_restate_no_dataclass_default():
    """A value in a default file is the entry point's own setting or wiring between sections (an
    interpolation), never a copy of a dataclass default that could drift from it."""
    restated = []
    for name, package in DEFAULT_FILES.items():
        tree = yaml.safe_load((CONFIGS / name).read_text())
        tree.pop("defaults", None)
        tree = {package: tree} if package else tree
        for section in SECTIONS:
            node = tree
            for part in section.split("."):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            for key, value in node.items():
                if not (isinstance(value, str) and "${" in value):
                    restated.append(f"{name}: {section}.{key}={value!r}")
    assert not restated, "defaults belong in the dataclasses, not in YAML: " + ", ".join(restated)


def test_the_composed_defaults_are_the_dataclasses():
    """`python train.py` with no overrides builds every section's dataclass with its own defaults (the
    wiring aside), so a library user who builds one from Python gets the numbers train.py uses."""
    cfg = _compose()
    raw = OmegaConf.to_container(cfg, resolve=False)
    for section in SECTIONS:
        node = OmegaConf.select(cfg, section)
        built = to_dict(from_dict(section_class(section), OmegaConf.to_container(node, resolve=True), section))
        unresolved = OmegaConf.select(OmegaConf.create(raw), section)
        wired = {k for k, v in OmegaConf.to_container(unresolved, resolve=False).items()
                 if isinstance(v, str) and "${" in v} | ENTRY_POINT_FIELDS.get(section, set())
        defaults = section_defaults(section)
        differ = {k: (built[k], defaults[k]) for k in defaults if k not in wired and built[k] != defaults[k]}
        assert not differ, f"{section}: composed value vs dataclass default {differ}"


@pytest.mark.parametrize("overrides", [["recipe=tiny"], ["recipe=cpu"], ["recipe=gpu"], ["world=boxing"], ["world=pong"],
                                       ["world=carracing-skip4"], ["world=atari"], ["world=gym"], ["world=breakout"],
                                       ["vae=tiny", "dynamics=tiny"]])
def test_every_recipe_and_world_names_only_real_settings(overrides):
    """What a recipe or world changes is a field of its section's dataclass (a typo would be refused when the
    stage runs; here it is caught for every file)."""
    cfg = _compose(*overrides)
    for section in SECTIONS:
        values = OmegaConf.to_container(OmegaConf.select(cfg, section), resolve=True)
        from_dict(section_class(section), values, section)


def test_a_changed_default_reaches_the_composed_config(monkeypatch):
    """The dataclass is the source: change its default and train.py's config follows (and the check of the
    YAML files above would catch a YAML copy that did not)."""
    from worldsim.engine.sampler import SamplerConfig

    assert _compose().sampler.steps == SamplerConfig().steps
    monkeypatch.setattr(SamplerConfig, "__init__", _with_default(SamplerConfig.__init__, steps=3))
    assert _compose().sampler.steps == 3


def _with_default(init, **changes):
    def patched(self, *args, **kwargs):
        init(self, *args, **{**changes, **kwargs})

    return patched
