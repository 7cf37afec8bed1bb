"""A convex combination of forecasters, its weights learnt on held-out (validation) origins only.

Weights fitted on the members' in-sample predictions would reward overfitting (a deep tree model
always "explains" its own training rows best); so ``fit`` holds out the last ~25 % of the training
origins, fits copies of the members on the earlier part — with the same ``target_known_at`` rule as
the walk-forward, so the validation is honest — predicts the held-out rows the way the walk-forward
would (one block, context masked at the validation origin), learns non-negative weights summing to
1 by NNLS on those predictions, and only then refits the members on the whole training slice.

Sequence members: during validation their ``context`` is the training slice itself (``fit`` sees
nothing else), targets masked as of the validation origin; it holds only rows with a known target,
so a member must tolerate missing hours in its history.  At prediction time they get the
walk-forward's context unchanged.  Weights minimise squared error (NNLS); a member whose prediction
is NaN on a row is left out of that row and the others' weights are renormalised.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from fundarb_core.forecast.base import PRED_COLUMNS, Forecaster
from fundarb_core.forecast.walk_forward import masked_context

_MIN_FIT_ROWS = 50


def _convex_weights(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative least squares weights, normalised to sum 1 (equal weights if NNLS gives all zeros)."""
    k = preds.shape[1]
    ok = np.isfinite(preds).all(axis=1) & np.isfinite(target)
    if ok.sum() < max(k, 10):
        return np.full(k, 1.0 / k)
    p, y = preds[ok], target[ok]
    scale = float(np.std(y)) or 1.0  # funding is ~1e-5: rescale so NNLS tolerances are meaningful
    w, _ = nnls(p / scale, y / scale)
    total = w.sum()
    return w / total if total > 0 else np.full(k, 1.0 / k)


def _weighted(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted mean ignoring NaN members (their weight is redistributed to the others)."""
    ok = np.isfinite(values)
    w = np.where(ok, weights[None, :], 0.0)
    total = w.sum(axis=1)
    num = (np.where(ok, values, 0.0) * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, num / np.where(total > 0, total, 1.0), np.nan)


class Ensemble:
    """Weighted mean of ``members`` (any ``Forecaster``, sequence models included)."""

    def __init__(self, members: Sequence[Forecaster], validation_share: float = 0.25, name: str = "ensemble") -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.validation_share = validation_share
        self.name = name
        self.weights = np.full(len(self.members), 1.0 / len(self.members))
        self.validation_origin: pd.Timestamp | None = None

    def fit(self, train: pd.DataFrame, feature_cols: tuple[str, ...]) -> Ensemble:
        """Learn the weights on the last ``validation_share`` of the origins, then refit every member on all."""
        train = train.sort_values("hour", kind="stable")
        hours = np.unique(train["hour"].to_numpy(dtype="datetime64[us]"))
        n_val = round(len(hours) * self.validation_share)
        self.weights = np.full(len(self.members), 1.0 / len(self.members))
        if 0 < n_val < len(hours):
            tv = hours[len(hours) - n_val]
            known = train["target_known_at"].to_numpy(dtype="datetime64[us]")
            h = train["hour"].to_numpy(dtype="datetime64[us]")
            early = train[(h < tv) & (known <= tv)]
            val = train[h >= tv]
            if len(early) >= _MIN_FIT_ROWS and len(val) >= _MIN_FIT_ROWS:
                self.validation_origin = pd.Timestamp(tv)
                # context = the training rows themselves, targets hidden as of the validation origin
                ctx = masked_context(train, tv, hours[-1])
                preds = np.column_stack(
                    [
                        copy.deepcopy(m).fit(early, feature_cols).predict(val, ctx)["pred"].reindex(val.index)
                        for m in self.members
                    ]
                )
                self.weights = _convex_weights(preds, val["target"].to_numpy(dtype="float64", na_value=np.nan))
        for m in self.members:
            m.fit(train, feature_cols)
        return self

    def predict(self, rows: pd.DataFrame, context: pd.DataFrame) -> pd.DataFrame:
        """Weighted mean of the members' point forecasts and of their interval ends."""
        outs = [m.predict(rows, context).reindex(rows.index) for m in self.members]
        res = {
            c: _weighted(np.column_stack([o[c].to_numpy(dtype="float64", na_value=np.nan) for o in outs]), self.weights)
            for c in PRED_COLUMNS
        }
        return pd.DataFrame(res, index=rows.index)

    def weights_by_member(self) -> dict[str, float]:
        """The learnt weights keyed by member name (for logging)."""
        return {getattr(m, "name", type(m).__name__): float(w) for m, w in zip(self.members, self.weights, strict=True)}
