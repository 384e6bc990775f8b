"""A Parquet IO manager for the DataFrames passed between assets (not pickles).

Nested vendor values (dicts, lists) that Arrow cannot type are stored as JSON
text, so any connector's raw payload round-trips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd


def _jsonify_nested(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            sample = out[col].dropna()
            if not sample.empty and sample.map(lambda v: isinstance(v, dict | list)).any():
                out[col] = out[col].map(
                    lambda v: json.dumps(v, default=str) if isinstance(v, dict | list) else v
                )
    return out


class ParquetIOManager(dg.ConfigurableIOManager):
    """Writes each asset's DataFrame to ``<base_dir>/<asset/key/path>.parquet``."""

    base_dir: str = ""

    def _root(self) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        home = os.environ.get("DAGSTER_HOME")
        return Path(home, "storage", "custsync") if home else Path(".custsync", "storage")

    def _path(self, context: dg.InputContext | dg.OutputContext) -> Path:
        key = context.asset_key.path
        return self._root().joinpath(*key[:-1], f"{key[-1]}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected a DataFrame, got {type(obj).__name__}"
            )
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = _jsonify_nested(obj).reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        tmp = path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)  # atomic: a reader never sees half a file

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has not been materialized yet ({path}); "
                "materialize it first"
            )
        return pd.read_parquet(path)
