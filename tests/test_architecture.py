"""The shape of the code: no import cycle among the project's modules, layers that import downwards only (between
the top-level packages and between helpers/' packages), no module over 600 lines, at most 8 modules directly in
helpers/. Every import statement counts, those inside functions and under TYPE_CHECKING too."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "datasets", "helpers", "benchmarks")
MAX_LINES = 600
MAX_HELPERS_MODULES = 8
# What each layer may not import (by top-level name): models/ knows nothing of Lightning, Sacred or the
# datasets; datasets/ nothing of the network, Lightning or Sacred; nothing below the experiments imports them; the
# product (models/, datasets/, helpers/) never imports benchmarks/, which measures it.
# The top-level files: the experiments, the named configs, the study command.
ENTRY_POINTS = {path.stem for path in REPO.glob("*.py")} - {"errors"}  # the experiments, named configs, study.py
FORBIDDEN = {
    "models": {"datasets", "helpers", "benchmarks", "pytorch_lightning", "lightning_fabric", "sacred"},
    "datasets": {"helpers", "benchmarks", "pytorch_lightning", "lightning_fabric", "sacred"},
    "helpers": {"benchmarks", *ENTRY_POINTS},
    "benchmarks": ENTRY_POINTS,
}
# helpers/' packages, top to bottom: each imports only from those below it (and helpers/' own modules).
HELPERS_LAYERS = ("helpers.experiment", "helpers.study", "helpers.training", "helpers.results", "helpers.augment")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for the packages and the top-level scripts."""
    modules = {}
    for path in REPO.glob("*.py"):
        modules[path.stem] = path
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(path: Path, module: str) -> set[str]:
    """Every name an import statement anywhere in the file imports, as dotted names (``from a import b``
    gives a.b; what it resolves to is decided by the caller)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.update(f"{base}.{alias.name}" for alias in node.names)
            names.add(base)
    return names


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_and_nested_imports_are_seen(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from models.passt import PaSST\n"
                      "def f():\n    import helpers.training.trainer\n    from . import sibling\n")
    assert {"models.passt.PaSST", "helpers.training.trainer", "pkg.sibling"} <= imported_names(source, "pkg.x")


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert {"models.patterns", "helpers.experiment.commands", "ex_dcase20"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_downwards_only(layer):
    modules = project_modules()
    offences = []
    for module, path in modules.items():
        if module.split(".")[0] != layer:
            continue
        for name in imported_names(path, module):
            if name.split(".")[0] in FORBIDDEN[layer]:
                offences.append(f"{module} imports {name}")
    assert offences == []


def test_no_module_is_over_600_lines():
    lengths = {module: len(path.read_text().splitlines()) for module, path in project_modules().items()}
    assert {module: n for module, n in lengths.items() if n > MAX_LINES} == {}


def test_errors_is_a_leaf_every_layer_may_import():
    assert import_graph()["errors"] == set()


@pytest.mark.parametrize("package", HELPERS_LAYERS)
def test_helpers_packages_import_downwards_only(package):
    above = HELPERS_LAYERS[: HELPERS_LAYERS.index(package)]
    offences = [f"{module} imports {target}" for module, targets in import_graph().items()
                if module.startswith(package + ".") for target in targets if target.startswith(above)]
    assert offences == []


def test_helpers_shows_its_packages_with_few_modules_beside_them():
    modules = sorted(path.name for path in (REPO / "helpers").glob("*.py") if path.name != "__init__.py")
    assert len(modules) <= MAX_HELPERS_MODULES, modules
    packages = {path.parent.name for path in (REPO / "helpers").glob("*/__init__.py")}
    assert {"experiment", "training", "results", "augment", "study"} <= packages


def test_the_module_table_of_docs_architecture_matches_the_tree():
    """docs/architecture.md names every module of models/, datasets/ and helpers/ and every entry point in its
    module table (a dataset package by its folder), and names nothing that does not exist."""
    named = set()
    for line in (REPO / "docs" / "architecture.md").read_text().splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            named.update(part for part in first_cell.split("`")[1::2])
    assert sorted(path for path in named if not (REPO / path).exists()) == []
    expected = {path.name for path in REPO.glob("*.py")}
    for package in ("models", "datasets", "helpers"):
        for path in (REPO / package).rglob("*.py"):
            relative = path.relative_to(REPO)
            if path.name == "__init__.py":
                continue
            if package == "datasets" and len(relative.parts) > 2:  # a dataset's own folder
                expected.add(f"{relative.parent}/")
            else:
                expected.add(str(relative))
    assert sorted(expected - named) == []
