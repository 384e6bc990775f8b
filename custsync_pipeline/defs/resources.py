"""Small Dagster resources: the state DB, the sync config, and one API resource per connector.

Credentials reach connectors only through ``dg.EnvVar``: the sync config names
the env vars, ``build_resources`` turns each name into an ``EnvVar``, and the
connector receives a mapping of env-var name -> value at run time.
"""

from __future__ import annotations

from functools import cached_property

import dagster as dg
from sqlalchemy.engine import Engine

from custsync_pipeline.config import SyncConfig, load_sync_config
from custsync_pipeline.connectors.base import Connector
from custsync_pipeline.store.db import StateDB

# Concurrency pool of the steps that read, resolve and rewrite shared state-DB tables
# (identity, golden records, the outbox): with the instance's pool limit of 1 a sync
# run and a continuation run never interleave them.
STATE_POOL = "custsync_state"


class SyncConfigResource(dg.ConfigurableResource):
    """The sync config file (empty path = ``$CUSTSYNC_CONFIG`` or the packaged default)."""

    path: str = ""

    def load(self) -> SyncConfig:
        return load_sync_config(self.path or None)


class StateDBResource(dg.ConfigurableResource):
    """The state DB (SQLite file by default, PostgreSQL by URL)."""

    url: str

    @cached_property
    def _state(self) -> StateDB:
        return StateDB(self.url).create_all()

    @property
    def engine(self) -> Engine:
        return self._state.engine


class ConnectorResource(dg.ConfigurableResource):
    """One connector's API client, built from the sync config and env-var credentials."""

    name: str
    config_path: str = ""
    secrets: dict[str, str] = {}

    def connector(self) -> Connector:
        from custsync_pipeline.connectors import build_connector

        cfg = load_sync_config(self.config_path or None)
        return build_connector(self.name, cfg.connectors[self.name], env=self.secrets)


def connector_resource_key(name: str) -> str:
    return f"{name}_api"


def build_resources(cfg: SyncConfig, config_path: str = "") -> dict[str, dg.ConfigurableResource]:
    resources: dict[str, dg.ConfigurableResource] = {
        "sync_config": SyncConfigResource(path=config_path),
        "state_db": StateDBResource(url=cfg.state_db_url),
    }
    for name, conn in cfg.enabled_connectors().items():
        secrets = {env_name: dg.EnvVar(env_name) for env_name in conn.credentials.values()}
        resources[connector_resource_key(name)] = ConnectorResource(
            name=name, config_path=config_path, secrets=secrets
        )
    return resources
