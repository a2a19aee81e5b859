"""The layers hold: the core depends on nothing of ours but itself, the services on ports (not adapters),
the adapters on no service, the domain on no entry point, and no module of ours imports itself back.

Read from the source with `ast` (every import statement, inside functions too), so a lazy import does
not slip past; nothing is imported to check it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGES = ("billing_domain", "billing_cli", "billing_pipelines", "billing_api", "billing_sandbox")
ENTRY_POINTS_AND_FRAMEWORKS = ("dagster", "typer", "rich", "fastapi", "uvicorn", "billing_cli", "billing_pipelines",
                               "billing_api")
CORE_MAY_IMPORT = frozenset(sys.stdlib_module_names) | {"msgspec"}
# The columnar engine: the core's values and rules, and the column libraries; nothing of the layers above it.
COLUMNAR_MAY_IMPORT = CORE_MAY_IMPORT | {"polars", "pyarrow"}

# What may build an adapter: the composition root, the adapters themselves (one builds another's parts),
# and the sandbox's stand-ins for the engine (its projector writes the projections as the engine would).
MAY_BUILD_ADAPTERS = ("billing_domain.bootstrap", "billing_domain.adapters", "billing_sandbox")


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the module imported, absolute (`from a.b import c` of a module c gives a.b.c)
    line: int
    type_checking_only: bool  # under `if TYPE_CHECKING:`: never runs, so no circle through it


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _our_modules() -> dict[str, Path]:
    return {_module_name(path): path for package in OUR_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


MODULES = _our_modules()


def _imports(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    yield from _walk(tree, package, type_checking=False)


def _walk(node: ast.AST, package: str, *, type_checking: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            yield from (Import(alias.name, child.lineno, type_checking) for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            yield from _from_import(child, package, type_checking)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from _walk(ast.Module(body=child.body, type_ignores=[]), package, type_checking=True)
            yield from _walk(ast.Module(body=child.orelse, type_ignores=[]), package, type_checking=type_checking)
        else:
            yield from _walk(child, package, type_checking=type_checking)


def _from_import(node: ast.ImportFrom, package: str, type_checking: bool) -> Iterator[Import]:
    base = node.module or ""
    if node.level:  # relative: `from . import x`, `from ..a import b`
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield Import(submodule if submodule in MODULES else base, node.lineno, type_checking)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


IMPORTS = {name: list(_imports(name, path)) for name, path in MODULES.items()}


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _where(name: str, imported: Import) -> str:
    return f"{MODULES[name].relative_to(ROOT)}:{imported.line} imports {imported.module}"


def _breaking(modules: str, rule: object) -> list[str]:
    return [_where(name, i) for name, imports in IMPORTS.items() if _under(name, modules)
            for i in imports if rule(name, i)]  # type: ignore[operator]


def test_the_tree_was_read() -> None:
    """Guard against a test that checks nothing: the layers it names exist and hold modules."""
    for layer in ("billing_domain.core", "billing_domain.services", "billing_domain.adapters"):
        assert sum(_under(name, layer) for name in MODULES) > 3, f"no modules found under {layer}"
    assert any(i.module == "msgspec" for i in IMPORTS["billing_domain.core.events"])


def test_the_core_imports_only_the_standard_library_msgspec_and_itself() -> None:
    def outside(_: str, i: Import) -> bool:
        return i.module.split(".")[0] not in CORE_MAY_IMPORT and not _under(i.module, "billing_domain.core")

    assert _breaking("billing_domain.core", outside) == []


def test_the_columnar_engine_imports_only_the_core_and_the_column_libraries() -> None:
    """billing_domain/columnar sits on the core (it fills a core `Replay`): no service, adapter or entry point."""
    assert sum(_under(name, "billing_domain.columnar") for name in MODULES) >= 3, "no columnar modules found"

    def outside(_: str, i: Import) -> bool:
        return i.module.split(".")[0] not in COLUMNAR_MAY_IMPORT and not _under(
            i.module, "billing_domain.core", "billing_domain.columnar")

    assert _breaking("billing_domain.columnar", outside) == []


def test_the_core_does_not_import_the_columnar_engine() -> None:
    def columnar(_: str, i: Import) -> bool:
        return _under(i.module, "billing_domain.columnar")

    assert _breaking("billing_domain.core", columnar) == []


def test_the_domain_imports_no_entry_point_and_no_framework() -> None:
    def framework(_: str, i: Import) -> bool:
        return _under(i.module, *ENTRY_POINTS_AND_FRAMEWORKS)

    assert _breaking("billing_domain", framework) == []


def test_services_import_ports_not_adapters() -> None:
    def adapter(_: str, i: Import) -> bool:
        return _under(i.module, "billing_domain.adapters")

    assert _breaking("billing_domain.services", adapter) == []


# The adapters a composition wires (their helpers and value types, like RetryPolicy, are free to build).
ADAPTERS = ("KafkaEventStore", "ProjectionStore", "ReconStore", "CheckpointStore", "PostgresLifecycleStore",
            "PostgresShadowTables", "AdvisoryLocks", "SlackNotifier", "make_engine")


def _adapter_constructors() -> set[str]:
    """The adapters' classes (and `make_engine`) named in ADAPTERS, each checked to be defined in an adapter."""
    defined = set()
    for name, path in MODULES.items():
        if _under(name, "billing_domain.adapters"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            defined |= {node.name for node in tree.body if isinstance(node, ast.ClassDef | ast.FunctionDef)}
    assert set(ADAPTERS) <= defined, f"not defined in billing_domain/adapters: {set(ADAPTERS) - defined}"
    return set(ADAPTERS)


def test_one_composition_root_builds_the_adapters() -> None:
    constructors = _adapter_constructors()
    built_elsewhere = []
    for name, path in MODULES.items():
        if _under(name, *MAY_BUILD_ADAPTERS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if called in constructors:
                    built_elsewhere.append(f"{name}:{node.lineno} {called}")
    assert built_elsewhere == [], "build adapters in billing_domain/bootstrap.py only"


def test_adapters_import_no_service() -> None:
    def service(_: str, i: Import) -> bool:
        return _under(i.module, "billing_domain.services")

    assert _breaking("billing_domain.adapters", service) == []


def test_no_import_circle_among_our_modules() -> None:
    graph = {name: sorted({i.module for i in imports if i.module in MODULES and not i.type_checking_only} - {name})
             for name, imports in IMPORTS.items()}
    circles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert circles == []


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the import graph is deep enough to matter for recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            target = next(edges, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(graph[target])))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return components


def test_the_circle_check_finds_a_circle() -> None:
    """The checker itself: a two-module circle and a three-module one are found, a chain is not."""
    found = _strongly_connected({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["e"], "e": ["c"], "f": ["a"]})
    assert sorted(sorted(c) for c in found if len(c) > 1) == [["a", "b"], ["c", "d", "e"]]
