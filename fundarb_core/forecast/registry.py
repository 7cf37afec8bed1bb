"""The six forecasters the project compares, built by name with one settings object.

Walk-forward refits a fresh model per block, so models are created through factories; the deep
models refit less often (``deep_refit_every``) because a CPU fit costs seconds, not milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from fundarb_core.forecast.base import Forecaster
from fundarb_core.forecast.baselines import Ewma, Persistence
from fundarb_core.forecast.deep import LstmForecaster, TransformerForecaster
from fundarb_core.forecast.ensemble import Ensemble
from fundarb_core.forecast.gbm import LightGbm

MODEL_NAMES = ("persistence", "ewma", "lightgbm", "lstm", "transformer", "ensemble")
TARGET_NAMES = ("next_settlement", "spread_24h")


@dataclass(frozen=True)
class ForecastSettings:
    """Everything a walk-forward evaluation depends on; logged as MLflow params."""

    train_window_hours: int = 168  # spec §8: 168 h training window
    expanding: bool = False
    step_hours: int = 1
    refit_every: int = 24
    deep_refit_every: int = 168
    deep_epochs: int = 4
    deep_max_train_windows: int = 8_000
    gbm_trees: int = 200
    seed: int = 0

    def params(self) -> dict[str, object]:
        return asdict(self)


def model_factory(name: str, settings: ForecastSettings) -> Callable[[], Forecaster]:
    """A zero-argument factory of a fresh, unfitted model called ``name``."""
    deep = {"epochs": settings.deep_epochs, "max_train_windows": settings.deep_max_train_windows,
            "seed": settings.seed, "num_threads": 1}  # small nets: 1 thread is 7-13x faster on a busy 2-core box
    factories: dict[str, Callable[[], Forecaster]] = {
        "persistence": Persistence,
        "ewma": Ewma,
        "lightgbm": lambda: LightGbm(n_estimators=settings.gbm_trees, seed=settings.seed),
        "lstm": lambda: LstmForecaster(**deep),
        "transformer": lambda: TransformerForecaster(**deep),
        # the ensemble's members are the cheap-to-refit learners; its weights are learnt on a
        # validation tail of each training slice only (ensemble.py)
        "ensemble": lambda: Ensemble([Persistence(), Ewma(),
                                      LightGbm(n_estimators=settings.gbm_trees, seed=settings.seed)]),
    }
    if name not in factories:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return factories[name]


def refit_every(name: str, settings: ForecastSettings) -> int:
    return settings.deep_refit_every if name in ("lstm", "transformer") else settings.refit_every
