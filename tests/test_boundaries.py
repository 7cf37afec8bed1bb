"""Architecture rules: the domain core never imports Dagster."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import fundarb_core


def test_fundarb_core_imports_no_dagster_module() -> None:
    modules = [m.name for m in pkgutil.walk_packages(fundarb_core.__path__, "fundarb_core.")]
    assert "fundarb_core.ingest" in modules and "fundarb_core.sources.replay" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'dagster' or m.startswith(('dagster.', 'dagster_')))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
