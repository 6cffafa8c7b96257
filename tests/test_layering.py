"""Imports flow one way: config → data; model → objectives → experiment → {loop, tools, downstream} → commands.

Read from the source with `ast`, imports inside functions included, so that no cycle hides in a function body.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "headless_jax"

# layer → the layers its modules may import (besides their own)
MAY_IMPORT = {
    "config": set(),
    "data": {"config"},
    "model": set(),
    "objectives": {"model"},
    "experiment": {"config", "data", "model", "objectives"},
    "loop": {"config", "data", "model", "objectives", "experiment"},
    "tools": {"config", "data", "model", "objectives", "experiment"},
    "downstream": {"config", "data", "model", "objectives", "experiment"},
    "commands": {"config", "data", "model", "objectives", "experiment", "loop", "tools", "downstream"},
}
LAYER_OF = {  # module or package (dotted, below headless_jax) → layer
    "config": "config", "distributed": "config", "logs": "config", "data": "data", "model": "model", "objectives": "objectives",
    "train": "experiment", "validate": "experiment", "experiment": "experiment", "loop": "loop",
    "bench": "tools", "memory": "tools", "data_bench": "tools", "downstream": "downstream", "main": "commands", "evaluate": "commands",
    "prepare": "commands", "command": "commands", "plot": "commands", "curves": "tools", "interop": "tools",
    "export": "commands", "import_hf": "commands", "compare": "commands", "comparison": "tools",
}


def module_name(path: pathlib.Path) -> str:
    parts = ("headless_jax",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    return LAYER_OF[module.split(".")[1]]


def imports(module: str) -> set[str]:
    """The headless_jax modules `module` imports, anywhere in its file (a `from package import name` counts as
    the submodule where `name` is one)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
    return {name for name in found if name.startswith("headless_jax.")} - {module}


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_has_a_layer_and_imports_only_modules_that_exist():
    for module, imported in GRAPH.items():
        if module != "headless_jax":
            assert layer(module) in MAY_IMPORT, module
        assert imported <= set(MODULES), (module, imported - set(MODULES))


@pytest.mark.parametrize("module", [m for m in MODULES if m != "headless_jax"])
def test_imports_flow_down_the_layers(module):
    own = layer(module)
    wrong = {name for name in GRAPH[module] if layer(name) != own and layer(name) not in MAY_IMPORT[own]}
    assert not wrong, f"{module} ({own}) imports {sorted(wrong)} from a layer above or beside it"


def test_there_is_no_import_cycle():
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module):] + [module]
            pytest.fail("import cycle: " + " → ".join(cycle))
        if module in done:
            return
        path.append(module)
        for name in sorted(GRAPH[module]):
            visit(name)
        path.pop()
        done.add(module)

    for module in MODULES:
        visit(module)


def test_the_checks_can_fail():
    """The checks above see a real upward import and a real cycle (guards against a parser that finds nothing)."""
    assert "headless_jax.experiment" in GRAPH["headless_jax.loop"]
    assert "headless_jax.model.routing" in GRAPH["headless_jax.objectives.pretraining"]
    assert layer("headless_jax.experiment") not in MAY_IMPORT["objectives"]
    assert "headless_jax.downstream.glue" in GRAPH["headless_jax.downstream.tasks"]
