"""The domain core: pure functions on pandas DataFrames (no Dagster, no I/O)."""
