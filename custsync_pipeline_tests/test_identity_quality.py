"""The identity targets of the product, held by the suite: on the sandbox generator's
messy data (20,000 people across every system, through the connectors' own mappings,
normalization and validation), pairwise precision >= 0.999 and recall >= 0.98, and no
golden record mixing people — not even with every block list removed.

The figures come from ``benchmarks/identity_quality.py`` (the script anyone can run)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_precision_recall_and_no_mixed_golden_records() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from identity_quality import measure
    finally:
        sys.path.remove(str(BENCHMARKS))
    figures = measure(people=20_000, seed=7)
    assert figures["precision"] >= 0.999, figures["precision"]
    assert figures["recall"] >= 0.988, figures["recall"]  # measured 0.98824 (target 0.98)
    assert len(figures["mixed"]) == 0
    assert figures["trap_rows"].empty
    assert len(figures["unlisted_role"]) > 0  # role addresses on no list were in play ...
    assert figures["unlisted_mixed"].empty  # ... and detected from the data
    assert len(figures["bare_mixed"]) == 0  # no block list at all: still nobody mixed
