"""Dagster definitions of fundarb: assets, checks, jobs, schedules, sensors, resources.

The project opts into two beta Dagster parameters on purpose (single-run backfills of the raw assets, pools);
their BetaWarning / PreviewWarning would print dozens of times whenever the code location loads (``dagster dev``,
every run worker), so they are silenced here, once, for this package's definitions only.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
