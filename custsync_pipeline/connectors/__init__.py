"""Connectors: one module per system, the shared HTTP layer and the generic REST and file connectors.

``build_connector(name, cfg, env)`` picks the module by ``cfg.type`` from
``REGISTRY``; a new system is one module plus one registry line (or, for a
plain REST API, only a config entry of type ``rest``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import (
    Connector,
    ReadResult,
    ReadStats,
    WriteOp,
    WriteResult,
)
from custsync_pipeline.connectors.http import (
    ConnectorError,
    ConnectorUnavailableError,
    CredentialError,
    QuotaExceededError,
)

# cfg.type -> "module:Class", imported only when used
REGISTRY: dict[str, str] = {
    "salesforce": "custsync_pipeline.connectors.salesforce:SalesforceConnector",
    "voucherify": "custsync_pipeline.connectors.voucherify:VoucherifyConnector",
    "voyado": "custsync_pipeline.connectors.voyado:VoyadoConnector",
    "exact": "custsync_pipeline.connectors.exact:ExactConnector",
    "icomm": "custsync_pipeline.connectors.icomm:IcommConnector",
    "shop": "custsync_pipeline.connectors.shop:ShopConnector",
    "rest": "custsync_pipeline.connectors.rest:RestConnector",
    "file": "custsync_pipeline.connectors.file:FileConnector",
}

__all__ = [
    "REGISTRY",
    "Connector",
    "ConnectorError",
    "ConnectorUnavailableError",
    "CredentialError",
    "QuotaExceededError",
    "ReadResult",
    "ReadStats",
    "WriteOp",
    "WriteResult",
    "build_connector",
    "known_types",
]


def known_types() -> list[str]:
    """Connector types whose module is present in this installation."""
    out = []
    for type_name, target in REGISTRY.items():
        module_name = target.split(":", 1)[0]
        if importlib.util.find_spec(module_name) is not None:
            out.append(type_name)
    return sorted(out)


def build_connector(
    name: str, cfg: ConnectorConfig, env: Mapping[str, str] | None = None
) -> Connector:
    """The connector for config entry ``name`` (credentials read from ``env``, default ``os.environ``).

    Raises ``ConnectorError`` for an unknown ``type`` (listing the known
    ones) and ``CredentialError`` naming a missing env var.
    """
    target = REGISTRY.get(cfg.type)
    if target is None or cfg.type not in known_types():
        raise ConnectorError(
            name, f"unknown connector type {cfg.type!r}; known types: {', '.join(known_types())}"
        )
    module_name, cls_name = target.split(":", 1)
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(name, cfg, os.environ if env is None else env)
