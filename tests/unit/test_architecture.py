"""architecture.md's layers, enforced: every import in gateway/ (in functions and under TYPE_CHECKING too)
goes to a layer the importer may use, and every module belongs to a layer.

The rules are data below, in the words of architecture.md; a failure names file:line, what it imports and
the rule it breaks.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# layer -> the modules in it; an entry covers itself and its submodules, the longest entry wins
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": (
        "gateway",
        "gateway.errors",
        "gateway.model",
        "gateway.log",
        "gateway.aio",
        "gateway.backoff",
        "gateway.failpoints",
        "gateway.sdnotify",
        "gateway.capture",
    ),
    "bytes": ("gateway.links",),
    "parsing": ("gateway.formats", "gateway.chipmap"),
    "cloud": ("gateway.cloud",),
    "store": ("gateway.store",),
    "settings": ("gateway.config",),
    "guards": ("gateway.guards",),
    "ingest": ("gateway.ingest",),
    "pipeline": ("gateway.pipeline",),
    "upload": (
        "gateway.uploader",
        "gateway.uplink",
        "gateway.delivery",
        "gateway.verification",
        "gateway.rollover",
        "gateway.lifecycle",
    ),
    "local API": ("gateway.control", "gateway.status", "gateway.snapshot"),
    "service": ("gateway.service",),
    "commands": (
        "gateway.cli",
        "gateway.__main__",
        "gateway.daemon_cli",
        "gateway.crew_cli",
        "gateway.outbox_cli",
        "gateway.demo",
        "gateway.recorder",
        "gateway.formats.cli",
        "gateway.emulator.cli",
        "gateway.simulator.cli",
    ),
    "emulator": ("gateway.emulator",),
    "simulator": ("gateway.simulator",),
}
BELOW_SERVICE = {
    "foundation",
    "bytes",
    "parsing",
    "cloud",
    "store",
    "settings",
    "guards",
    "ingest",
    "pipeline",
    "upload",
}
# layer -> what it may import besides itself: layer names, or single modules
MAY_IMPORT: dict[str, set[str]] = {
    "foundation": set(),
    "bytes": {"foundation"},
    "parsing": {"foundation"},
    "cloud": {"foundation"},
    "store": {"foundation"},
    "settings": {"foundation", "parsing", "bytes"},
    "guards": {"foundation"},
    "ingest": {"foundation", "bytes", "parsing"},
    "pipeline": {"foundation", "parsing", "store", "settings"},
    "upload": {"foundation", "cloud", "store", "settings"},
    "local API": BELOW_SERVICE,
    "service": BELOW_SERVICE | {"local API"},
    "commands": set(LAYERS),
    "emulator": {"gateway.aio", "gateway.log", "gateway.errors"},
    "simulator": {"foundation", "bytes", "parsing"},
}
# third-party module -> the layers (or modules) that may import it
LIBRARIES: dict[str, set[str]] = {
    "sqlite3": {"store", "guards", "commands", "emulator"},
    "aiosqlite": {"store", "commands", "emulator"},
    "aiohttp": {"cloud", "local API", "service", "emulator", "commands"},
    "serial_asyncio_fast": {"gateway.links.serial"},
    "serial": {"gateway.links.serial"},
    "click": {"commands"},
    "rich": {"commands"},
}


@dataclass(frozen=True)
class Import:
    module: str  # the importer, dotted
    where: str  # file:line
    target: str  # the module imported (gateway.x.y, or a top-level third-party name)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def imports(root: Path, package: str = "gateway") -> tuple[Import, ...]:
    """Every import statement under root/package, resolved to the module it loads."""
    return tuple(_walk(root, package))


def _walk(root: Path, package: str) -> Iterator[Import]:
    files = sorted((root / package).rglob("*.py"))
    known = {module_name(p, root) for p in files}
    for path in files:
        mod = module_name(path, root)
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(mod, where, alias.name if alias.name.startswith(package) else alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                if not base.startswith(package):
                    yield Import(mod, where, base.split(".")[0])
                    continue
                # one report per module a statement loads, however many names it takes from it
                targets: dict[str, None] = {}
                for alias in node.names:  # `from gateway import formats` loads the module gateway.formats
                    sub = f"{base}.{alias.name}"
                    targets[sub if sub in known else base] = None
                for target in targets:
                    yield Import(mod, where, target)


def layer_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for layer, entries in LAYERS.items():
        for entry in entries:
            exact_only = entry == "gateway"  # the root package's __init__, not everything below it
            if module == entry or (not exact_only and module.startswith(entry + ".")):
                if best is None or len(entry) > best[0]:
                    best = (len(entry), layer)
    return best[1] if best else None


def allowed(token_set: set[str], module: str) -> bool:
    """Whether `module` is covered by a set of layer names and module names."""
    layer = layer_of(module)
    return any(t == layer or module == t or module.startswith(t + ".") for t in token_set)


def violations(root: Path, importer_layer: str, only: set[str] | None = None) -> list[str]:
    """The imports of `importer_layer` into a gateway layer it may not use (`only`: just these target layers)."""
    found = []
    for imp in imports(root):
        if layer_of(imp.module) != importer_layer or not imp.target.startswith("gateway"):
            continue
        target_layer = layer_of(imp.target)
        if target_layer == importer_layer or allowed(MAY_IMPORT[importer_layer], imp.target):
            continue
        if only is not None and target_layer not in only:
            continue
        found.append(f"{imp.where} imports {imp.target} ({target_layer})")
    return found


# One rule per layer; the local API's ban on `service` is its own rule, so a break of it is named as such.
RULES = [pytest.param(layer, None, id=layer) for layer in LAYERS if layer not in ("commands", "local API")]
RULES += [
    pytest.param("local API", set(LAYERS) - BELOW_SERVICE - {"local API", "service"}, id="local API"),
    pytest.param("local API", {"service"}, id="local API never imports service"),
]


@pytest.mark.parametrize(("layer", "only"), RULES)
def test_a_layer_imports_only_what_architecture_md_allows(layer: str, only: set[str] | None) -> None:
    found = violations(ROOT, layer, only)
    may = ", ".join(sorted(MAY_IMPORT[layer])) or "nothing but itself"
    assert found == [], f"{layer} may import {may} (architecture.md):\n" + "\n".join(found)


def test_every_module_is_in_a_layer() -> None:
    unplaced = sorted(
        module_name(p, ROOT) for p in (ROOT / "gateway").rglob("*.py") if layer_of(module_name(p, ROOT)) is None
    )
    assert unplaced == [], f"modules in no layer of architecture.md (add each to its table): {unplaced}"


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_a_library_stays_in_its_layers(library: str) -> None:
    found = [
        f"{imp.where} ({layer_of(imp.module)})"
        for imp in imports(ROOT)
        if imp.target == library and not allowed(LIBRARIES[library], imp.module)
    ]
    assert found == [], f"{library} only in {sorted(LIBRARIES[library])} (architecture.md):\n" + "\n".join(found)


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checker itself: a link that reaches up into a format, however it is written, is reported."""
    links = tmp_path / "gateway" / "links"
    links.mkdir(parents=True)
    for pkg in ("gateway", "gateway/links", "gateway/formats"):
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "gateway" / "formats" / "csv.py").write_text("")
    (tmp_path / "gateway" / "errors.py").write_text("")
    (links / "a.py").write_text("from gateway.formats import csv\nfrom gateway.errors import X\n")
    (links / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway.formats.csv\n")
    (links / "c.py").write_text("def f():\n    from ..formats import csv\n")
    (links / "d.py").write_text("from gateway import formats\n")
    assert violations(tmp_path, "bytes") == [
        "gateway/links/a.py:1 imports gateway.formats.csv (parsing)",
        "gateway/links/b.py:3 imports gateway.formats.csv (parsing)",
        "gateway/links/c.py:2 imports gateway.formats.csv (parsing)",
        "gateway/links/d.py:1 imports gateway.formats (parsing)",
    ]
