"""Change-feed sensors, one per connector: ``<c>_changes``.

Each tick asks the connector for its changes since the cursor through its own incremental
read (Salesforce ``LastModifiedDate`` + ``sobjects/<Object>/deleted``, Voyado
``contacts/changes`` Created/Updated/Deleted, Exact Online ``Modified`` + ``sync/Deleted``,
Voucherify ``updated_at``, Icomm and REST ``updatedSince``-style parameters and their
delete feeds, file rows or mtimes as configured). A change newer than the cursor, or a
deleted id not seen before, launches one ``sync_job`` run of that connector's lane and the
identity, golden and publish steps (an incremental pull from the stored watermark; the
other lanes' stored records count as they are) with a run key made of the connector, the
new watermark and the new deletes, so the same change never launches two runs.

The cursor is JSON, ``{"watermark": ISO time, "deleted": [ids seen in the overlap]}``; a
tick without a cursor starts from the lane's stored watermark (or waits for the first
sync, which reads a full snapshot). The newer of the cursor and the stored watermark wins,
so changes a scheduled sync already pulled launch nothing. A tick that fails (the API is
down) raises: Dagster keeps the old cursor and the next tick asks again. The cursor is
only ever set on the ``SensorResult``.
"""

import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from custsync_pipeline.defs.resources import connector_resource_key
from custsync_pipeline.domain.plan import SyncPlan
from custsync_pipeline.store import core

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

SENSOR_INTERVAL_S = 300


def change_sensor_name(connector: str) -> str:
    return f"{connector}_changes"


def _load_cursor(text: str | None) -> dict:
    try:
        data = json.loads(text) if text else {}
    except ValueError:  # an unreadable cursor: start again from the stored watermark
        data = {}
    return data if isinstance(data, dict) else {}


def _newest(*stamps: datetime | str | None) -> pd.Timestamp | None:
    times = [pd.Timestamp(s) for s in stamps if s is not None]
    times = [t.tz_localize("UTC") if t.tzinfo is None else t for t in times]
    return max(times) if times else None


def lane_and_downstream(
    context: dg.SensorEvaluationContext, connector: str
) -> list[dg.AssetKey] | None:
    """The connector's lane and every identity, golden, publish and transactions asset
    (None: the whole job, when the sensor runs outside its code location)."""
    from custsync_pipeline.defs.automation.definitions import DOWNSTREAM_GROUPS
    from custsync_pipeline.defs.extract.changes import WINDOW_TAG

    try:
        graph = context.repository_def.asset_graph
    except Exception:  # no repository in the context
        return None
    groups = {connector, *DOWNSTREAM_GROUPS}
    return sorted(
        (
            k
            for k in graph.materializable_asset_keys
            if graph.get(k).group_name in groups
            and graph.get(k).tags.get(WINDOW_TAG[0]) != WINDOW_TAG[1]
        ),
        key=lambda k: k.to_user_string(),
    )


def build_change_sensor(name: str, job: "UnresolvedAssetJobDefinition") -> dg.SensorDefinition:
    api_key = connector_resource_key(name)

    @dg.sensor(
        name=change_sensor_name(name),
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={api_key, "state_db"},
        description=(
            f"Polls {name}'s change feed (changes since the cursor's watermark and its "
            f"delete feed); a new change or delete launches one incremental {job.name} run."
        ),
    )
    def change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        from custsync_pipeline.defs.extract.changes import in_window

        cursor = _load_cursor(context.cursor)
        stored = core.get_watermark(context.resources.state_db.engine, name)
        since = _newest(cursor.get("watermark"), stored)
        if since is None:
            return dg.SkipReason(f"{name}: no watermark yet, the first sync reads a snapshot")
        connector = getattr(context.resources, api_key).connector()
        result = connector.read(since=since.to_pydatetime())  # raises: the cursor stays
        # the read starts an overlap before the watermark: only what is newer is a change
        newer = in_window(
            connector,
            result.records,
            since + pd.Timedelta(microseconds=1),
            pd.Timestamp.max.tz_localize("UTC"),
        )
        seen = {str(i) for i in cursor.get("deleted", [])}
        deleted = sorted({str(i) for i in result.deleted_ids})
        gone = [i for i in deleted if i not in seen]
        mark = _newest(result.watermark, since)
        new_cursor = json.dumps({"watermark": mark.isoformat(), "deleted": deleted})
        changed = int(newer.sum())
        if not changed and not gone:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"{name}: no change since {since.isoformat()}"),
                cursor=new_cursor,
            )
        digest = hashlib.sha1("\n".join(gone).encode()).hexdigest()[:12]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{name}:{mark.isoformat()}:{digest}",
                    asset_selection=lane_and_downstream(context, name),
                    tags={"custsync/changed_connector": name},
                )
            ],
            cursor=new_cursor,
        )

    return change_sensor


def build_change_sensors(
    plan: SyncPlan, job: "UnresolvedAssetJobDefinition"
) -> list[dg.SensorDefinition]:
    return [build_change_sensor(name, job) for name in plan.connectors]


@dg.definitions
def defs() -> dg.Definitions:
    from custsync_pipeline.config import current_plan
    from custsync_pipeline.defs.automation.definitions import sync_job

    return dg.Definitions(sensors=build_change_sensors(current_plan(), sync_job))
