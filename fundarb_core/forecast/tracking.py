"""MLflow tracking and registry for forecaster evaluations.

One experiment per target, one run per (model, target) walk-forward evaluation with its params,
metrics, windows, plots and the fitted model (a pyfunc with a signature).  The registry holds one
model per target (``fundarb-<target>``); its ``champion`` alias moves only when a challenger beats
the champion's MAE *on the same evaluation windows* (compared through the ``windows`` tag), so
an evaluation on an easier period can never promote a model.  The keeper loads
``models:/fundarb-<target>@champion``.

The store is a SQLite database (``sqlite:///mlflow/mlflow.db`` under the working directory) unless
``MLFLOW_TRACKING_URI`` says otherwise; never the ``./mlruns`` file store.

What a person sees in ``mlflow ui`` (why the store is set up the way it is):

- every experiment carries ``mlflow.experimentKind = custom_model_development``, so MLflow 3 opens it on its
  training runs, not on its empty GenAI (traces) view;
- error metrics are logged in a unit a person reads, named in the metric: ``mae_apr_pct_all`` is the mean
  absolute error of the per-hour rate expressed as APR in percent (× 8760 × 100); raw per-hour rates
  (≈ 1e-5) made every axis tick read "0.00001";
- artifact locations are stored *relative to the working directory* when the store lies under it (the
  project's own ``mlflow/``: ``mlflow/artifacts``), so moving or copying the project keeps every plot and
  model link; MLflow itself only writes absolute paths, so the row is re-pointed right after creation;
- the ``Default`` experiment MLflow creates in every new store (pointing at ``./mlruns/0``) is deleted: no
  fundarb run goes there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

CHAMPION = "champion"
DEFAULT_STORE_DIR = "mlflow"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3's "Model training" view
HOURS_PER_YEAR = 8760
# metrics of a per-hour rate, logged as APR in percent (the unit is in the name); the rest are ratios or counts
APR_PCT_METRICS = {"mae": "mae_apr_pct", "rmse": "rmse_apr_pct"}


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store under ``./mlflow``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = Path(DEFAULT_STORE_DIR).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def registered_name(target: str) -> str:
    return f"fundarb-{target}"


def experiment_name(target: str) -> str:
    return f"fundarb/{target}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """Where a SQLite store's artifacts go: ``artifacts/`` beside the database, written relative to the working
    directory when it lies under it (so the project can move), else absolute; None for other stores."""
    db = _sqlite_path(uri)
    if db is None:
        return None
    root = (db.parent / "artifacts").resolve()
    try:
        return root.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return root.as_uri()


def _repoint(uri: str, experiment_id: str, location: str) -> None:
    """Store ``location`` as the experiment's artifact location verbatim (MLflow would make it absolute)."""
    db = _sqlite_path(uri)
    if db is None:
        return
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                     (location, int(experiment_id)))


def _retire_default(client: MlflowClient) -> None:
    """Delete MLflow's empty ``Default`` experiment (id 0): nothing of fundarb's goes there."""
    try:
        default = client.get_experiment("0")
        if default.lifecycle_stage == "active" and not client.search_runs(["0"], max_results=1):
            client.delete_experiment("0")
    except MlflowException:  # a store without one (or that refuses): nothing to retire
        return


def ensure_experiment(client: MlflowClient, target: str) -> str:
    """The experiment of one target: created as a training experiment, artifacts beside the SQLite store."""
    name = experiment_name(target)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = artifact_root(client.tracking_uri)
    exp_id = client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if location is not None and "://" not in location:
        _repoint(client.tracking_uri, exp_id, location)
    _retire_default(client)
    return exp_id


def readable_metrics(metrics: pd.DataFrame) -> dict[str, float]:
    """The tidy scores as MLflow metrics ``<metric>_<venue_type>``; per-hour error rates as APR in percent."""
    out = {}
    for r in metrics.itertuples():
        if pd.isna(r.value):
            continue
        metric = str(r.metric)
        scale = HOURS_PER_YEAR * 100 if metric in APR_PCT_METRICS else 1
        out[f"{APR_PCT_METRICS.get(metric, metric)}_{r.venue_type}"] = float(r.value) * scale
    return out


