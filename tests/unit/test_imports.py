"""The package's import graph keeps its layers: no circle, and no module
imports upward (the dependency rules of the target layout).

Every module under src/shmring is parsed (``ast``), so every import counts:
absolute and relative, at the top, inside functions, and under
``if TYPE_CHECKING:`` (a typing-only import upward is still a circle in the
design, and the first thing to turn into a real one). An import of
``pkg.mod`` is an edge to that module, ``from pkg import name`` an edge to
``pkg.name`` where that is a module and to ``pkg`` otherwise. A package's
``__init__`` is not implied by importing one of its modules.

The layers, lowest first (a module may always import its own layer):

- ``_core`` (C), then ``_errors``, ``_layout``, ``_proc``: only ``_core``;
- ``_region``, ``_objects``: only those four;
- ``_supervisor.wire``, ``_supervisor.client``, ``_supervisor.instance``,
  ``_supervisor.launch``: those four and each other;
- ``_channel``: ``_region``, ``_objects``, ``_supervisor.client`` and below;
- ``_queue``: ``_channel`` and below (and ``_pipeline``, for a Pool);
- ``_pipeline``, ``_journal``, ``_bridge`` (to come): ``_channel`` and
  below, never one another;
- ``_supervisor`` (the server side: all but wire and client): ``_region``
  and below, never ``_channel``, ``_objects`` or ``_queue``;
- ``_cli``: anything; nothing imports ``_cli`` but the ``__main__`` entry;
- the public face (``shmring/__init__.py`` and public modules): anything
  but ``_cli``.

A new layer needs a rule here before its modules pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "shmring"

BASE = {"_core", "_errors", "_layout", "_proc"}
CLIENT = {"_supervisor.wire", "_supervisor.client", "_supervisor.instance",
          "_supervisor.launch"}
CHANNEL_MAY = BASE | {"_region", "_objects"} | CLIENT
#: layer -> the other layers it may import; None: any layer but _cli.
RULES: dict[str, set[str] | None] = {
    "_core": set(),
    "_errors": {"_core"},
    "_layout": {"_core"},
    "_proc": {"_core"},
    "_region": BASE,
    "_objects": BASE,
    "_supervisor.wire": BASE | CLIENT,
    "_supervisor.client": BASE | CLIENT,
    "_supervisor.instance": BASE | CLIENT,
    "_supervisor.launch": BASE | CLIENT,
    "_channel": CHANNEL_MAY,
    "_queue": CHANNEL_MAY | {"_channel", "_pipeline"},
    # Layers to come, given their place now: each stands on the channel and
    # none on another (a Pool of _queue's may run on _pipeline's workers).
    "_pipeline": CHANNEL_MAY | {"_channel"},
    "_journal": CHANNEL_MAY | {"_channel"},
    # The bridge carries queues too: it counts in their control blocks.
    "_bridge": CHANNEL_MAY | {"_channel", "_queue"},
    "_rpc": CHANNEL_MAY | {"_channel"},
    "_supervisor": BASE | {"_region"} | CLIENT,
    "_cli": None,
    "public": None,
}


# ------------------------------------------------------------- the graph --
def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package
    (the C extension by its stub, ``_core.pyi``)."""
    out: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py*")):
        if path.suffix not in (".py", ".pyi") or "csrc" in path.parts:
            continue
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if path.suffix == ".py" or name not in out:
            out[name] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The package's own modules that module ``name`` (file ``path``) imports."""
    known = set(modules)
    tree = ast.parse(path.read_text(), str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            # "import a.b.c" names the deepest known module of a.b.c
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package's modules it imports. The C extension imports
    nothing: the Python code it calls back into is handed to it at import
    time (``set_object_paths``, ``set_errors``), so its stub's imports, which
    only name types for the checker, are no edges."""
    files = module_files(src)
    return {name: set() if path.suffix == ".pyi" else imports_of(name, path, files)
            for name, path in files.items()}


# ------------------------------------------------------------ the circles --
def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The graph's circles: each group of nodes that reach one another (a
    strongly connected component, Tarjan), sorted; a node that imports
    itself is a group of one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def path_through(graph: Mapping[str, Iterable[str]], comp: Iterable[str]) -> list[str]:
    """One circle inside a strongly connected component, by breadth-first
    search from its smallest node back to itself."""
    comp = set(comp)
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("not a strongly connected component")


# ------------------------------------------------------------- the layers --
def layer(module: str) -> str:
    """The layer of a dotted module name (see the module docstring)."""
    parts = module.split(".")[1:]
    if not parts or not parts[0].startswith("_") or parts[0] == "__main__":
        return "public"
    if parts[0] == "_supervisor" and len(parts) > 1 and f"_supervisor.{parts[1]}" in RULES:
        return f"_supervisor.{parts[1]}"
    return parts[0]


def broken_rules(graph: Mapping[str, Iterable[str]]) -> list[str]:
    out = []
    for src in sorted(graph):
        mine = layer(src)
        if mine not in RULES:
            out.append(f"{src}: layer {mine!r} has no dependency rule")
            continue
        allowed = RULES[mine]
        for dst in sorted(graph[src]):
            theirs = layer(dst)
            if theirs == mine:
                continue
            if theirs == "_cli" and src != f"{PACKAGE}.__main__":
                out.append(f"{src} imports {dst}: nothing imports _cli")
            elif allowed is not None and theirs not in allowed:
                out.append(f"{src} imports {dst}: {mine} may import only "
                           f"{', '.join(sorted(allowed)) or 'nothing'}")
    return out


# ------------------------------------------------------------------ tests --
def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "_sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from ._sub.a import A\n")
    (pkg / "_core.pyi").write_text("")
    (pkg / "_errors.py").write_text("import shmring._core\n")
    (pkg / "_sub" / "__init__.py").write_text("")
    (pkg / "_sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from .. import _errors\n"
        "if TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    from shmring._sub import c\n")
    (pkg / "_sub" / "b.py").write_text("from . import a\nfrom .._core import x\n")
    (pkg / "_sub" / "c.py").write_text("")
    g = import_graph(tmp_path)
    assert g["shmring"] == {"shmring._sub.a"}
    assert g["shmring._errors"] == {"shmring._core"}
    assert g["shmring._sub.a"] == {"shmring._errors", "shmring._sub.b", "shmring._sub.c"}
    assert g["shmring._sub.b"] == {"shmring._sub.a", "shmring._core"}
    assert cycles(g) == [["shmring._sub.a", "shmring._sub.b"]]


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}) == []
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(ring) == [["a", "b", "c"]]
    assert path_through(ring, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert path_through({"a": {"a"}}, ["a"]) == ["a", "a"]
    two = {"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"z"}, "z": {"x", "a"}}
    assert cycles(two) == [["a", "b"], ["x", "y", "z"]]
    assert path_through(two, ["x", "y", "z"]) == ["x", "y", "z", "x"]


def test_the_rules_catch_an_upward_import() -> None:
    g = {"shmring._region.region": {"shmring._channel.channel"},
         "shmring._channel.channel": {"shmring._region.region", "shmring._supervisor.client"},
         "shmring._supervisor.server": {"shmring._channel.channel"},
         "shmring._queue.queue": {"shmring._cli.main"},
         "shmring._pipeline.graph": {"shmring._journal.writer"},
         "shmring._viewer.app": set()}
    assert broken_rules(g) == [
        "shmring._pipeline.graph imports shmring._journal.writer: _pipeline may import only "
        "_channel, _core, _errors, _layout, _objects, _proc, _region, _supervisor.client, "
        "_supervisor.instance, _supervisor.launch, _supervisor.wire",
        "shmring._queue.queue imports shmring._cli.main: nothing imports _cli",
        "shmring._region.region imports shmring._channel.channel: _region may import "
        "only _core, _errors, _layout, _proc",
        "shmring._supervisor.server imports shmring._channel.channel: _supervisor may "
        "import only _core, _errors, _layout, _proc, _region, _supervisor.client, "
        "_supervisor.instance, _supervisor.launch, _supervisor.wire",
        "shmring._viewer.app: layer '_viewer' has no dependency rule",
    ]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    g = import_graph()
    assert f"{PACKAGE}._channel.channel" in g, f"no package sources under {SRC}"
    return g


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(
        f"among {', '.join(c)}: {' -> '.join(path_through(graph, c))}" for c in found)


def test_no_module_imports_upward(graph: dict[str, set[str]]) -> None:
    broken = broken_rules(graph)
    assert not broken, "dependency rules broken:\n" + "\n".join(broken)
