"""Small Dagster resources: the state DB and one API resource per connector.

The sync config is read once, when the definitions load; each connector
resource carries its own validated settings (no secrets: credentials are env
var names), so a run never re-reads the file. Credentials reach connectors only
through ``dg.EnvVar``: the sync config names the env vars, ``build_resources``
turns each name into an ``EnvVar``, and the connector receives a mapping of
env-var name -> value at run time (a variable not set when the definitions load is
left out, so only that connector's steps fail, naming it).
"""

from __future__ import annotations

import os
from functools import cached_property

import dagster as dg
from sqlalchemy.engine import Engine

from custsync_pipeline.config import ConnectorConfig, SyncConfig
from custsync_pipeline.connectors.base import Connector
from custsync_pipeline.store.db import StateDB

# Concurrency pool of the steps that read, resolve and rewrite shared state-DB tables
# (identity, golden records, the outbox): with the instance's pool limit of 1 a sync
# run and a continuation run never interleave them.
STATE_POOL = "custsync_state"


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
    settings: str = "{}"  # the connector's validated config entry, as JSON
    secrets: dict[str, str] = {}

    @property
    def config(self) -> ConnectorConfig:
        return ConnectorConfig.model_validate_json(self.settings)

    def connector(self) -> Connector:
        from custsync_pipeline.connectors import build_connector

        return build_connector(self.name, self.config, env=self.secrets)

    def payload_reader(self) -> Connector:
        """The connector as the merge reads it: its mapping of the payloads it wrote back to
        canonical rows (echo safety), with no secret — the merge never sends — so a target
        whose credential is missing does not stop every golden record. A placeholder stands
        for each secret; a request made with it would fail at the API."""
        from custsync_pipeline.connectors import build_connector

        env = dict.fromkeys(self.config.credentials.values(), "not-a-secret:mapping-only")
        return build_connector(self.name, self.config, env=env)


def connector_resource_key(name: str) -> str:
    return f"{name}_api"


def build_resources(cfg: SyncConfig) -> dict[str, dg.ConfigurableResource]:
    resources: dict[str, dg.ConfigurableResource] = {
        "state_db": StateDBResource(url=cfg.state_db_url),
    }
    for name, conn in cfg.enabled_connectors().items():
        # a variable not set is left out: the connector's own steps then fail naming it
        # (``CredentialError``), and the other lanes run, where an ``EnvVar`` of an unset
        # variable would fail the whole run at its start
        secrets = {
            env_name: dg.EnvVar(env_name)
            for env_name in conn.credentials.values()
            if env_name in os.environ
        }
        resources[connector_resource_key(name)] = ConnectorResource(
            name=name, settings=conn.model_dump_json(), secrets=secrets
        )
    return resources
