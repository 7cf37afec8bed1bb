"""The lock file (``requirements.lock``, compiled by ``make lock``) is in sync with pyproject.toml, and the
environment the tests run in was installed from it — so two fresh clones resolve the same versions.

Offline by design (CI must not depend on the index answering the same way twice): every direct dependency of
``[project.dependencies]`` and the ``dev`` extra is pinned in the lock with a version its range accepts; every pin
the lock attributes to ``fundarb (pyproject.toml)`` is still a direct dependency; every pin carries hashes; and the
installed distributions are exactly the pinned versions.  torch is not in the lock: it is installed first, by
name, from the machine's CPU wheel (``torch==2.13.0``), and checked here against pyproject's range.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
UNLOCKED = {"torch"}  # installed first from the local CPU wheel (Makefile)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\]+)")


def direct_requirements() -> list[Requirement]:
    """``[project.dependencies]`` and the ``dev`` extra, with the project's own extras it names expanded
    (``fundarb[deploy]`` in ``dev`` is the deploy extra's requirements)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    out: list[Requirement] = []
    todo = [*project["dependencies"], *extras["dev"]]
    while todo:
        req = Requirement(todo.pop(0))
        if canonicalize_name(req.name) == canonicalize_name(project["name"]):
            for extra in req.extras:
                todo.extend(extras[extra])
        else:
            out.append(req)
    return out


def parse_lock() -> dict[str, dict[str, object]]:
    """name → {version, hashes, via} from the pip-compile style lock."""
    pins: dict[str, dict[str, object]] = {}
    current: dict[str, object] | None = None
    via_block = False
    for line in LOCK.read_text().splitlines():
        m = PIN.match(line)
        if m:
            current = {"version": m.group(2), "hashes": 0, "via": []}
            pins[canonicalize_name(m.group(1))] = current
            via_block = False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("--hash=sha256:"):
            current["hashes"] = int(current["hashes"]) + 1  # type: ignore[call-overload]
        elif stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            via_block = not rest
            if rest:
                current["via"].append(rest)  # type: ignore[attr-defined]
        elif via_block and stripped.startswith("#   "):
            current["via"].append(stripped.removeprefix("#").strip())  # type: ignore[attr-defined]
    return pins


def test_every_direct_dependency_is_pinned_within_its_range() -> None:
    pins = parse_lock()
    missing, outside = [], []
    for req in direct_requirements():
        name = canonicalize_name(req.name)
        if name in UNLOCKED:
            continue
        if name not in pins:
            missing.append(str(req))
        elif not req.specifier.contains(Version(str(pins[name]["version"])), prereleases=True):
            outside.append(f"{req} locked at {pins[name]['version']}")
    assert not missing and not outside, f"requirements.lock is out of date (run `make lock`): missing {missing}, " \
                                        f"outside the range {outside}"


def test_the_lock_holds_no_stale_direct_dependency_and_every_pin_is_hashed() -> None:
    pins = parse_lock()
    direct = {canonicalize_name(r.name) for r in direct_requirements()}
    stale = [n for n, p in pins.items() if "fundarb (pyproject.toml)" in p["via"] and n not in direct]  # type: ignore[operator]
    assert not stale, f"pinned for pyproject.toml but no longer in it (run `make lock`): {stale}"
    assert not [n for n, p in pins.items() if not p["hashes"]], "every pin needs its hashes (pip --require-hashes)"
    assert not UNLOCKED & set(pins), "torch comes from the local CPU wheel, never from the lock"
    assert len(pins) > 50


def test_the_environment_was_installed_from_the_lock() -> None:
    pins = parse_lock()
    wrong = []
    for name, pin in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} not installed (lock {pin['version']})")
            continue
        if Version(installed) != Version(str(pin["version"])):
            wrong.append(f"{name} {installed} (lock {pin['version']})")
    assert not wrong, "installed versions differ from requirements.lock (reinstall with `make`): " + "; ".join(wrong)
    torch = next(r for r in direct_requirements() if r.name == "torch")
    assert torch.specifier.contains(Version(metadata.version("torch")).base_version)


@pytest.mark.parametrize("package", ["pandas", "numpy", "duckdb", "lightgbm", "scikit-learn"])
def test_the_figure_deciding_packages_are_pinned(package: str) -> None:
    """The libraries whose versions move the backtest figures are pinned to one exact version."""
    assert canonicalize_name(package) in parse_lock()
