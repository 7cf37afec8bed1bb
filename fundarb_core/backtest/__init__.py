"""Backtests of the keeper and its baselines: simulation, metrics and report charts."""
