"""Architecture rules: the domain core never imports Dagster."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import fundarb_core


def _imported_after(modules: list[str], bad_if: str) -> subprocess.CompletedProcess[str]:
    """Import ``modules`` in a fresh interpreter; fail (exit 1, listing them) when any loaded module ``m``
    satisfies the expression ``bad_if``."""
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if {bad_if})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_fundarb_core_imports_no_dagster_module() -> None:
    modules = [m.name for m in pkgutil.walk_packages(fundarb_core.__path__, "fundarb_core.")]
    assert "fundarb_core.ingest" in modules and "fundarb_core.sources.replay" in modules
    proc = _imported_after(modules, "m == 'dagster' or m.startswith(('dagster.', 'dagster_'))")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strategy_imports_neither_duckdb_nor_ccxt() -> None:
    """Strategy code is pure: what the keeper decides depends on the snapshot, not on where it came from."""
    import fundarb_core.strategy

    modules = [m.name for m in pkgutil.walk_packages(fundarb_core.strategy.__path__, "fundarb_core.strategy.")]
    assert "fundarb_core.strategy.planning" in modules and "fundarb_core.strategy.market_tape" in modules
    proc = _imported_after(modules, "m.split('.')[0] in ('duckdb', 'ccxt', 'dagster')")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_keeper_cycle_declares_every_table_the_keeper_reads() -> None:
    """The asset graph tells the truth: keeper_cycle's parents include every warehouse table of the keeper's
    market queries (their one list, KEEPER_TABLES), and each of those tables is read by those queries."""
    import inspect

    import dagster as dg

    from fundarb_core.storage import market_queries
    from fundarb_pipelines.definitions import defs

    graph = defs().resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("keeper_cycle")).parent_keys}
    assert set(market_queries.KEEPER_TABLES) <= parents, set(market_queries.KEEPER_TABLES) - parents
    assert "funding_forecasts" in parents
    source = inspect.getsource(market_queries)
    for table in market_queries.KEEPER_TABLES:
        assert f'"{table}"' in source.split("KEEPER_TABLES", 2)[2] or f"FROM {table}" in source, table
