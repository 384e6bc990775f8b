"""Dagster definitions of the identity area."""
