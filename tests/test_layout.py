"""The layout's rules, read from the source: the core imports nothing that faces Gymnasium, the packages'
import graph has no cycle, and the runtime path (env, evaluation, agent, play) imports no training module."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("worldsim", "envs")


def _modules() -> dict[str, set[str]]:
    """Every module of the two packages -> the modules it imports (absolute imports, in functions too)."""
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            imported = set()
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    imported |= {a.name for a in node.names}
                assert not (isinstance(node, ast.ImportFrom) and node.level), f"{name}: use absolute imports"
            out[name] = imported
    return out


MODULES = _modules()


def _unit(module: str) -> str | None:
    """A sub-package (``envs.games``) or a top-level module (``worldsim.world``) of the two packages."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    return ".".join(parts[:2])


def _known(module: str) -> bool:
    return module in MODULES


def test_the_core_imports_nothing_that_faces_gymnasium():
    """worldsim is the core: no envs, no pygame, no RL library, even inside functions."""
    bad = {m: sorted(i for i in imps if i.split(".")[0] in ("envs", "pygame", "stable_baselines3"))
           for m, imps in MODULES.items() if m.split(".")[0] == "worldsim"}
    assert not {m: b for m, b in bad.items() if b}


def test_the_package_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for m, imps in MODULES.items():
        src = _unit(m)
        graph.setdefault(src, set()).update(u for i in imps if _known(i) and (u := _unit(i)) and u != src)
    done, path = set(), []

    def visit(u):
        if u in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(u):] + [u]))
        if u in done:
            return
        path.append(u)
        for v in sorted(graph.get(u, ())):
            visit(v)
        path.pop()
        done.add(u)

    for u in sorted(graph):
        visit(u)


@pytest.mark.parametrize("entry", ["envs.worldenv.env", "envs.worldenv.vector_env", "envs.evaluation.evaluate",
                                   "envs.agent.evaluation", "envs.agent.pilot", "envs.play.game", "worldsim.world"])
def test_the_runtime_path_imports_no_training_module(entry):
    """Playing, stepping, evaluating a world or scoring an agent never loads a trainer."""
    seen, todo = set(), [entry]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [i for i in MODULES.get(m, ()) if _known(i)]
    assert not sorted(m for m in seen if m.startswith("worldsim.training") or m == "envs.agent.training")
