"""MLflow runs, logged models and the champion alias, in a real SQLite store in a temp dir."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fundarb_core.forecast.baselines import Ewma, Persistence
from fundarb_core.forecast.tracking import (
    CHAMPION,
    LoggedEvaluation,
    log_evaluation,
    registered_name,
    update_champion,
    windows_key,
)
from fundarb_core.sources.replay import BUNDLED_DATA_DIR

FEATURES = ("rate_ewma_24h",)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def predictions() -> pd.DataFrame:
    """Real Hyperliquid/Binance BTC settlements: target = next per-hour rate, current = last one."""
    f = pd.read_parquet(BUNDLED_DATA_DIR / "market" / "funding.parquet")
    f = f[(f.venue_symbol.isin(["BTC", "BTCUSDT"])) & f.venue.isin(["hyperliquid", "binance"])].sort_values("ts")
    f = f[(f.ts >= "2026-02-01") & (f.ts < "2026-02-08")].copy()
    f["rph"] = f.rate / f.interval_hours
    f["series_id"] = f.venue + "|BTC"
    f["current"] = f.groupby("series_id").rph.shift(1)
    f["target"] = f.rph
    f["rate_ewma_24h"] = f.groupby("series_id").current.transform(lambda s: s.ewm(halflife=24).mean())
    f["hour"] = f.ts.dt.tz_localize(None).dt.floor("h")
    f["venue_type"] = np.where(f.venue == "hyperliquid", "1h", "8h")
    return f.dropna(subset=["current"]).reset_index(drop=True)


def _evaluate(model: Persistence | Ewma, pred: pd.DataFrame, uri: str) -> LoggedEvaluation:
    fitted = model.fit(pred, FEATURES)
    out = pred.join(fitted.predict(pred, pred))
    out["fit_origin"] = out["hour"].min()
    mae = float((out.pred - out.target).abs().mean())
    metrics = pd.DataFrame({"model": model.name, "target": "next_settlement", "venue_type": "all",
                            "metric": ["mae"], "value": [mae]})
    return log_evaluation(target="next_settlement", model_name=model.name, params={"window_hours": 168},
                          metrics=metrics, predictions=out, fitted=fitted, feature_cols=FEATURES,
                          example=pred[["series_id", "hour", "current", "venue_type", *FEATURES]], tracking_uri=uri)


def test_run_has_params_metrics_plots_and_a_loadable_model(predictions: pd.DataFrame, uri: str) -> None:
    ev = _evaluate(Persistence(), predictions, uri)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(ev.run_id)
    assert run.data.params["window_hours"] == "168"
    assert run.data.metrics["mae_apr_pct_all"] == pytest.approx(ev.mae * 8760 * 100)  # APR in percent, named so
    assert run.data.tags["windows"] == windows_key(predictions)
    arts = {a.path for a in client.list_artifacts(ev.run_id, "plots")}
    assert {"plots/predicted_vs_actual.png", "plots/error_by_venue.png", "plots/calibration.png"} <= arts
    model = mlflow.pyfunc.load_model(ev.model_uri)
    assert model.metadata.signature is not None
    sample = predictions[["series_id", "hour", "current", "venue_type", *FEATURES]].head(5)
    np.testing.assert_allclose(model.predict(sample)["pred"].to_numpy(), sample["current"].to_numpy())
    assert uri.startswith("sqlite:///")


def test_champion_moves_only_when_beaten_on_the_same_windows(predictions: pd.DataFrame, uri: str) -> None:
    pers, ewma = _evaluate(Persistence(), predictions, uri), _evaluate(Ewma(), predictions, uri)
    first = update_champion("next_settlement", {"persistence": pers}, tracking_uri=uri)
    assert first["champion"] == "persistence" and first["reason"] == "first champion"
    # same windows: the better of the two must win, the worse must not
    second = update_champion("next_settlement", {"persistence": pers, "ewma": ewma}, tracking_uri=uri)
    winner = "ewma" if ewma.mae < pers.mae else "persistence"
    assert second["champion"] == winner
    client = MlflowClient(tracking_uri=uri)
    champ = client.get_model_version_by_alias(registered_name("next_settlement"), CHAMPION)
    assert champ.tags["model"] == winner
    worse = LoggedEvaluation(run_id=pers.run_id, model_uri=pers.model_uri, mae=max(pers.mae, ewma.mae) * 2,
                             windows=pers.windows)
    third = update_champion("next_settlement", {"persistence": worse}, tracking_uri=uri)
    assert third["promoted"] is False
    assert client.get_model_version_by_alias(registered_name("next_settlement"), CHAMPION).version == champ.version
    loaded = mlflow.pyfunc.load_model(f"models:/{registered_name('next_settlement')}@{CHAMPION}")
    assert loaded is not None


def test_store_opens_on_training_runs_without_default_and_survives_a_move(predictions: pd.DataFrame,
                                                                         tmp_path: Path, monkeypatch) -> None:
    """The project's own store (``mlflow/`` under the working directory): experiments are training experiments,
    no ``Default`` experiment is left, and after the project is moved every plot and the champion still load."""
    import shutil

    project = tmp_path / "project"
    (project / "mlflow").mkdir(parents=True)
    monkeypatch.chdir(project)
    uri = "sqlite:///mlflow/mlflow.db"
    pers = _evaluate(Persistence(), predictions, uri)
    update_champion("next_settlement", {"persistence": pers}, tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    active = client.search_experiments()
    assert [e.name for e in active] == ["fundarb/next_settlement"]  # no Default
    exp = active[0]
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == "mlflow/artifacts"
    assert not client.get_run(pers.run_id).info.artifact_uri.startswith(("/", "file:"))

    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(project, moved)
    shutil.rmtree(project)
    monkeypatch.chdir(moved)
    client = MlflowClient(tracking_uri=uri)
    local = client.download_artifacts(pers.run_id, "plots/calibration.png", str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{registered_name('next_settlement')}@{CHAMPION}")
    sample = predictions[["series_id", "hour", "current", "venue_type", *FEATURES]].head(3)
    np.testing.assert_allclose(model.predict(sample)["pred"].to_numpy(), sample["current"].to_numpy())
