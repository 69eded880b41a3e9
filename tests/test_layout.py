"""The package's import structure, read from the source with ``ast`` (nothing is imported).

Every ``import`` statement counts, at module level and inside functions alike (a function-level import is a
dependency too: it only moves the failure to the first call). The rules (issue 10, ``docs/LAYOUT.md``):

- no import cycle among ``sifa_hub`` modules;
- layers read bottom-up: base utilities → ops/data → layers → models → hf → services → applications → cli; a
  module never imports one of a higher layer (modules of one layer may import each other);
- no module imports a private name (``_x``) of another application module;
- ``predict``, ``explain`` and ``publish`` import nothing from ``train``; ``demo`` does not import ``cli``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "sifa_hub"

# Layers, bottom-up: (layer name, module prefixes). A module belongs to the layer of its longest matching prefix.
# ``sifa_hub.data.pipeline`` (the clip pipeline) sits in the data layer although it is a service: the
# transformers video processor (hf) must call the very same functions, so it has to be below hf.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("sifa_hub.utils", "sifa_hub.utils.io", "sifa_hub.utils.runtime")),
    ("ops/data", ("sifa_hub.ops", "sifa_hub.data")),
    ("layers", ("sifa_hub.layers",)),
    ("models", ("sifa_hub.models",)),
    ("hf", ("sifa_hub.hf", "sifa_hub")),  # the root package registers the models with timm and transformers
    (
        "services",
        (
            "sifa_hub.utils.flops",
            "sifa_hub.loading",
            "sifa_hub.checkpoint",
            "sifa_hub.evaluation",
            "sifa_hub.distributed",
            "sifa_hub.training_data",
            "sifa_hub.deploy",
        ),
    ),
    (
        "applications",
        (
            "sifa_hub.train",
            "sifa_hub.predict",
            "sifa_hub.explain",
            "sifa_hub.demo",
            "sifa_hub.publish",
            "sifa_hub.bench",
        ),
    ),
    ("cli", ("sifa_hub.cli", "sifa_hub.__main__")),
)
# modules whose private names no other module may import (a package counts as one application)
APPLICATIONS = (
    "sifa_hub.train",
    "sifa_hub.predict",
    "sifa_hub.explain",
    "sifa_hub.demo",
    "sifa_hub.publish",
    "sifa_hub.bench",
    "sifa_hub.cli",
    "sifa_hub.evaluation",
)
FORBIDDEN = {  # importer (and its sub-modules) -> modules it must not import (nor their sub-modules)
    "sifa_hub.predict": ("sifa_hub.train",),
    "sifa_hub.explain": ("sifa_hub.train",),
    "sifa_hub.publish": ("sifa_hub.train",),
    "sifa_hub.demo": ("sifa_hub.cli", "sifa_hub.__main__"),
}


@dataclass(frozen=True)
class Import:
    """One imported module (``target``) and the names taken from it, at ``importer``'s line ``line``."""

    importer: str
    target: str
    names: tuple[str, ...]
    line: int

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


