"""The one interface every forecaster implements, and the panel it works on.

A *panel* is a long DataFrame, one row per (series, hour), built from the SQL feature tables:

* ``series_id`` (str) — ``venue|asset`` for the settlement target, ``asset|short|long`` for the
  spread target;
* ``hour`` (naive UTC ``datetime64``) — the instant the row's features are known (as of);
* feature columns (floats, NaN allowed) — listed in ``Panel.feature_cols``;
* ``current`` — the latest *observed* value of the target quantity at ``hour`` (persistence);
* ``target`` — the value to predict (NaN where not yet known);
* ``target_known_at`` — when ``target`` becomes known; a model fitted at origin T may only use
  rows with ``target_known_at <= T`` (the walk-forward enforces it, the leakage test checks it);
* ``venue_type`` — ``"1h"`` or ``"8h"`` (hourly vs interval venues; pairs: ``"mixed"`` where
  the legs differ), used to break metrics down.

Models are fitted on a training slice and predict rows at one origin; sequence models get the
history up to the origin in ``context`` and build their own windows from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pandas as pd

PRED_COLUMNS = ("pred", "lo", "hi")  # lo/hi: the model's central 80 % interval, NaN if it has none
INTERVAL_LEVEL = 0.8


@dataclass(frozen=True)
class Panel:
    """A panel plus the names of its feature columns and of its target."""

    frame: pd.DataFrame
    feature_cols: tuple[str, ...]
    target_name: str  # "next_settlement" | "spread_24h"


@runtime_checkable
class Forecaster(Protocol):
    """fit on past rows, predict rows at an origin.

    ``fit(train, feature_cols)`` — ``train`` holds only rows whose target is known by the origin.
    ``predict(rows, context)`` — ``rows`` are the rows at the origin to forecast; ``context`` is
    every panel row with ``hour <= origin`` (features only; targets there are masked to NaN where
    not yet known), for models that need sequences.  Returns a frame indexed like ``rows`` with
    ``PRED_COLUMNS``.
    """

    name: str

    def fit(self, train: pd.DataFrame, feature_cols: tuple[str, ...]) -> Forecaster: ...

    def predict(self, rows: pd.DataFrame, context: pd.DataFrame) -> pd.DataFrame: ...
