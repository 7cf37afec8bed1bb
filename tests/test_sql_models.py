"""The SQL model layer materialised through Dagster on real rows, and spread_panel checked by hand."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_pipelines.assets.raw import raw_assets
from fundarb_pipelines.definitions import defs
from fundarb_pipelines.resources import FundarbDuckDB, MarketSourceResource
from fundarb_pipelines.sql_models import load_models, parse_model, sql_assets, sql_checks
from tests.conftest import window_tables, write_layout

LO, HI = "2026-01-10", "2026-02-21"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.ExecuteInProcessResult]:
    """Raw assets (one single-run backfill over the window) then every SQL model, via Dagster."""
    from fundarb_core.schema import LAYOUT_FILES

    root = tmp_path_factory.mktemp("sqlwin")
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    data_dir = write_layout(root / "data", window_tables(bundled, LO, HI))
    db = root / "w.duckdb"
    resources = {
        "duckdb": FundarbDuckDB(database=str(db)),
        "market_source": MarketSourceResource(data_dir=str(data_dir)),
    }
    raw = dg.materialize(
        raw_assets,
        resources=resources,
        tags={"dagster/asset_partition_range_start": LO, "dagster/asset_partition_range_end": "2026-02-20"},
    )
    assert raw.success
    models = dg.materialize([*sql_assets, *sql_checks], resources=resources)
    assert models.success
    return db, models


def test_every_model_is_an_asset_with_its_real_dependencies() -> None:
    graph = defs().resolve_asset_graph()
    names = {m.name for m in load_models()}
    assert names >= {"stg_funding_hourly", "spread_panel", "basis", "volatility", "features", "regime_labels"}

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("stg_funding_hourly") == {"funding_rates"}
    assert parents("spread_panel") == {"stg_funding_hourly"}
    assert parents("features") == {"stg_funding_hourly", "open_interest", "volatility"}
    assert parents("regime_labels") == {"stg_funding_hourly", "features"}
    assert graph.get(dg.AssetKey("spread_panel")).group_name == "marts"
    assert graph.get(dg.AssetKey("stg_funding_hourly")).group_name == "staging"


def test_models_materialise_with_row_counts_and_passing_checks(built: tuple[Path, dg.ExecuteInProcessResult]) -> None:
    db, result = built
    with duckdb.connect(str(db), read_only=True) as conn:
        for m in load_models():
            meta = result.asset_materializations_for_node(m.name)[0].metadata
            count = conn.execute(f"SELECT count(*) FROM {m.name}").fetchall()[0][0]
            assert meta["dagster/row_count"].value == count > 0, m.name
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 25
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert not failed
    labels_meta = result.asset_materializations_for_node("regime_labels")[0].metadata
    assert "vol_q80" in labels_meta["summary"].value  # labels carry their thresholds


def _rate(venue: str, symbol: str, ts: str) -> tuple[float, float]:
    f = pd.read_parquet(BUNDLED_DATA_DIR / "market" / "funding.parquet")
    t = pd.Timestamp(ts, tz="UTC")
    row = f[(f.venue == venue) & (f.venue_symbol == symbol) & (f.ts >= t) & (f.ts < t + pd.Timedelta(seconds=2))]
    assert len(row) == 1
    return float(row.rate.iloc[0]), float(row.interval_hours.iloc[0])


def _panel(db: Path, asset: str, short: str, long: str, hour: str) -> pd.Series:
    with duckdb.connect(str(db), read_only=True) as conn:
        df = conn.execute(
            "SELECT * FROM spread_panel WHERE asset = ? AND short_venue = ? AND long_venue = ? AND hour = ?",
            [asset, short, long, pd.Timestamp(hour).to_pydatetime()],
        ).df()
    assert len(df) == 1
    return df.iloc[0]


def test_spread_mixing_1h_and_8h_by_hand(built: tuple[Path, dg.ExecuteInProcessResult]) -> None:
    # ETH, hour [12:00, 13:00) of 2026-01-15: Hyperliquid settles it at 13:00 (1h), Binance at 16:00 (8h)
    hl, hl_i = _rate("hyperliquid", "ETH", "2026-01-15 13:00")
    bn, bn_i = _rate("binance", "ETHUSDT", "2026-01-15 16:00")
    assert (hl, hl_i, bn, bn_i) == (1.25e-05, 1.0, 9.722e-05, 8.0)
    row = _panel(built[0], "ETH", "hyperliquid", "binance", "2026-01-15 12:00")
    # 1.25e-5/1 − 9.722e-5/8 = 1.25e-5 − 1.21525e-5 = 3.475e-7 per hour → × 8760 = 0.0030441 APR
    assert row.spread_per_hour == pytest.approx(3.475e-7, rel=1e-9)
    assert row.spread_apr == pytest.approx(0.0030441, rel=1e-6)
    assert (row.short_interval_hours, row.long_interval_hours) == (1.0, 8.0)
    assert row.known_at == pd.Timestamp("2026-01-15 16:00")
    # what a trader saw at 12:00: Hyperliquid's 12:00 settlement vs Binance's 08:00 one
    hl_seen, _ = _rate("hyperliquid", "ETH", "2026-01-15 12:00")
    bn_seen, _ = _rate("binance", "ETHUSDT", "2026-01-15 08:00")
    assert row.observed_spread_per_hour == pytest.approx(hl_seen - bn_seen / 8, rel=1e-9)


def test_spread_across_an_interval_change_by_hand(built: tuple[Path, dg.ExecuteInProcessResult]) -> None:
    # Bybit moved INJUSDT from 8h to 1h: the 16:00 settlement is 8h, the 17:00 one is 1h.
    by16, i16 = _rate("bybit", "INJUSDT", "2026-02-19 16:00")
    by17, i17 = _rate("bybit", "INJUSDT", "2026-02-19 17:00")
    hl16, _ = _rate("hyperliquid", "INJ", "2026-02-19 16:00")
    hl17, _ = _rate("hyperliquid", "INJ", "2026-02-19 17:00")
    assert (i16, i17) == (8.0, 1.0)
    before = _panel(built[0], "INJ", "bybit", "hyperliquid", "2026-02-19 15:00")
    after = _panel(built[0], "INJ", "bybit", "hyperliquid", "2026-02-19 16:00")
    assert before.spread_per_hour == pytest.approx(by16 / 8 - hl16, rel=1e-9)
    assert after.spread_per_hour == pytest.approx(by17 / 1 - hl17, rel=1e-9)
    assert (before.short_interval_hours, after.short_interval_hours) == (8.0, 1.0)
    # -0.00368432/1 − hl17: the 1h settlement is not divided by 8
    assert by17 == -0.00368432


def test_spread_between_two_4h_venues_by_hand(built: tuple[Path, dg.ExecuteInProcessResult]) -> None:
    okx, oi = _rate("okx", "HYPE-USDT-SWAP", "2026-02-01 08:00")
    bn, bi = _rate("binance", "HYPEUSDT", "2026-02-01 08:00")
    assert (oi, bi) == (4.0, 4.0)
    row = _panel(built[0], "HYPE", "okx", "binance", "2026-02-01 05:00")
    # (1.82851349279e-05 − 5e-05) / 4 = −7.928716268e-06 per hour
    assert row.spread_per_hour == pytest.approx((okx - bn) / 4, rel=1e-9)
    assert row.spread_per_hour == pytest.approx(-7.928716268025e-06, rel=1e-9)
    mirror = _panel(built[0], "HYPE", "binance", "okx", "2026-02-01 05:00")
    assert mirror.spread_per_hour == pytest.approx(-row.spread_per_hour)


def test_loader_reads_refs_and_tests(tmp_path: Path) -> None:
    (tmp_path / "marts").mkdir()
    p = tmp_path / "marts" / "x.sql"
    p.write_text("-- description: d\n-- unique_key: a, b\n-- accepted_range: v 0 1\nSELECT * FROM {{ ref('y') }}\n")
    m = parse_model(p)
    assert (m.deps, m.unique_key, m.accepted_ranges, m.layer) == (("y",), ("a", "b"), (("v", 0.0, 1.0),), "marts")
    assert m.sql == "SELECT * FROM y"
