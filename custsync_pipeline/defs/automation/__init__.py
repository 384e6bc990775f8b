"""Dagster definitions of the automation area: jobs, schedules and sensors."""
