"""Build the small real project the browser tests open: run as ``python -m tests.browser_build DATA_DIR``
in a subprocess whose environment (FUNDARB_DATA_DIR, FUNDARB_DUCKDB, DAGSTER_HOME, working directory = the
project) is what the UIs will use, so the daily partitions, the DuckDB file, the Dagster run history and the
MLflow store (``mlflow/`` under the working directory, the embedded default) are the project's own.

Every step is the project's own code on real bundled rows, made small: the raw backfill and the SQL models as
``fundarb run`` does them, the forecasting assets for BTC with short walk-forwards, one paper keeper cycle
and the backtest assets over 12 hours.
"""

from __future__ import annotations

import argparse
import sys
import time

import dagster as dg

FORECAST = {"eval_days": 2, "assets": ["BTC"], "deep_epochs": 1, "deep_max_train_windows": 300,
            "deep_refit_every": 48, "refit_every": 48, "gbm_trees": 20}
PERIOD = {"start": "2026-03-04 00:00", "end": "2026-03-04 12:00", "assets": ["BTC", "ETH"], "gbm_trees": 20}


def main() -> int:
    from fundarb_pipelines import cli
    from fundarb_pipelines.assets.backtest import backtest_assets
    from fundarb_pipelines.assets.forecast import ForecastConfig, forecast_assets
    from fundarb_pipelines.definitions import build_resources
    from fundarb_pipelines.instance import ensure_dagster_home

    parser = argparse.ArgumentParser()
    parser.add_argument("reports_dir")
    args = parser.parse_args()
    ensure_dagster_home()
    t0 = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        steps: list[tuple[str, dg.ExecuteInProcessResult]] = []
        steps.append(("ingest", cli.ingest(instance)))
        steps.append(("models", cli.build_models(instance)))
        resources = {**build_resources(), "forecast_config": ForecastConfig(**FORECAST)}
        steps.append(("forecasts", dg.materialize(forecast_assets, instance=instance, resources=resources)))
        keeper = cli.keeper_once(instance, argparse.Namespace(mode="paper", dry_run=False, as_of=None))
        steps.append(("keeper", keeper))
        period = {**PERIOD, "reports_dir": args.reports_dir}
        config = {"ops": {"strategy_backtest": {"config": period}, "oracle_bound": {"config": period},
                          "fee_regimes": {"config": period},
                          "leverage_safety": {"config": {"days": 3, "assets": ["BTC"],
                                                         "reports_dir": args.reports_dir}}}}
        steps.append(("backtests", dg.materialize(backtest_assets, instance=instance, resources=build_resources(),
                                                  run_config=config)))
        for name, res in steps:
            if not res.success:
                print(f"browser_build: {name} failed (run {res.run_id})", file=sys.stderr)
                return 1
            print(f"browser_build: {name} ok at {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
