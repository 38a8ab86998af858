"""The hexagon's import rules, checked on the source tree."""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ("domain", "ports", "adapters", "application", "bootstrap")
# What each layer may import from the project.
ALLOWED = {
    "domain": {"domain"},
    "ports": {"domain", "ports"},
    "application": {"domain", "ports", "application"},
    "adapters": {"domain", "ports", "adapters"},
    "bootstrap": set(LAYERS),
}
# Outside libraries that do I/O or belong to an adapter; the domain and ports use none.
IO_LIBRARIES = {"aiohttp", "sqlmodel", "sqlalchemy", "hwilib", "requests", "socket", "subprocess",
                "asyncio", "urllib3", "http", "psycopg", "sqlite3", "dependency_injector", "os", "shutil"}
STDLIB = set(sys.stdlib_module_names)
PURE_THIRD_PARTY = {"attrs", "transitions", "bip_utils", "bitcointx", "coincurve",
                    # RSK: ABI encoding, keccak, key and transaction signing (domain/rsk.py).
                    "eth_abi", "eth_account", "eth_utils", "eth_keys", "rlp"}


def imports_of(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.append("<relative>")
    return names


def files(layer: str) -> list[pathlib.Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_what_it_may(layer: str) -> None:
    bad = []
    for path in files(layer):
        for name in imports_of(path):
            top = name.split(".")[0]
            if name == "<relative>":
                bad.append(f"{path.relative_to(ROOT)}: relative import (use kaccy_bitcoin.*)")
            elif top in LAYERS:
                bad.append(f"{path.relative_to(ROOT)}: bare import {name!r} (use kaccy_bitcoin.{name})")
            elif top == "kaccy_bitcoin":
                target = name.split(".")[1] if "." in name else ""
                if target not in ALLOWED[layer]:
                    bad.append(f"{path.relative_to(ROOT)}: {layer} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer", ["domain", "ports"])
def test_core_does_no_io(layer: str) -> None:
    bad = []
    for path in files(layer):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in IO_LIBRARIES:
                bad.append(f"{path.relative_to(ROOT)}: imports I/O library {name}")
            elif top not in STDLIB and top not in PURE_THIRD_PARTY and top != "kaccy_bitcoin":
                bad.append(f"{path.relative_to(ROOT)}: imports unvetted library {name}")
    assert not bad, "\n".join(bad)


def test_only_bootstrap_names_concrete_adapters() -> None:
    bad = [f"{p.relative_to(ROOT)}: {n}" for layer in ("domain", "ports", "application")
           for p in files(layer) for n in imports_of(p) if n.startswith("kaccy_bitcoin.adapters")]
    assert not bad, "\n".join(bad)


def test_rules_catch_a_violation(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from kaccy_bitcoin.adapters.sql import storage\nimport aiohttp\n")
    assert imports_of(sample) == ["kaccy_bitcoin.adapters.sql", "aiohttp"]
