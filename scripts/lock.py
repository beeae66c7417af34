"""Write requirements.lock: every distribution e2u needs at run time (its dependencies, theirs, and so
on, extras and markers followed), pinned to the version installed in the running environment, the one
CI tests.  Offline: it reads installed metadata and downloads nothing.

    .venv/bin/python scripts/lock.py            # rewrite requirements.lock
    .venv/bin/python scripts/lock.py --check    # exit 1 if requirements.lock differs
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
HEADER = f"""\
# The images' dependencies (docker/Dockerfile): e2u's run-time closure at the versions CI tests, written
# offline by `python scripts/lock.py` from the installed environment (Python {PYTHON}, Linux x86_64).
# torch is installed first from its CPU or CUDA index (the same release).
"""


def _wanted(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def closure(root: str) -> dict[str, str]:
    """Canonical name -> installed version of every distribution ``root`` needs (``root`` excluded)."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        distribution = metadata.distribution(name)
        if name != root:
            pinned[canonicalize_name(name)] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if _wanted(requirement, set(extras)):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return pinned


def render(pinned: dict[str, str]) -> str:
    # a local version label (torch's +cpu) names a build, not a release: the lock pins the release
    lines = [f"{name}=={version.split('+')[0]}" for name, version in sorted(pinned.items())]
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render(closure("e2u"))
    if argv == ["--check"]:
        if LOCK.read_text() != text:
            print(f"{LOCK.name} differs from the installed environment: run python scripts/lock.py")
            return 1
        return 0
    LOCK.write_text(text)
    print(f"wrote {LOCK.name}: {text.count('==')} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
