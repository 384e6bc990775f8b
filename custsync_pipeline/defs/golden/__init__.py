"""Dagster definitions of the golden area."""
