"""Tests, mirroring the rooms of custsync_pipeline."""
