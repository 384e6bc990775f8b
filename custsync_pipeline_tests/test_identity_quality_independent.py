"""Identity quality on the second, independent generator (``identity_datagen``), held by
the suite: 10,000 people with nicknames, swapped and full-name fields, households of up to
twelve on one e-mail or landline, keyless CRM duplicates; the probabilistic stage on.

Floors sit just under the measured figures (10,000 people, seed 1: precision 0.99985,
recall 0.96712; ``benchmarks/identity_quality_independent.py --people 10000``); the recall
target (0.98) is not reached on this data: a guest on a household address stays apart, and
so does a record that fits two namesakes of one household (father and son) with nothing to
tell them apart. A role address or a till placeholder never mixes people.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_independent_generator_precision_recall_and_no_trap_mixing() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from identity_quality_independent import measure
    finally:
        sys.path.remove(str(BENCHMARKS))
    figures = measure(people=10_000, seed=1)
    assert figures["precision"] >= 0.9998, figures["precision"]
    assert figures["recall"] >= 0.966, figures["recall"]
    traps = set(figures["mixed_rows"]["trap"])
    assert not traps & {"role_email", "placeholder_phone"}, traps