def windows_key(predictions: pd.DataFrame) -> str:
    """A fingerprint of the evaluation windows (origins × series) two runs must share to compare."""
    if predictions.empty:
        return "empty"
    keys = (predictions["series_id"].astype(str) + "|" + predictions["hour"].astype(str)).sort_values()
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


class ForecasterModel(mlflow.pyfunc.PythonModel):
    """A fitted forecaster as an MLflow pyfunc: input = panel rows (features), output = pred/lo/hi.

    Sequence models read their history from the same frame (rows of each series up to the row to
    predict), so the input is both ``rows`` and ``context``.
    """

    def __init__(self, forecaster: Any, feature_cols: tuple[str, ...]) -> None:
        self.forecaster = forecaster
        self.feature_cols = tuple(feature_cols)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input.copy()
        if "hour" in frame:
            frame["hour"] = pd.to_datetime(frame["hour"])
        out = self.forecaster.predict(frame, frame)
        return out.loc[:, ["pred", "lo", "hi"]]


@dataclass(frozen=True)
class LoggedEvaluation:
    run_id: str
    model_uri: str | None
    mae: float
    windows: str


def _plots(pred: pd.DataFrame, out: Path, title: str) -> list[Path]:
    paths = []
    ok = pred.dropna(subset=["target", "pred"])
    fig, ax = plt.subplots(figsize=(5, 5))
    sample = ok.sample(min(len(ok), 5000), random_state=0) if len(ok) else ok
    ax.scatter(sample["target"] * 8760, sample["pred"] * 8760, s=3, alpha=0.3)
    lim = np.nanpercentile(np.abs(sample[["target", "pred"]].to_numpy() * 8760), 99) if len(sample) else 1.0
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.8)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="actual (APR)", ylabel="predicted (APR)", title=title)
    paths.append(out / "predicted_vs_actual.png")
    fig.savefig(paths[-1], dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    err = (ok.assign(abs_err=(ok["pred"] - ok["target"]).abs() * 8760, venue=ok["series_id"].str.split("|").str[0])
           .groupby("venue")["abs_err"].mean().sort_values())
    err.plot.barh(ax=ax)
    ax.set(xlabel="MAE (APR)", title=f"{title}: error by venue")
    paths.append(out / "error_by_venue.png")
    fig.savefig(paths[-1], dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    cov = ok.dropna(subset=["lo", "hi"])
    if len(cov):
        inside = ((cov["target"] >= cov["lo"]) & (cov["target"] <= cov["hi"])).groupby(cov["venue_type"]).mean()
        inside.plot.bar(ax=ax)
    ax.axhline(0.8, color="k", lw=0.8, ls="--")
    ax.set(ylim=(0, 1), ylabel="share inside 80 % interval", title=f"{title}: calibration")
    paths.append(out / "calibration.png")
    fig.savefig(paths[-1], dpi=90, bbox_inches="tight")
    plt.close(fig)
    return paths


def log_evaluation(
    *,
    target: str,
    model_name: str,
    params: dict[str, Any],
    metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    fitted: Any | None,
    feature_cols: tuple[str, ...],
    example: pd.DataFrame | None,
    tracking_uri: str | None = None,
) -> LoggedEvaluation:
    """Log one walk-forward evaluation as an MLflow run (and the fitted model, with a signature).

    ``metrics`` is the tidy frame (model, target, venue_type, metric, value) of this model and
    target; they are logged by :func:`readable_metrics` (``mae_apr_pct_all``, ``skill_1h`` …).  The run is
    named after the model and its evaluation period.
    """
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    exp_id = ensure_experiment(client, target)
    windows = windows_key(predictions)
    flat = readable_metrics(metrics)
    mae_rows = metrics[(metrics["metric"] == "mae") & (metrics["venue_type"] == "all")]["value"]
    mae = float(mae_rows.iloc[0]) if len(mae_rows) else float("nan")  # the raw per-hour MAE decides champions
    first, last = (pd.Timestamp(predictions["hour"].min()), pd.Timestamp(predictions["hour"].max()))
    period = f"{first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M}" if len(predictions) else "no windows"
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{model_name} · {period}") as run:
        mlflow.set_tags({"model": model_name, "target": target, "windows": windows, "fundarb.kind": "walk_forward"})
        mlflow.log_params({k: (json.dumps(v) if isinstance(v, (list, dict, tuple)) else v) for k, v in params.items()})
        mlflow.log_metrics(flat)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            origins = sorted(predictions["fit_origin"].dropna().unique()) if "fit_origin" in predictions else []
            (out / "windows.json").write_text(json.dumps({
                "first_origin": str(predictions["hour"].min()),
                "last_origin": str(predictions["hour"].max()),
                "fit_origins": [str(o) for o in origins],
                "series": int(predictions["series_id"].nunique()),
                "rows": len(predictions),
            }, indent=1))
            for p in _plots(predictions, out, f"{model_name} · {target}"):
                mlflow.log_artifact(str(p), artifact_path="plots")
            mlflow.log_artifact(str(out / "windows.json"))
        model_uri = None
        if fitted is not None and example is not None and len(example):
            wrapper = ForecasterModel(fitted, feature_cols)
            sample = example.head(200)
            signature = infer_signature(sample, wrapper.predict(None, sample))
            info = mlflow.pyfunc.log_model(
                name="model", python_model=wrapper, signature=signature, input_example=sample.head(3),
                pip_requirements=["fundarb"],
            )
            model_uri = info.model_uri
    return LoggedEvaluation(run_id=run.info.run_id, model_uri=model_uri, mae=mae, windows=windows)


def _register(client: MlflowClient, name: str, model: str, ev: LoggedEvaluation) -> Any:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="fundarb forecaster; the keeper reads @champion")
    return client.create_model_version(
        name, ev.model_uri, run_id=ev.run_id,
        tags={"model": model, "windows": ev.windows, "mae_all": repr(ev.mae),
              "mae_apr_pct_all": f"{ev.mae * HOURS_PER_YEAR * 100:.3f}"},
    )


def update_champion(
    target: str, evaluations: dict[str, LoggedEvaluation], tracking_uri: str | None = None
) -> dict[str, Any]:
    """Move ``champion`` only when a challenger beats it on the same windows.

    ``evaluations`` are one cycle's runs, all on the same windows.  If the champion was scored on
    these windows, the best challenger must beat that score.  If the windows moved on (new data),
    the champion's model family was re-evaluated on the new windows in this cycle: the best
    challenger must beat *that*; if it does not, the alias moves to the champion family's
    refreshed version (same model, refitted on newer data) — never to a different family.
    """
    client = MlflowClient(tracking_uri=tracking_uri or default_tracking_uri())
    name = registered_name(target)
    logged = {m: ev for m, ev in evaluations.items() if ev.model_uri is not None and np.isfinite(ev.mae)}
    if not logged:
        return {"target": target, "promoted": False, "reason": "no model logged"}
    best_model = min(logged, key=lambda m: logged[m].mae)
    best = logged[best_model]
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None

    def point_to(model: str, reason: str) -> dict[str, Any]:
        version = _register(client, name, model, logged[model])
        client.set_registered_model_alias(name, CHAMPION, version.version)
        return {"target": target, "promoted": model != (champ.tags.get("model") if champ else None),
                "champion": model, "version": version.version, "mae": logged[model].mae, "reason": reason}

    if champ is None:
        return point_to(best_model, "first champion")
    champ_model = champ.tags.get("model", "")
    if champ.tags.get("windows") == best.windows:
        champ_mae = float(champ.tags.get("mae_all", "nan"))
        if best.mae < champ_mae and best_model != champ_model:
            return point_to(best_model, f"{best_model} MAE {best.mae:.3e} < champion {champ_model} {champ_mae:.3e}")
        return {"target": target, "promoted": False, "champion": champ_model, "version": champ.version,
                "mae": champ_mae, "reason": f"champion {champ_model} not beaten on the same windows"}
    if champ_model in logged and logged[champ_model].mae <= best.mae:
        return point_to(champ_model, f"windows moved; {champ_model} still best, refreshed")
    if champ_model not in logged:
        return point_to(best_model, f"champion family {champ_model} not evaluated on the new windows")
    return point_to(best_model, f"windows moved; {best_model} MAE {best.mae:.3e} < {champ_model} "
                                f"{logged[champ_model].mae:.3e} on the same new windows")
