"""The top-level folders install under `kaccy_bitcoin.*` and claim no generic names."""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = pathlib.Path(sys.executable)


def test_every_package_folder_is_declared() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == declared, f"undeclared: {found - declared}, stale: {declared - found}"


def test_installed_under_one_name_only() -> None:
    for name in ("domain", "ports", "adapters", "application", "bootstrap"):
        assert importlib.util.find_spec(f"kaccy_bitcoin.{name}") is not None
    # A fresh interpreter outside the repo must not see the generic names.
    probe = "import importlib.util as u; print([n for n in ('domain','ports','adapters','application','bootstrap') if u.find_spec(n)])"
    out = subprocess.run([str(PY), "-c", probe], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_installed() -> None:
    script = PY.parent / "kaccy-bitcoin"
    assert script.exists()
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "order" in out.stdout
