"""Connectors: one module per system, the shared HTTP layer and the generic REST and file connectors."""
