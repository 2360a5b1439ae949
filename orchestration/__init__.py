"""Dagster wiring for AMPere: assets, checks, resources, jobs, schedules, sensors."""
