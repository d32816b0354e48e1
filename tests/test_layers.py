"""One-way layers: every import in thinkdraw/ (module level or inside a function) follows the allowed edges.

Generic parts serve any Janus model and any detector; the shapes world plugs into them and nothing generic
imports it; nothing outside cli/ imports cli/. The edges are between layers (a top-level module or package
of thinkdraw); imports inside one layer are free.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "thinkdraw"

GENERIC = {
    "errors",
    "plan",
    "evaluator",
    "engine",
    "checkpoint",
    "runtime",
    "policy",
    "judges",
    "rewards",
    "verifiers",
    "trainers",
    "configs",
    "viz",
}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "viz": set(),
    "plan": {"errors"},
    "evaluator": {"errors", "plan"},
    "engine": {"errors"},
    "checkpoint": {"errors"},
    "runtime": {"errors"},
    "configs": {"errors", "plan", "engine", "runtime", "checkpoint", "verifiers", "rewards", "evaluator", "judges"},
    "policy": {"errors", "plan", "engine", "checkpoint", "runtime"},
    "judges": {"errors", "plan", "evaluator"},  # the rule judge: GenEval's rules over a detector
    "rewards": {"errors", "plan", "evaluator", "judges"},
    "verifiers": {"errors", "plan", "engine", "policy", "judges"},
    "trainers": {"errors", "plan", "engine", "checkpoint", "runtime", "policy", "configs", "judges", "rewards"},
    "world": GENERIC,  # the environment plugs into every generic part
    "cli": GENERIC | {"world"},
    "__main__": {"cli"},
}


def layer_of(module: str) -> str:
    return module.split(".")[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported thinkdraw module) for every import in the file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("thinkdraw.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "thinkdraw":
                found += [(node.lineno, f"thinkdraw.{a.name}") for a in node.names]
            elif node.module.startswith("thinkdraw."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write thinkdraw.... in full")
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_layer_is_listed():
    layers = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()} - {"__init__"}
    assert layers <= set(ALLOWED), f"new layers without rules: {layers - set(ALLOWED)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_allowed_edges(path):
    relative = path.relative_to(PACKAGE)
    own = relative.parts[0].removesuffix(".py")
    if own == "__init__":
        return
    bad = []
    for line, module in imports_of(path):
        other = layer_of(module)
        if other != own and other not in ALLOWED[own]:
            bad.append(f"{relative}:{line} imports {module} ({own} -> {other})")
    assert not bad, "\n".join(bad)


def test_the_allowed_edges_have_no_cycle():
    seen: dict[str, str] = {}

    def visit(layer: str, trail: tuple[str, ...]) -> None:
        if seen.get(layer) == "done":
            return
        assert seen.get(layer) != "open", f"cycle: {' -> '.join(trail + (layer,))}"
        seen[layer] = "open"
        for other in ALLOWED[layer]:
            visit(other, trail + (layer,))
        seen[layer] = "done"

    for layer in ALLOWED:
        visit(layer, ())


def test_the_scan_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from thinkdraw.world.render import render\n    import thinkdraw.cli.main\n")
    assert imports_of(source) == [(2, "thinkdraw.world.render"), (3, "thinkdraw.cli.main")]
