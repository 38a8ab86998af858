"""scripts/setup.sh on a machine where tor was installed before: the operator's tor (perhaps the very
proxy of KACCY_PROXY) is left alone, neither disabled nor stopped. Run on a copy of the script with
the system commands replaced by ones that record their calls (nothing is installed or changed)."""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

SHIM = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0")" in
  dpkg-query) printf 'install ok installed' ;;
esac
exit 0
"""


def test_setup_leaves_an_already_installed_tor_alone(tmp_path: pathlib.Path) -> None:
    if not pathlib.Path("/etc/init.d/tor").exists():
        pytest.skip("needs tor's init script (scripts/setup.sh installs tor)")
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tree / "scripts" / "setup.sh")
    (tree / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv_bin = tree / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text("#!/bin/sh\nexit 0\n")
    (venv_bin / "python").chmod(0o755)
    (tree / ".venv" / ".kaccy-installed").write_text(
        hashlib.sha256((tree / "pyproject.toml").read_bytes()).hexdigest() + "\n")
    shims, log = tmp_path / "bin", tmp_path / "calls.log"
    shims.mkdir()
    log.touch()
    for name in ("dpkg", "dpkg-query", "apt-get", "sudo", "systemctl", "update-rc.d", "kill", "tee", "chmod"):
        (shims / name).write_text(SHIM.format(log=log))
        (shims / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(tree / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert not [c for c in calls if c.split()[0] in ("apt-get", "systemctl", "update-rc.d", "kill", "tee")], calls
