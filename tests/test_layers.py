"""Imports run one way: cli, demo and pipeline over report, over study, over engine, over models, over data, over
config, fileio, errors and schedule. Every import counts, including those inside functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rethink"

# the lowest layer first; a module may import its own layer and the ones below
LAYERS = [
    {"rethink", "rethink.errors", "rethink.fileio", "rethink.config", "rethink.config_checks", "rethink.configs",
     "rethink.schedule"},
    {"rethink.data"},
    {"rethink.models"},
    {"rethink.engine"},
    {"rethink.study"},
    {"rethink.report"},
    {"rethink.pipeline", "rethink.demo", "rethink.cli", "rethink.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rethink":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "rethink")
    return found


def layer_of(module: str) -> int:
    for rank, members in enumerate(LAYERS):
        if module in members or ".".join(module.split(".")[:2]) in members - {"rethink"}:
            return rank
    raise AssertionError(f"{module}: in no layer; add it to LAYERS")


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} -> {i}" for m, deps in graph().items() for i in deps if layer_of(i) > layer_of(m)]
    assert upward == []


def find_circles(edges: dict[str, set[str]]) -> list[str]:
    circles, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(edges.get(m, ())):
            if state.get(d) == "open":
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return circles


def test_no_import_circles():
    modules = graph()
    assert find_circles({m: deps & modules.keys() for m, deps in modules.items()}) == []


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path):
    # the rules themselves: an engine module importing the report is caught, and so is a two-module circle
    assert layer_of("rethink.report.render") > layer_of("rethink.engine.loop")
    assert layer_of("rethink.data.images") < layer_of("rethink.models.backbone")
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from rethink.report.render import write_report\n")
    assert imports_of(bad) == {"rethink.report.render"}
