"""Local emulators of the connector APIs and a generator of messy, overlapping customers with known truth. Never imported by the pipeline."""
