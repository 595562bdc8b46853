"""The import contract, read from the source: no import cycles among portal modules, layers, connectors through the plugin API.

Every ``import`` statement counts: at module level, in a function or a class, in a ``try``, under
``if TYPE_CHECKING:`` (a cycle of type hints is still a cycle of design). An edge goes to the module
named, or for ``from package import name`` to the submodule ``package.name`` when there is one.

Where another helper of issue #20 owns the file that breaks a rule, the violation is named below
with its owner instead of being fixed here; the lead shrinks these lists at merge. A listed
violation that no longer exists fails the test, so the lists only shrink.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (importer, imported) edges left out of the cycle check, by module name or package prefix, with their owner.
CYCLE_EDGES_ALLOWED: dict[tuple[str, str], str] = {}

# Lowest first: a module may import its own layer and lower ones, never a higher one. Modules of no
# layer (lifecycle, jobs, audit, extensions...) are not checked here; the cycle check covers them.
LAYERS = (
    ("models", ("portal.models",)),
    ("store", ("portal.store",)),
    ("engine/api/retention/privacy", ("portal.extract", "portal.api", "portal.retention", "portal.privacy")),
    ("pages", ("portal.school", "portal.admin", "portal.auth.views")),
)
# Inside the engine/api/retention/privacy packages, these modules are pages (blueprints, admin views).
PAGE_MODULE_NAMES = {"views", "admin", "statements"}
# Wiring, above every layer: they assemble the app, its plugins and its commands.
WIRING_MODULE_NAMES = {"plugin", "builtin", "commands"}
# What the models may import besides themselves: the database handle and the encrypted column type.
MODEL_FOUNDATIONS = ("portal.extensions", "portal.crypto")

LAYER_EDGES_ALLOWED: dict[tuple[str, str], str] = {}

# What connector packages (connectors/*/portal_*) may import of the portal: the public plugin API, as
# docs/plugin_hooks.md declares it (h/contract), and the sandbox and test kit (h/kit).
# "x.*" allows the package x and its submodules; other names are single modules.
CONNECTOR_API = (
    "portal.connectors",
    "portal.plugins",
    "portal.plugins.api",
    "portal.errors",
    "portal.jobs",
    "portal.admin.views",
    "portal.sandbox.*",
    "portal.synthetic",
    "portal.testing.*",
)
CONNECTOR_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}

# A function-level ``from portal... import`` hides a dependency; these files may keep theirs, and why.
FUNCTION_LEVEL_ALLOWED = {
    # create_app is the composition root: importing any portal.x runs portal/__init__.py, which must stay light.
    "portal/__init__.py": "composition root",
    # Celery is an optional dependency (the celery extra), imported only when EXECUTOR is "celery".
    "portal/jobs/executors.py": "optional dependency",
    # A pytest plugin is imported when pytest starts, before a test has configured the environment the
    # app reads (PORTAL_* variables, the database); the app is imported when a fixture builds one.
    "portal/testing/plugin.py": "pytest plugin",
    "portal/testing/conformance.py": "loaded by the pytest plugin",
    "portal/testing/databases.py": "loaded by the pytest plugin and bench/ scripts",
}

# importlib.import_module("portal...") hides a real dependency ("not installed yet"); these remain.
IMPORTLIB_ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    path: str
    line: int
    in_function: bool


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _portal_modules() -> dict[str, Path]:
    return {_module_name(p, ROOT): p for p in sorted((ROOT / "portal").rglob("*.py"))}


def _connector_modules() -> dict[str, Path]:
    out = {}
    for package in sorted([*ROOT.glob("connectors/*/portal_*"), *ROOT.glob("examples/*/portal_*")]):
        if package.is_dir() and not package.name.endswith(".egg-info"):
            out.update({_module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))})
    return out


def _imports(module: str, path: Path, known: dict[str, Path], source: str | None = None) -> Iterator[Import]:
    """Yield every portal import of one module, resolved to the portal module it loads."""
    is_package = path.name == "__init__.py"
    rel = str(path.relative_to(ROOT))
    source = path.read_text(encoding="utf-8") if source is None else source

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "portal":
                        yield Import(module, resolve(alias.name), rel, child.lineno, in_function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                if source.split(".")[0] != "portal":
                    continue
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    yield Import(module, sub if sub in known else resolve(source), rel, child.lineno, in_function)
            yield from visit(child, nested)

    yield from visit(ast.parse(source, str(path)), False)


def _portal_imports() -> list[Import]:
    known = _portal_modules()
    return [imp for module, path in known.items() for imp in _imports(module, path, known)]


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _allowed(edge: tuple[str, str], allowed: dict[tuple[str, str], str]) -> bool:
    return any(_within(edge[0], a) and _within(edge[1], b) for a, b in allowed)


def _stale(edges: set[tuple[str, str]], allowed: dict[tuple[str, str], str]) -> list[str]:
    return [f"{a} -> {b} ({owner})" for (a, b), owner in allowed.items()
            if not any(_within(x, a) and _within(y, b) for x, y in edges)]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one shortest cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan, iteratively (the graph is small, but recursion limits are not)
        work = [(node, iter(sorted(graph.get(node, ()))))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[current])
            if low[current] == index[current]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == current:
                        break
                if len(component) > 1:
                    components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        start = min(component)
        # Breadth-first from start back to start inside the component: a shortest cycle to name.
        previous: dict[str, str] = {}
        queue = [start]
        while queue:
            node = queue.pop(0)
            if start in graph.get(node, ()) and (node != start):
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                cycles.append([*reversed(path), start])
                break
            for child in sorted(graph.get(node, ())):
                if child in component and child not in previous and child != start:
                    previous[child] = node
                    queue.append(child)
    return cycles


def test_no_import_cycles_among_portal_modules():
    imports = _portal_imports()
    edges = {(i.importer, i.target) for i in imports if i.importer != i.target}
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if not _allowed(edge, CYCLE_EDGES_ALLOWED):
            graph.setdefault(edge[0], set()).add(edge[1])
    cycles = _cycles(graph)
    assert not cycles, "import cycles (break each; a function-level import does not count as a break):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )
    assert not _stale(edges, CYCLE_EDGES_ALLOWED), f"no longer imported, remove from CYCLE_EDGES_ALLOWED: {_stale(edges, CYCLE_EDGES_ALLOWED)}"


def test_the_cycle_check_names_a_cycle():
    # The check itself: a three-module ring is found and named in import order.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []


def _layer(module: str) -> int | None:
    last = module.rsplit(".", 1)[-1]
    if module in ("portal", "portal.commands", "portal.cli", "portal.tasks") or last in WIRING_MODULE_NAMES:
        return None
    for number, (_, prefixes) in enumerate(LAYERS):
        if any(_within(module, prefix) for prefix in prefixes):
            if number == 2 and last in PAGE_MODULE_NAMES:
                return 3
            return number
    return None


def test_lower_layers_never_import_higher_ones():
    imports = _portal_imports()
    wrong = []
    for imp in imports:
        edge = (imp.importer, imp.target)
        low, high = _layer(imp.importer), _layer(imp.target)
        if low is None or high is None or high <= low or _allowed(edge, LAYER_EDGES_ALLOWED):
            continue
        wrong.append(f"{imp.path}:{imp.line} {imp.importer} ({LAYERS[low][0]}) imports {imp.target} ({LAYERS[high][0]})")
    assert not wrong, "a lower layer imports a higher one:\n" + "\n".join(wrong)
    edges = {(i.importer, i.target) for i in imports}
    assert not _stale(edges, LAYER_EDGES_ALLOWED), f"remove from LAYER_EDGES_ALLOWED: {_stale(edges, LAYER_EDGES_ALLOWED)}"


def test_models_import_only_models_and_their_foundations():
    wrong = [f"{i.path}:{i.line} imports {i.target}" for i in _portal_imports()
             if _within(i.importer, "portal.models") and not _within(i.target, "portal.models")
             and not any(_within(i.target, f) for f in MODEL_FOUNDATIONS)]
    assert not wrong, "the models are the lowest layer:\n" + "\n".join(wrong)


def _public(target: str) -> bool:
    return any(_within(target, entry[:-2]) if entry.endswith(".*") else target == entry for entry in CONNECTOR_API)


def test_connector_packages_import_only_the_public_plugin_api():
    modules = _connector_modules()
    assert modules, "no connector package found under connectors/"
    known = _portal_modules()
    seen, wrong = set(), []
    for module, path in modules.items():
        for imp in _imports(module, path, known):
            edge = (module, imp.target)
            seen.add(edge)
            if not _public(imp.target) and not _allowed(edge, CONNECTOR_IMPORTS_ALLOWED):
                wrong.append(f"{imp.path}:{imp.line} {module} imports {imp.target}")
    assert not wrong, f"connectors may import only {', '.join(CONNECTOR_API)}:\n" + "\n".join(wrong)
    assert not _stale(seen, CONNECTOR_IMPORTS_ALLOWED), (
        f"remove from CONNECTOR_IMPORTS_ALLOWED: {_stale(seen, CONNECTOR_IMPORTS_ALLOWED)}"
    )


def test_function_level_portal_imports_only_where_listed():
    imports = _portal_imports()
    wrong = sorted({f"{i.path}:{i.line} imports {i.target}" for i in imports
                    if i.in_function and i.path not in FUNCTION_LEVEL_ALLOWED})
    assert not wrong, "import at the top of the module (a cycle is broken by moving code, not by hiding the import):\n" + (
        "\n".join(wrong)
    )
    paths = {i.path for i in imports if i.in_function}
    stale = sorted(set(FUNCTION_LEVEL_ALLOWED) - paths)
    assert not stale, f"no function-level import left, remove from FUNCTION_LEVEL_ALLOWED: {stale}"


def _importlib_calls() -> Iterator[tuple[str, str, int]]:
    for module, path in _portal_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and node.args[0].value.split(".")[0] == "portal"):
                yield module, node.args[0].value, node.lineno


def test_no_importlib_lookups_of_portal_modules():
    calls = list(_importlib_calls())
    wrong = [f"{module}:{line} import_module({target!r})" for module, target, line in calls
             if (module, target) not in IMPORTLIB_ALLOWED]
    assert not wrong, "import the module (a missing one is a broken install, not a feature to probe for):\n" + "\n".join(wrong)
    stale = sorted(set(IMPORTLIB_ALLOWED) - {(m, t) for m, t, _ in calls})
    assert not stale, f"remove from IMPORTLIB_ALLOWED: {stale}"


@pytest.mark.parametrize("source, expected", [
    ("from portal import audit, create_app", {"portal.audit", "portal"}),
    ("def f():\n    from .claims import owner_id", {"portal.jobs.claims"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from portal.models import JobRun", {"portal.models"}),
    ("import portal.models.mis", {"portal.models.mis"}),
])
def test_imports_resolve_to_the_module_they_load(source, expected):
    path = ROOT / "portal" / "jobs" / "probe.py"
    found = {i.target for i in _imports("portal.jobs.probe", path, _portal_modules(), source)}
    assert found == expected
