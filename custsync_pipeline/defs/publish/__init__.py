"""Dagster definitions of the publish area."""
