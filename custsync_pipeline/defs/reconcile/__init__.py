"""Dagster definitions of the reconcile area."""
