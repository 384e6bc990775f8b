"""Dagster definitions of the extract area."""
