"""The import layering that ARCHITECTURE.md states: no cycle in core, no lower layer importing a higher one.

Imports are read with `ast` (nothing is imported); those under ``if
TYPE_CHECKING:`` are annotations only and do not count.  Imports inside
functions count: they run too, only later.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "core" / "src"
PACKAGE = SRC / "layerstore"

# Lowest first.  A module belongs to the first layer with a matching prefix;
# the package itself (re-exports) and conformance/testing (tools for tests) sit on top.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", (
        "layerstore.errors", "layerstore.capabilities", "layerstore.change", "layerstore.idtools",
        "layerstore.image", "layerstore.truncindex", "layerstore.hashing", "layerstore.flock",
        "layerstore.fstree", "layerstore.longpaths", "layerstore.xattrs", "layerstore.kit", "layerstore.mountinfo",
        "layerstore.owner", "layerstore.process", "layerstore.sizes", "layerstore.outfile",
        "layerstore.fdwrite", "layerstore.counting", "layerstore.mounts", "layerstore.hookspecs",
        "layerstore.hookrelay", "layerstore.references", "layerstore._parents", "layerstore._pending",
        "layerstore.lazyimport",
    )),
    ("formats", ("layerstore.archive", "layerstore.tarsplit", "layerstore.recording")),
    ("drivers", (
        "layerstore.naivediff", "layerstore.layerstate", "layerstore.pluginmanager", "layerstore.mounting",
        "layerstore.fallbackmounts", "layerstore.facade", "layerstore.discovery", "layerstore.drivers",
    )),
    ("store", ("layerstore.graph", "layerstore.images", "layerstore.registry")),
    ("selection", ("layerstore.settings", "layerstore.config_compat", "layerstore.selection", "layerstore.config")),
    ("front", ("layerstore",)),
]


def _from_targets(target: str, node: ast.ImportFrom) -> set[str]:
    """``from target import a, b``: the submodules named, plus `target` itself when a name is not a submodule."""
    names = {f"{target}.{alias.name}" for alias in node.names}
    submodules = names & _ALL_MODULES
    return submodules if submodules == names else submodules | {target}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


_ALL_MODULES = {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.AST, package: str) -> set[str]:
    """The modules an import statement (in `package`) names; empty for any other node."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = package.split(".")
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return _from_targets(target, node)


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text())]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        found.update(_targets(node, package))
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name == "layerstore" or name.startswith("layerstore.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"module {module} is in no layer of ARCHITECTURE.md; add it to LAYERS and the document")


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _layer(module)


def test_no_lower_layer_imports_a_higher_one() -> None:
    wrong = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert wrong == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (module-level imports only), found without recursion."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        iters = [iter(sorted(graph[start]))]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def _top_level_graph() -> dict[str, set[str]]:
    """Imports executed when a module is imported (not those inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.If) and _is_type_checking(n))]
        top = ast.Module(body=[n for n in body if isinstance(n, ast.Import | ast.ImportFrom)], type_ignores=[])
        graph[name] = {m for m in _imports_of_tree(top, name, path) if m in modules and m != name}
    return graph


def _imports_of_tree(tree: ast.Module, module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        found.update(_targets(node, package))
    return found


def test_no_import_cycle_in_core() -> None:
    """No cycle among the imports that run when a module is imported (imports inside functions may
    point back up, e.g. settings reading a foreign config file through config_compat)."""
    built = _top_level_graph()
    # A package's __init__ re-exporting its submodules is not a dependency of those submodules.
    for name in built:
        built[name] = {t for t in built[name] if not name.startswith(t + ".")}
    assert _cycle(built) is None


def test_image_store_parts_do_not_import_the_entry_point() -> None:
    """`images.store` imports its parts (records, load, save); none of them, nothing else in `images/` and
    nothing in `registry/` imports it back at run time, and `images/` never imports `registry/`."""
    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if (target == "layerstore.images.store" and module.startswith(("layerstore.images.", "layerstore.registry.")))
        or (module.startswith("layerstore.images") and target.startswith("layerstore.registry."))
    ]
    assert wrong == []
