"""The e2u wheel built from this checkout and installed (not editable) into a fresh virtual environment,
with nothing downloaded: the wheel goes in without its dependencies, which the new environment reads from
the running one's site-packages (a .pth line).  ``installed_wheel`` (tests/conftest.py) builds it once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clean_env(environment: Path | None = None) -> dict[str, str]:
    """This process's environment without what would let a child import the checkout; with
    ``environment``'s bin/ first on PATH (its ``e2u``, ``uvicorn`` and ``celery`` scripts)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if environment is not None:
        env["PATH"] = f"{environment / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``command`` to its end and return its output; fail with its output when it fails."""
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env or clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def install_wheel(work: Path) -> Path:
    """Build the wheel under ``work`` and install it into a fresh virtual environment; its folder."""
    # build from a copy: building in place would leave build/ and e2u.egg-info/ in the checkout
    source = work / "source"
    skip = shutil.ignore_patterns(".*", "var", "build", "dist", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", work / "dist", source)
    [wheel] = (work / "dist").glob("e2u-*.whl")
    environment = work / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    site_packages = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    dependencies = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site_packages) / "e2u_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return environment
