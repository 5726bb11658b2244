"""The package's layering, read from its imports: source → plan ← targets/local ← façade ← cli.

Each layer may import only the layers listed for it; no module imports another module's private names; the
compatibility launcher imports nothing of azbai (it is copied alone into Azure ML snapshots).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "azbai"

#: what each layer (the first part of a module name under azbai) may import, besides itself
ALLOWED = {
    "errors": {"source"},  # SpecError carries source Diagnostics (a type-only import)
    "version": set(),
    "fsutil": set(),
    "launcher": set(),
    "source": {"errors"},
    "plan": {"errors"},
    "convert": {"errors", "source", "plan"},
    "targets": {"errors", "plan", "fsutil", "version"},
    "local": {"errors", "plan", "fsutil", "launcher"},
    "facade": {"errors", "source", "plan", "convert", "targets", "fsutil"},
    "aml": {"errors", "plan", "local", "targets", "facade", "fsutil", "source"},
    # `azbai az`: the az CLI's commands, over the façade and the local engine
    "az": {"errors", "plan", "local", "facade", "source"},
    "ml": {"errors", "plan", "local", "targets", "fsutil"},  # the local Azure ML engine (azbai ml, --local)
    "cli": {"*"},
    "__init__": {"errors", "version", "facade", "plan", "source", "aml"},
    "__main__": {"cli"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    name = first.removesuffix(".py")
    return "cli" if name.startswith("cli") else name


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``import azbai…`` / ``from azbai… import names`` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "azbai":
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "azbai"]
    return found


def _target_layer(module: str, names: list[str]) -> list[str]:
    parts = module.split(".")
    if len(parts) == 1:  # from azbai import x: x is a module of the package, or a name of azbai/__init__
        return [n if (PACKAGE / f"{n}.py").exists() or (PACKAGE / n).is_dir() else "__init__" for n in names]
    name = parts[1]
    return ["cli" if name.startswith("cli") else name]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    layer = _layer(path)
    allowed = ALLOWED[layer]
    for module, names in _imports(path):
        for target in _target_layer(module, names):
            assert target == layer or "*" in allowed or target in allowed, (
                f"{path.relative_to(PACKAGE)} ({layer}) imports {module} ({target})"
            )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_cross_modules(path: Path) -> None:
    for module, names in _imports(path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(PACKAGE)} imports private {private} from {module}"
        assert not any(part.startswith("_") and part != "__init__" for part in module.split(".")[1:]), module


def test_the_plan_is_pure() -> None:
    """No I/O in the plan's modules: no open(), no pathlib reads or writes, no os or subprocess."""
    for path in (PACKAGE / "plan").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        imported |= {
            n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        }
        assert not imported & {"os", "pathlib", "subprocess", "shutil", "io", "tempfile", "azure"}, path.name
        calls = {
            n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert "open" not in calls, path.name
