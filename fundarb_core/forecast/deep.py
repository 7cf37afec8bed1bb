"""Small sequence models (LSTM, Transformer) behind the ``Forecaster`` protocol.

Why sequence models at all: the tabular features already summarise the past (lags, rolling
means, EWMA), but a funding rate's *path* — how it reached its level, how the settlement
cycle of an 8 h venue lines up, how open interest moved — carries information a fixed set of
summaries can miss.  These models read the last ``seq_len`` hours of every feature of one
series and predict the *change* ``target - current``; persistence (``current``) stays the
anchor, so an untrained or badly trained net degrades to persistence rather than to nonsense.

Design choices, and why:

* **Strict causality.**  The window of a row at hour ``h`` is the series' rows at hours
  ``h - seq_len + 1 .. h`` laid on the hourly grid (missing hours are zero-filled and flagged
  by a *pad* channel).  ``predict`` builds windows from ``context`` (the rows known at the
  origin) plus ``rows`` themselves, so nothing later than ``h`` can reach the row at ``h``.
  Targets are never an input, so masked targets in ``context`` are irrelevant.
* **Robust per-feature standardisation fitted on the training rows only** (median / IQR,
  clipped to ±``clip``): funding features have fat tails (open interest in USD next to rates of
  1e-5), and a few outliers must not dominate the scaling.  NaN → 0 after scaling plus one
  missing-mask channel per feature, so "unknown" is distinguishable from "at the median".
* **Target scaling**: the change is divided by its (winsorised) standard deviation on the
  training rows, so the loss and the learning rate do not depend on the rate's units.
* **Heads**: one point head trained with Huber loss (robust to settlement jumps, close to
  MSE for typical errors) and three quantile heads (0.1, 0.5, 0.9) trained with pinball loss.
  The 0.1 / 0.9 heads give the central 80 % interval of ``base.INTERVAL_LEVEL``; they are then
  conformalised on the validation tail (CQR), so the interval's coverage is calibrated on data
  the weights were not fitted on, and is measurable in the walk-forward.
* **Early stopping on a time-ordered validation tail** (the last ``val_frac`` of training
  hours, with an embargo on training rows whose target is only known inside the tail), because
  a random split would let the net tune on the future of its own training rows.
* **Determinism**: seeds for numpy and torch (the global torch RNG is forked, so fitting does
  not disturb the caller's RNG), deterministic algorithms while fitting where the backend
  supports them, and a fixed thread count — two fits with the same seed on the same machine
  give the same predictions.
* **Graceful degradation**: with fewer than ``min_train_windows`` usable training windows no
  net is trained; the model predicts ``current`` plus the median training change, with the
  training changes' 10 / 90 % quantiles as interval (NaN when there is nothing to estimate from).
* **Persistence**: ``save`` / ``load`` write one ``torch.save`` payload of tensors and plain
  Python values (loadable with ``weights_only=True``); pickling goes through the same payload,
  so a model fitted on CUDA unpickles on a CPU-only machine (e.g. for an MLflow pyfunc).

The device is CUDA when available, else CPU; everything runs on CPU.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from fundarb_core.forecast.base import INTERVAL_LEVEL, PRED_COLUMNS

HOUR_NS = 3_600_000_000_000
QUANTILES = (0.1, 0.5, 0.9)  # heads after the point head; 0.1 / 0.9 bound the 80 % interval
N_OUT = 1 + len(QUANTILES)
_EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# helpers: scaling, dense per-series layout, runtime context
# ----------------------------------------------------------------------------------------------


def _hours_ns(values: pd.Series) -> np.ndarray:
    """``hour`` column as int64 nanoseconds (naive UTC; tz-aware input is converted to UTC)."""
    s = pd.to_datetime(values)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy().astype("datetime64[ns]").astype(np.int64)


def _numeric(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Columns as a float64 matrix, NaN for missing (bools and nullable dtypes included)."""
    if not cols:
        return np.zeros((len(frame), 0))
    return frame[cols].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _robust_center_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and IQR/1.349 (fallback: std, then 1) over finite values.

    IQR rather than std because a handful of extreme funding prints would otherwise squash
    every ordinary value to ~0; the fallbacks cover near-constant columns (IQR 0) and columns
    that are entirely NaN in the training slice.
    """
    n_cols = x.shape[1]
    center = np.zeros(n_cols)
    scale = np.ones(n_cols)
    for j in range(n_cols):
        v = x[:, j]
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
        s = (q75 - q25) / 1.349
        if not s > _EPS:
            s = float(np.std(v))
        if not s > _EPS:
            s = 1.0
        center[j], scale[j] = med, s
    return center, scale


def _target_scale(delta: np.ndarray) -> float:
    """Std of the change winsorised at the 1 / 99 % quantiles (fallbacks: MAD, then 1).

    Std, not IQR: hourly changes are mostly exactly 0 on 8 h venues (IQR 0) and the point head
    is trained with a squared-type loss, whose natural unit is the standard deviation.
    """
    d = delta[np.isfinite(delta)]
    if d.size < 2:
        return 1.0
    lo, hi = np.quantile(d, [0.01, 0.99])
    s = float(np.std(np.clip(d, lo, hi)))
    if not s > _EPS:
        s = float(1.4826 * np.median(np.abs(d - np.median(d))))
    if not s > _EPS:
        s = float(np.std(d))
    return s if s > _EPS else 1.0


class _Layout:
    """Rows of many series laid out on one dense hourly grid, with ``seq_len - 1`` pad rows
    in front of every series, so the window ending at any row is one contiguous slice.

    Window of a row at grid position ``k`` of its series = dense rows ``start .. start+L-1``
    with ``start = offset[series] + k``: exactly the hours ``h-L+1 .. h`` (causal by
    construction), missing hours being all-zero rows whose pad channel is 0.
    """

    def __init__(self, series: pd.Series, hours_ns: np.ndarray, seq_len: int) -> None:
        codes, uniques = pd.factorize(series, sort=False)
        self.uniques = pd.Index(uniques)
        n_series = len(uniques)
        hmin = np.full(n_series, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(hmin, codes, hours_ns)
        k = (hours_ns - hmin[codes]) // HOUR_NS
        kmax = np.zeros(n_series, dtype=np.int64)
        np.maximum.at(kmax, codes, k)
        lengths = kmax + 1 + (seq_len - 1)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.total = int(lengths.sum())
        self.hmin = hmin
        self.seq_len = seq_len
        self.row_pos = self.offsets[codes] + (seq_len - 1) + k  # dense row of each input row

    def starts(self, series: pd.Series, hours_ns: np.ndarray) -> np.ndarray:
        """Window start (dense row) for query rows; every query series must be in the layout."""
        codes = self.uniques.get_indexer(series)
        if (codes < 0).any():
            raise ValueError("query rows reference series absent from the layout")
        k = (hours_ns - self.hmin[codes]) // HOUR_NS
        if (k < 0).any():
            raise ValueError("query rows earlier than their series' first laid-out hour")
        return self.offsets[codes] + k


@contextmanager
def _runtime(seed: int | None, num_threads: int, deterministic: bool) -> Iterator[None]:
    """Seeded, thread-pinned, deterministic torch section that restores the caller's state.

    Fitting must not leak global side effects into whatever else runs in the process (the
    walk-forward, LightGBM, Dagster ops), hence the RNG fork and the restore of thread count
    and deterministic mode.
    """
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            torch.set_num_threads(max(1, num_threads))
            if deterministic:
                if torch.cuda.is_available():
                    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True, warn_only=True)
            if seed is not None:
                torch.manual_seed(seed)
            yield
        finally:
            torch.set_num_threads(prev_threads)
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def _available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _auto_device(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------------


class _LstmNet(nn.Module):
    """LSTM over the window; the head sees the last hidden state *and* the last raw input
    (a skip connection), so the net can fall back to a near-linear model of the current
    features when the sequence adds little."""

    def __init__(self, n_in: int, hidden: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Linear(hidden + n_in, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, N_OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(torch.cat([out[:, -1], x[:, -1]], dim=-1))


def _sinusoidal(seq_len: int, d_model: int) -> torch.Tensor:
    """Fixed sinusoidal positional encoding (Vaswani et al.); position 0 = oldest hour."""
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10_000.0) / d_model))
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return pe


class _TransformerNet(nn.Module):
    """Pre-norm Transformer encoder over the window, cut into patches of ``patch_len`` hours.

    Patches (one token per ``patch_len`` hours, as in PatchTST) rather than one token per hour,
    because attention over 48 hourly tokens of head size 8 is ~10x slower than the LSTM on CPU;
    4-hour patches cut the cost ~4x while an 8 h settlement cycle still spans two tokens.  The
    last patch ends at the row's own hour, so causality is unchanged.  Patches made only of
    padded hours are masked out of attention (the last patch, holding the row itself, never is),
    and the head reads the last token plus the last raw input (skip connection, as in the LSTM).
    """

    def __init__(self, n_in: int, d_model: int, nhead: int, num_layers: int, dropout: float, seq_len: int,
                 patch_len: int) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.n_tokens = -(-seq_len // patch_len)
        self.proj = nn.Linear(n_in * patch_len, d_model)
        self.register_buffer("pos", _sinusoidal(self.n_tokens, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2 * d_model, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Linear(d_model + n_in, d_model), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(d_model, N_OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        front = self.n_tokens * self.patch_len - length
        xp = nn.functional.pad(x, (0, 0, front, 0)) if front else x  # zero rows = padded hours
        tokens = xp.reshape(b, self.n_tokens, self.patch_len * c)
        pad = xp[..., -1].reshape(b, self.n_tokens, self.patch_len).amax(dim=-1) < 0.5  # pad channel: 1 = exists
        h = self.proj(tokens) + self.pos
        h = self.encoder(h, src_key_padding_mask=pad)
        return self.head(torch.cat([self.norm(h[:, -1]), x[:, -1]], dim=-1))


def _loss(out: torch.Tensor, y: torch.Tensor, huber_delta: float) -> torch.Tensor:
    """Huber on the point head + pinball on each quantile head (all in scaled units)."""
    loss = nn.functional.huber_loss(out[:, 0], y, delta=huber_delta)
    for i, q in enumerate(QUANTILES, start=1):
        err = y - out[:, i]
        loss = loss + torch.maximum(q * err, (q - 1.0) * err).mean()
    return loss


# ----------------------------------------------------------------------------------------------
# forecasters
# ----------------------------------------------------------------------------------------------


class SequenceForecaster:
    """Shared machinery of the sequence forecasters; subclasses only build the network.

    Parameters (all keyword, stored in ``params`` so ``save`` / ``load`` can rebuild the model):

    * ``seq_len`` — hours of history per window (default 48: two days, six 8 h settlements);
    * ``hidden`` — LSTM hidden size / Transformer ``d_model``;
    * ``num_layers``, ``dropout`` — network depth and regularisation;
    * ``epochs``, ``batch_size``, ``lr``, ``weight_decay`` — Adam training;
    * ``max_train_windows`` — random subsample of training windows per fit (speed: a refit in a
      walk-forward must stay cheap on CPU); ``max_val_windows`` likewise for the validation tail;
    * ``val_frac``, ``patience`` — time-ordered validation tail and early-stopping patience;
    * ``min_train_windows`` — below this the net is not trained (fallback, see module doc);
    * ``huber_delta``, ``clip`` — loss robustness and clipping of scaled inputs / targets;
    * ``calibrate`` — conformalise the 80 % interval on the validation tail;
    * ``seed``, ``num_threads`` (default: all CPUs available to the process), ``device``
      (default: CUDA if available, else CPU).

    After ``fit``: ``device``, ``epoch_seconds`` (wall time of each epoch), ``history`` (train /
    validation loss per epoch), ``best_epoch``, ``n_train_windows``, ``n_val_windows``,
    ``fallback`` (True when no net was trained), ``val_coverage`` (interval coverage on the
    validation tail after calibration, NaN without one).
    """

    name: str = "sequence"
    _defaults: ClassVar[dict[str, Any]] = {
        "seq_len": 48, "hidden": 32, "num_layers": 1, "dropout": 0.1, "epochs": 8, "batch_size": 256,
        "lr": 2e-3, "weight_decay": 1e-5, "max_train_windows": 20_000, "max_val_windows": 5_000,
        "val_frac": 0.2, "patience": 2, "min_train_windows": 64, "huber_delta": 1.0, "clip": 10.0,
        "calibrate": True, "seed": 0, "num_threads": None, "device": None,
    }

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self._defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown parameters {sorted(unknown)}")
        self.params: dict[str, Any] = {**self._defaults, **params}
        if int(self.params["seq_len"]) < 1:
            raise ValueError("seq_len must be >= 1")
        self.device: torch.device = _auto_device(self.params["device"])
        self.feature_cols: tuple[str, ...] = ()
        self.module: nn.Module | None = None
        self.epoch_seconds: list[float] = []
        self.history: list[dict[str, float]] = []
        self.best_epoch: int = -1
        self.n_train_windows: int = 0
        self.n_val_windows: int = 0
        self.fallback: bool = True
        self.val_coverage: float = float("nan")
        # fitted statistics (scaled units unless noted)
        self._center = np.zeros(0)
        self._scale = np.ones(0)
        self._y_scale = 1.0
        self._interval_adj = 0.0
        self._current_fill = 0.0  # raw units: base level where ``current`` is NaN
        self._fallback_q = (float("nan"),) * N_OUT  # (point, q10, q50, q90) change, raw units

    # -- network -------------------------------------------------------------------------------

    def _build_module(self, n_in: int) -> nn.Module:
        raise NotImplementedError

    @property
    def _threads(self) -> int:
        n = self.params["num_threads"]
        return int(n) if n else _available_threads()

    @property
    def _input_cols(self) -> list[str]:
        """Feature columns plus ``current`` (the persistence level is known at ``hour``)."""
        return [*self.feature_cols, "current"]

    # -- inputs --------------------------------------------------------------------------------

    def _dense(self, frame: pd.DataFrame) -> tuple[_Layout, torch.Tensor]:
        """Scaled features + missing masks + pad channel on the dense hourly grid."""
        hours = _hours_ns(frame["hour"])
        layout = _Layout(frame["series_id"].astype(str), hours, int(self.params["seq_len"]))
        raw = _numeric(frame, self._input_cols)
        z = (raw - self._center) / self._scale
        clip = float(self.params["clip"])
        missing = ~np.isfinite(z)
        z = np.clip(np.where(missing, 0.0, z), -clip, clip)
        n_feat = z.shape[1]
        dense = np.zeros((layout.total, 2 * n_feat + 1), dtype=np.float32)
        dense[layout.row_pos, :n_feat] = z
        dense[layout.row_pos, n_feat:2 * n_feat] = missing
        dense[layout.row_pos, -1] = 1.0
        return layout, torch.from_numpy(dense)

    @staticmethod
    def _windows(dense: torch.Tensor, starts: torch.Tensor, seq_len: int) -> torch.Tensor:
        return dense[starts[:, None] + torch.arange(seq_len, device=dense.device)[None, :]]

    # -- fit -----------------------------------------------------------------------------------

    def fit(self, train: pd.DataFrame, feature_cols: tuple[str, ...]) -> SequenceForecaster:
        """Fit on rows whose target is known; never raises on small or ragged inputs."""
        p = self.params
        self.feature_cols = tuple(feature_cols)
        self.module, self.epoch_seconds, self.history = None, [], []
        self.best_epoch, self.n_train_windows, self.n_val_windows = -1, 0, 0
        self.fallback, self.val_coverage, self._interval_adj = True, float("nan"), 0.0
        train = train.reset_index(drop=True)
        raw = _numeric(train, self._input_cols)
        self._center, self._scale = _robust_center_scale(raw)
        target = _numeric(train, ["target"])[:, 0]
        current = raw[:, -1]
        finite_target = target[np.isfinite(target)]
        self._current_fill = float(np.median(finite_target)) if finite_target.size else 0.0
        delta = target - current
        usable = np.flatnonzero(np.isfinite(delta))
        self._y_scale = _target_scale(delta[usable])
        if usable.size:
            d = delta[usable]
            q = np.quantile(d, QUANTILES) if usable.size >= 2 else np.full(len(QUANTILES), np.nan)
            self._fallback_q = (float(np.median(d)), *map(float, q))
        else:
            self._fallback_q = (0.0, float("nan"), 0.0, float("nan"))
        if usable.size < int(p["min_train_windows"]):
            return self  # fallback: persistence + median change

        rng = np.random.default_rng(p["seed"])
        hours = _hours_ns(train["hour"])
        tr_idx, va_idx = self._split(train, hours, usable)
        if tr_idx.size > int(p["max_train_windows"]):
            tr_idx = np.sort(rng.choice(tr_idx, int(p["max_train_windows"]), replace=False))
        if va_idx.size > int(p["max_val_windows"]):
            va_idx = np.sort(rng.choice(va_idx, int(p["max_val_windows"]), replace=False))
        self.n_train_windows, self.n_val_windows = int(tr_idx.size), int(va_idx.size)

        layout, dense = self._dense(train)
        starts = layout.row_pos - (layout.seq_len - 1)
        clip = float(p["clip"])
        y_all = np.clip(delta / self._y_scale, -clip * 2, clip * 2).astype(np.float32)
        with _runtime(int(p["seed"]), self._threads, deterministic=True):
            self._train_loop(dense, starts, y_all, tr_idx, va_idx, rng)
        self.fallback = False
        return self

    def _split(self, train: pd.DataFrame, hours: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Time-ordered tail for validation, with an embargo on training rows whose target is
        only known inside the tail (their label overlaps the validation period)."""
        p = self.params
        uniq = np.unique(hours[usable])
        n_val_hours = int(len(uniq) * float(p["val_frac"]))
        if n_val_hours < 1 or float(p["val_frac"]) <= 0:
            return usable, usable[:0]
        cutoff = uniq[len(uniq) - n_val_hours]
        va = usable[hours[usable] >= cutoff]
        tr = usable[hours[usable] < cutoff]
        if "target_known_at" in train.columns:
            known = _hours_ns(train["target_known_at"].fillna(train["hour"]))[tr]
            tr = tr[known <= cutoff]
        if tr.size < int(p["min_train_windows"]) or va.size < max(10, int(p["min_train_windows"]) // 4):
            return usable, usable[:0]  # too small to split: train on all, no early stop, no CQR
        return tr, va

    def _train_loop(self, dense: torch.Tensor, starts: np.ndarray, y_all: np.ndarray, tr_idx: np.ndarray,
                    va_idx: np.ndarray, rng: np.random.Generator) -> None:
        p = self.params
        dev, seq_len = self.device, int(p["seq_len"])
        dense = dense.to(dev)
        starts_t = torch.from_numpy(starts).to(dev)
        y_t = torch.from_numpy(y_all).to(dev)
        module = self._build_module(dense.shape[1]).to(dev)
        opt = torch.optim.Adam(module.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
        bs, delta_h = int(p["batch_size"]), float(p["huber_delta"])
        best_loss, best_state, bad = float("inf"), None, 0
        for epoch in range(int(p["epochs"])):
            t0 = time.perf_counter()
            module.train()
            order = rng.permutation(tr_idx)
            total, n = 0.0, 0
            for i in range(0, order.size, bs):
                idx = torch.from_numpy(order[i:i + bs]).to(dev)
                out = module(self._windows(dense, starts_t[idx], seq_len))
                loss = _loss(out, y_t[idx], delta_h)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(module.parameters(), 1.0)
                opt.step()
                total += float(loss.detach()) * idx.numel()
                n += idx.numel()
            rec = {"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": float("nan")}
            if va_idx.size:
                out = self._forward(module, dense, starts_t[torch.from_numpy(va_idx).to(dev)])
                rec["val_loss"] = float(_loss(out, y_t[torch.from_numpy(va_idx).to(dev)], delta_h))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            self.epoch_seconds.append(time.perf_counter() - t0)
            self.history.append(rec)
            score = rec["val_loss"] if va_idx.size else rec["train_loss"]
            if score < best_loss - 1e-9:
                best_loss, bad, self.best_epoch = score, 0, epoch
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                bad += 1
                if va_idx.size and bad >= int(p["patience"]):
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        self.module = module
        if va_idx.size:
            out = self._forward(module, dense, starts_t[torch.from_numpy(va_idx).to(dev)]).cpu().numpy()
            self._calibrate(out, y_all[va_idx])

    def _calibrate(self, out: np.ndarray, y: np.ndarray) -> None:
        """Conformalised quantile regression (Romano et al. 2019) on the validation tail:
        widen (or narrow) the 0.1 / 0.9 heads by the conformity score's quantile."""
        lo, hi = self._interval(out)
        if self.params["calibrate"]:
            score = np.maximum(lo - y, y - hi)
            n = score.size
            level = min(1.0, INTERVAL_LEVEL * (1 + 1 / n))
            self._interval_adj = float(np.quantile(score, level, method="higher"))
        lo, hi = self._interval(out)
        self.val_coverage = float(np.mean((y >= lo) & (y <= hi)))

    def _interval(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """lo / hi of the change in scaled units: sorted quantile heads, CQR-adjusted, and
        widened to contain the point forecast (so ``lo <= pred <= hi`` always)."""
        qs = np.sort(out[:, 1:], axis=1)
        lo, hi = qs[:, 0] - self._interval_adj, qs[:, -1] + self._interval_adj
        mid = (lo + hi) / 2
        lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)  # a negative adjustment never crosses
        return np.minimum(lo, out[:, 0]), np.maximum(hi, out[:, 0])

    def _forward(self, module: nn.Module, dense: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Eval-mode forward in chunks (bounded memory for large prediction sets)."""
        module.eval()
        seq_len = int(self.params["seq_len"])
        outs = []
        with torch.no_grad():
            for i in range(0, starts.numel(), 4096):
                outs.append(module(self._windows(dense, starts[i:i + 4096], seq_len)))
        return torch.cat(outs) if outs else torch.zeros((0, N_OUT), device=dense.device)

    # -- predict -------------------------------------------------------------------------------

    def predict(self, rows: pd.DataFrame, context: pd.DataFrame) -> pd.DataFrame:
        """Forecast ``rows``; windows come from ``context`` ∪ ``rows``, restricted per row to
        hours <= the row's hour, so later context cannot leak into an earlier row."""
        result = pd.DataFrame(index=rows.index, columns=list(PRED_COLUMNS), dtype="float64")
        if rows.empty:
            return result
        current = _numeric(rows, ["current"])[:, 0]
        base = np.where(np.isfinite(current), current, self._current_fill)
        if self.module is None:
            point, q10, _, q90 = self._fallback_q
            result["pred"] = base + point
            result["lo"] = base + min(q10, point)
            result["hi"] = base + max(q90, point)
            return result
        seq_len = int(self.params["seq_len"])
        row_hours = _hours_ns(rows["hour"])
        frames = [rows]
        if context is not None and not context.empty:
            first = int(row_hours.min()) - (seq_len - 1) * HOUR_NS  # older context cannot reach any window
            ctx = context[_hours_ns(context["hour"]) >= first]
            frames = [ctx, rows]  # context first: its copy of a row wins the de-duplication
        cols = ["series_id", "hour", *self._input_cols]
        both = pd.concat([f[cols] for f in frames], ignore_index=True)
        both = both.drop_duplicates(["series_id", "hour"], keep="first").reset_index(drop=True)
        layout, dense = self._dense(both)
        starts = layout.starts(rows["series_id"].astype(str), row_hours)
        with _runtime(None, self._threads, deterministic=False):
            dense = dense.to(self.device)
            out = self._forward(self.module, dense, torch.from_numpy(starts).to(self.device)).cpu().numpy()
        out = out.astype(np.float64)
        lo, hi = self._interval(out)
        result["pred"] = base + self._y_scale * out[:, 0]
        result["lo"] = base + self._y_scale * lo
        result["hi"] = base + self._y_scale * hi
        return result

    # -- persistence ---------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted model, as tensors and plain Python values."""
        params = dict(self.params)
        return {
            "class": type(self).__name__,
            "params": params,
            "feature_cols": list(self.feature_cols),
            "center": torch.from_numpy(np.asarray(self._center, dtype=np.float64)),
            "scale": torch.from_numpy(np.asarray(self._scale, dtype=np.float64)),
            "y_scale": float(self._y_scale),
            "interval_adj": float(self._interval_adj),
            "current_fill": float(self._current_fill),
            "fallback_q": [float(v) for v in self._fallback_q],
            "state_dict": None if self.module is None
            else {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "n_in": None if self.module is None else 2 * len(self._input_cols) + 1,
            "diagnostics": {
                "epoch_seconds": list(self.epoch_seconds), "history": [dict(h) for h in self.history],
                "best_epoch": self.best_epoch, "n_train_windows": self.n_train_windows,
                "n_val_windows": self.n_val_windows, "fallback": self.fallback, "val_coverage": self.val_coverage,
            },
        }

    def _restore(self, payload: dict[str, Any], device: str | None = None) -> None:
        params = dict(payload["params"])
        if device is not None:
            params["device"] = device
        elif params.get("device") is not None and torch.device(params["device"]).type == "cuda" \
                and not torch.cuda.is_available():
            params["device"] = None  # fitted on CUDA, loaded on a CPU-only machine
        type(self).__init__(self, **params)
        self.feature_cols = tuple(payload["feature_cols"])
        self._center = payload["center"].numpy()
        self._scale = payload["scale"].numpy()
        self._y_scale = payload["y_scale"]
        self._interval_adj = payload["interval_adj"]
        self._current_fill = payload["current_fill"]
        self._fallback_q = tuple(payload["fallback_q"])
        diag = payload["diagnostics"]
        self.epoch_seconds, self.history = list(diag["epoch_seconds"]), list(diag["history"])
        self.best_epoch, self.n_train_windows = diag["best_epoch"], diag["n_train_windows"]
        self.n_val_windows, self.fallback, self.val_coverage = diag["n_val_windows"], diag["fallback"], \
            diag["val_coverage"]
        if payload["state_dict"] is not None:
            module = self._build_module(int(payload["n_in"]))
            module.load_state_dict(payload["state_dict"])
            self.module = module.to(self.device).eval()

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to ``path`` (one ``torch.save`` file, weights-only loadable)."""
        path = Path(path)
        torch.save(self._payload(), path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> SequenceForecaster:
        """Read a model written by ``save``; ``cls`` may be the base class or the saved class."""
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        target = _REGISTRY[payload["class"]]
        if not issubclass(target, cls):
            raise TypeError(f"{path} holds a {payload['class']}, not a {cls.__name__}")
        obj = target.__new__(target)
        obj._restore(payload, device)
        return obj

    def __getstate__(self) -> dict[str, Any]:
        return self._payload()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._restore(state)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.params.items() if v != self._defaults.get(k)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class LstmForecaster(SequenceForecaster):
    """LSTM over the last ``seq_len`` hours of a series' features (default 1 layer, 32 units)."""

    name = "lstm"

    def _build_module(self, n_in: int) -> nn.Module:
        p = self.params
        return _LstmNet(n_in, int(p["hidden"]), int(p["num_layers"]), float(p["dropout"]))


class TransformerForecaster(SequenceForecaster):
    """Transformer encoder (sinusoidal positions, padded patches masked) over the last ``seq_len``
    hours in ``patch_len``-hour tokens; default ``d_model`` = ``hidden`` = 32, 4 heads, 2 layers,
    4-hour patches (``patch_len=1``: one token per hour)."""

    name = "transformer"
    _defaults: ClassVar[dict[str, Any]] = {**SequenceForecaster._defaults, "num_layers": 2, "nhead": 4, "patch_len": 4}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if int(self.params["hidden"]) % int(self.params["nhead"]) or int(self.params["hidden"]) % 2:
            raise ValueError("hidden must be even and divisible by nhead")
        if int(self.params["patch_len"]) < 1:
            raise ValueError("patch_len must be >= 1")

    def _build_module(self, n_in: int) -> nn.Module:
        p = self.params
        return _TransformerNet(n_in, int(p["hidden"]), int(p["nhead"]), int(p["num_layers"]), float(p["dropout"]),
                               int(p["seq_len"]), int(p["patch_len"]))


_REGISTRY: dict[str, type[SequenceForecaster]] = {
    c.__name__: c for c in (SequenceForecaster, LstmForecaster, TransformerForecaster)
}

__all__ = ["QUANTILES", "LstmForecaster", "SequenceForecaster", "TransformerForecaster"]