class Package:
    """The modules of a ``sifa_hub`` source tree and every import between them."""

    def __init__(self, package_dir: Path) -> None:
        self.root = package_dir.parent
        self.modules = {self._module_name(p): p for p in sorted(package_dir.rglob("*.py"))}
        self.trees = {n: ast.parse(p.read_text(encoding="utf-8"), str(p)) for n, p in self.modules.items()}
        self.imports = [imp for name in self.modules for imp in self._imports_of(name)]

    def _module_name(self, path: Path) -> str:
        parts = list(path.relative_to(self.root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    def resolve_from(self, importer: str, node: ast.ImportFrom) -> str:
        """The absolute module of ``from <node.module> import ...`` written in ``importer``."""
        if node.level == 0:
            return node.module or ""
        base = importer.split(".")
        if self.modules[importer].name != "__init__.py":
            base = base[:-1]  # a plain module's package
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def known(self, module: str) -> str:
        """``module``, or its nearest enclosing package that exists (importing a missing module fails elsewhere)."""
        while module not in self.modules and "." in module:
            module = module.rsplit(".", 1)[0]
        return module

    def _imports_of(self, name: str) -> Iterator[Import]:
        """Every sifa_hub module that ``name`` imports, with the names it takes, at any depth of the file."""
        for node in ast.walk(self.trees[name]):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "sifa_hub":
                        yield Import(name, self.known(alias.name), (), node.lineno)
            elif isinstance(node, ast.ImportFrom):
                module = self.resolve_from(name, node)
                if module.split(".")[0] != "sifa_hub":
                    continue
                plain: list[str] = []
                for alias in node.names:
                    if f"{module}.{alias.name}" in self.modules:  # `from pkg import submodule`
                        yield Import(name, f"{module}.{alias.name}", (), node.lineno)
                    else:
                        plain.append(alias.name)
                if plain:
                    yield Import(name, self.known(module), tuple(plain), node.lineno)

    def cycles(self) -> list[list[str]]:
        """Strongly connected components of the import graph with more than one module (or a self-import)."""
        graph: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            graph[imp.importer].add(imp.target)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        found: list[list[str]] = []

        def visit(v: str) -> None:  # Tarjan
            index[v] = low[v] = len(index)
            stack.append(v)
            for w in sorted(graph[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = stack[stack.index(v) :]
                del stack[stack.index(v) :]
                if len(component) > 1 or v in graph[v]:
                    found.append(sorted(component))

        for v in sorted(graph):
            if v not in index:
                visit(v)
        return found

    def edges_in(self, component: list[str]) -> list[str]:
        members = set(component)
        return sorted(
            {f"{i.where()} -> {i.target}" for i in self.imports if i.importer in members and i.target in members}
        )

    def private_uses(self) -> list[str]:
        """Imports of ``_private`` names (or modules) of an application module from outside that application."""
        bad = []
        for imp in self.imports:
            owner = _application(imp.target)
            if owner is None or owner == _application(imp.importer):
                continue
            if _private(imp.target.rsplit(".", 1)[-1]):
                bad.append(f"{imp.where()} imports the private module {imp.target}")
            bad += [f"{imp.where()} imports {imp.target}.{n}" for n in imp.names if _private(n)]
        return sorted(set(bad + list(self._private_attribute_uses())))

    def _private_attribute_uses(self) -> Iterator[str]:
        """``import sifa_hub.train as t; t._x`` and ``from sifa_hub import train; train._x``."""
        for name, tree in self.trees.items():
            bound: dict[str, str] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    bound.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("sifa_hub")})
                elif isinstance(node, ast.ImportFrom):
                    module = self.resolve_from(name, node)
                    for a in node.names:
                        if f"{module}.{a.name}" in self.modules:
                            bound[a.asname or a.name] = f"{module}.{a.name}"
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                    target = bound[node.value.id]
                    owner = _application(target)
                    if _private(node.attr) and owner is not None and owner != _application(name):
                        yield f"{name}:{node.lineno} uses {target}.{node.attr}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _layer(module: str) -> int:
    """Index in LAYERS of the longest prefix that matches ``module`` (-1: none)."""
    matches = [(len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes if _within(module, p)]
    return max(matches)[1] if matches else -1


def _application(module: str) -> str | None:
    return next((app for app in APPLICATIONS if _within(module, app)), None)


PACKAGE = Package(PACKAGE_DIR)


def test_the_parser_sees_the_package() -> None:
    # guards against a vacuous pass: known modules and known imports are found, every module has a layer
    expected = {"sifa_hub", "sifa_hub.cli", "sifa_hub.ops", "sifa_hub.models.sifa_resnet", "sifa_hub.layers"}
    assert expected <= set(PACKAGE.modules)
    assert [m for m in PACKAGE.modules if _layer(m) < 0] == []
    pairs = {(imp.importer, imp.target) for imp in PACKAGE.imports}
    assert ("sifa_hub", "sifa_hub.models") in pairs and ("sifa_hub.models.sifa_resnet", "sifa_hub.layers") in pairs


def test_every_module_is_defined_once() -> None:
    # `x.py` beside a package `x/` is dead code (the package wins the import) and hides the module from this test
    parts = [p.relative_to(PACKAGE_DIR.parent).with_suffix("").parts for p in sorted(PACKAGE_DIR.rglob("*.py"))]
    names = [".".join(p[:-1] if p[-1] == "__init__" else p) for p in parts]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, "defined both as a module and as a package: " + ", ".join(twice)


def test_no_import_cycle() -> None:
    cycles = PACKAGE.cycles()
    report = [" <-> ".join(c) + "\n    " + "\n    ".join(PACKAGE.edges_in(c)) for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(report)


def test_layers_read_bottom_up() -> None:
    bad = [
        f"{imp.where()} ({LAYERS[_layer(imp.importer)][0]}) imports {imp.target} ({LAYERS[_layer(imp.target)][0]})"
        for imp in PACKAGE.imports
        if _layer(imp.target) > _layer(imp.importer)
    ]
    assert not bad, "a lower layer imports a higher one:\n" + "\n".join(bad)


def test_no_private_names_of_other_applications() -> None:
    bad = PACKAGE.private_uses()
    assert not bad, "private names of another application module:\n" + "\n".join(bad)


@pytest.mark.parametrize("importer", sorted(FORBIDDEN))
def test_forbidden_imports(importer: str) -> None:
    bad = [
        f"{imp.where()} imports {imp.target}"
        for imp in PACKAGE.imports
        if _within(imp.importer, importer) and any(_within(imp.target, f) for f in FORBIDDEN[importer])
    ]
    assert not bad, f"{importer} must not import {', '.join(FORBIDDEN[importer])}:\n" + "\n".join(bad)


def test_the_rules_catch_violations(tmp_path: Path) -> None:
    # the checks themselves, on a tiny fake package: a function-level cycle, an upward import, private imports
    pkg = tmp_path / "sifa_hub"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops" / "__init__.py").write_text("def f():\n    from ..train import _step\n")
    (pkg / "train.py").write_text("from .ops import f\n")
    (pkg / "predict.py").write_text("import sifa_hub.train as t\nt._step()\n")
    (pkg / "explain.py").write_text("from . import train\n")
    fake = Package(pkg)
    assert fake.cycles() == [["sifa_hub.ops", "sifa_hub.train"]]
    assert [(i.target, i.names) for i in fake.imports if i.importer == "sifa_hub.ops"] == [
        ("sifa_hub.train", ("_step",))
    ]
    assert [(i.importer, i.target) for i in fake.imports if i.importer == "sifa_hub.explain"] == [
        ("sifa_hub.explain", "sifa_hub.train")
    ]
    assert _layer("sifa_hub.ops") < _layer("sifa_hub.train")
    assert fake.private_uses() == [
        "sifa_hub.ops:2 imports sifa_hub.train._step",
        "sifa_hub.predict:2 uses sifa_hub.train._step",
    ]
