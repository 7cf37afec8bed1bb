"""The SQL model layer without Dagster: parse every ``dbt_like_sql/<layer>/<name>.sql`` and build them in order.

Why in core: the Dagster assets (:mod:`fundarb_pipelines.sql_models`) are one consumer; the backtest is another —
it rebuilds every model on a private replica holding only the raw rows known by its end, so nothing after that
instant can reach a feature, not even through floating-point summation order.

A model file is a ``SELECT`` preceded by a header of ``-- key: value`` lines:

* ``description`` — shown in the UI;
* ``unique_key: a, b`` — an asset check that no two rows share the key;
* ``not_null: a, b`` — an asset check per column;
* ``accepted_range: col lo hi`` (repeatable) — an asset check that every value is in [lo, hi];
* ``summary: <SELECT …>`` — a query whose result is attached as a markdown table (thresholds,
  coverage …).

A rule that more than one model (or Python) applies — quote ranking, bar length, rate staleness, σ — is a macro of
:mod:`fundarb_core.sql_macros`, never written out in a model; every connection that builds models installs them.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from fundarb_core.sql_macros import install_macros

SQL_DIR = Path(__file__).resolve().parent.parent / "dbt_like_sql"
_REF = re.compile(r"\{\{\s*ref\(\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*\)\s*\}\}")
_HEADER = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*)$")


@dataclass(frozen=True)
class SqlModel:
    """One parsed model file."""

    name: str
    layer: str
    path: Path
    sql: str  # the SELECT with refs resolved to table names
    deps: tuple[str, ...]
    description: str = ""
    unique_key: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    accepted_ranges: tuple[tuple[str, float, float], ...] = ()
    summary_sql: str | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:12]


def parse_model(path: Path) -> SqlModel:
    """Read one model file; refs become table names and dependencies."""
    text = path.read_text()
    headers: dict[str, list[str]] = {}
    body: list[str] = []
    in_header = True
    for line in text.splitlines():
        m = _HEADER.match(line.strip()) if in_header else None
        if m:
            headers.setdefault(m.group(1), []).append(m.group(2).strip())
            continue
        if line.strip() and not line.strip().startswith("--"):
            in_header = False
        body.append(line)
    raw_sql = "\n".join(body).strip().rstrip(";")
    deps = tuple(dict.fromkeys(_REF.findall(raw_sql)))

    def cols(key: str) -> tuple[str, ...]:
        return tuple(c.strip() for v in headers.get(key, []) for c in v.split(",") if c.strip())

    ranges = []
    for spec in headers.get("accepted_range", []):
        col, lo, hi = spec.split()
        ranges.append((col, float(lo), float(hi)))
    return SqlModel(
        name=path.stem,
        layer=path.parent.name,
        path=path,
        sql=_REF.sub(lambda m: m.group(1), raw_sql),
        deps=deps,
        description=" ".join(headers.get("description", [])),
        unique_key=cols("unique_key"),
        not_null=cols("not_null"),
        accepted_ranges=tuple(ranges),
        summary_sql=" ".join(headers["summary"]) if "summary" in headers else None,
        headers=headers,
    )


def load_models(sql_dir: Path = SQL_DIR) -> list[SqlModel]:
    """Every model under ``sql_dir``, sorted by layer then name."""
    models = [parse_model(p) for p in sorted(sql_dir.glob("*/*.sql"))]
    names = [m.name for m in models]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"two SQL models share a name (one model = one table): {sorted(dupes)}")
    return models


def topological(models: list[SqlModel]) -> list[SqlModel]:
    """Models in dependency order (refs to raw tables are outside the layer and ignored)."""
    from graphlib import TopologicalSorter

    by_name = {m.name: m for m in models}
    order = TopologicalSorter({m.name: [d for d in m.deps if d in by_name] for m in models}).static_order()
    return [by_name[n] for n in order]


def upstream(models: list[SqlModel], targets: Iterable[str]) -> list[SqlModel]:
    """The models ``targets`` need: themselves and everything they read, transitively."""
    by_name = {m.name: m for m in models}
    need: set[str] = set()
    todo = [t for t in targets if t in by_name]
    while todo:
        name = todo.pop()
        if name not in need:
            need.add(name)
            todo.extend(d for d in by_name[name].deps if d in by_name)
    return [m for m in models if m.name in need]


def build_all(conn: duckdb.DuckDBPyConnection, models: list[SqlModel] | None = None,
              targets: Iterable[str] | None = None) -> dict[str, int]:
    """Rebuild every model (or only what ``targets`` need) on ``conn`` in dependency order, outside Dagster
    (backtest replicas, benchmarks, research integrity tests); returns row counts.  Same SQL as the assets run,
    on the same rule macros (:func:`fundarb_core.sql_macros.install_macros`, installed first)."""
    counts = {}
    conn.execute("SET enable_progress_bar = false")
    install_macros(conn)
    chosen = models if models is not None else load_models()
    if targets is not None:
        chosen = upstream(chosen, targets)
    for model in topological(chosen):
        conn.execute(f"CREATE OR REPLACE TABLE {model.name} AS\n{model.sql}")
        counts[model.name] = int(conn.execute(f"SELECT count(*) FROM {model.name}").fetchall()[0][0])
    return counts
