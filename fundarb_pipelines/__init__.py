"""Dagster definitions of fundarb: assets, checks, jobs, schedules, sensors, resources."""
