"""The layering docs/design.md states, checked: no module imports a higher layer.

Every import in every module (top-level and inside functions alike) is resolved with
``ast`` and compared by layer; a module may import its own layer and any lower one.
"""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zspace"

# lowest first; a module belongs to the first entry that prefixes its dotted name
LAYERS = [
    ("core", ("zspace.core", "zspace.errors", "zspace.rng")),
    ("data", ("zspace.data",)),
    ("distributions/nn", ("zspace.distributions", "zspace.nn")),
    ("models", ("zspace.models",)),
    ("training", ("zspace.training",)),
    ("evaluation/explore", ("zspace.evaluation", "zspace.explore")),
    ("sae", ("zspace.sae",)),          # language models, hooks, harvesting: only tasks and the CLI import it
    ("tasks", ("zspace.tasks",)),
    ("report", ("zspace.report",)),
    ("applications", ("zspace.scorecard", "zspace.demo", "zspace.detect", "zspace.image_detect", "zspace.prior",
                      "zspace.compare", "zspace.classify", "zspace.sklearn")),
    ("cli", ("zspace.cli", "zspace.__main__", "zspace")),   # the package itself re-exports everything
]


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/design.md")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every zspace import in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "zspace"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "zspace":
                continue
            if node.module is None or target == "zspace":    # `from . import x`: x may be a module
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_a_higher_layer(path):
    me = module_name(path)
    mine = layer_of(me)
    bad = []
    for line, target in imports(path):
        try:
            theirs = layer_of(target)
        except AssertionError:                  # `from .x import name` where x.name is not a module
            theirs = layer_of(target.rpartition(".")[0])
        if theirs > mine:
            bad.append(f"{path.relative_to(SRC)}:{line} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not bad, "lower layer imports a higher one:\n" + "\n".join(bad)


def test_the_walk_resolves_relative_and_function_level_imports():
    """A guard against a vacuous test: relative imports, also inside functions, are seen."""
    assert "zspace.core.config" in {t for _, t in imports(SRC / "models" / "base.py")}
    assert "zspace.report.figures" in {t for _, t in imports(SRC / "__init__.py")}     # inside a function
    assert layer_of("zspace.models.base") < layer_of("zspace.training.run") < layer_of("zspace.report.html")
