"""Local emulators of the connector APIs and a generator of messy, overlapping customers with known truth. Never imported by the pipeline.

Public API: ``Sandbox`` (``server.py``), ``generate`` / ``SandboxData`` (``generator.py``).
"""

from .generator import SYSTEMS, SandboxData, generate
from .server import CREDENTIALS, Sandbox, credential

__all__ = ["CREDENTIALS", "SYSTEMS", "Sandbox", "SandboxData", "credential", "generate"]
