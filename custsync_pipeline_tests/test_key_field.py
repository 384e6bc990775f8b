"""``publish[].key_field`` (Voyado contacts are keyed by e-mail): creates the target could
not make are held back, never sent to fail or to overwrite someone else's record."""

from __future__ import annotations

import pandas as pd

from custsync_pipeline.domain.deltas import hold_taken_keys


def _deltas(*gids: str, update: str | None = None) -> pd.DataFrame:
    keys = [f"new:{g}" for g in gids] + ([update] if update else [])
    golden_ids = [*gids, "G_upd"] if update else list(gids)
    return pd.DataFrame({"entity_key": keys, "golden_id": golden_ids, "op": "upsert"})


GOLDEN = pd.DataFrame(
    {
        "golden_id": ["G1", "G2", "G3", "G4", "G5", "G_upd"],
        "email": ["anna@x.se", "family@x.se", "FAMILY@x.se ", None, "taken@x.se", "u@x.se"],
    }
)
MEMBERS = pd.DataFrame({"golden_id": ["G9", "G_upd"], "email": [" Taken@X.se", "u@x.se"]})


def test_creates_with_a_taken_or_shared_key_are_held_back() -> None:
    kept, held = hold_taken_keys(
        _deltas("G1", "G2", "G3", "G4", "G5", update="C1"), GOLDEN, MEMBERS, "email"
    )
    # G2 and G3 share a family e-mail (case and spacing folded): neither is created; G5's
    # e-mail another contact holds; G4 has none (required_fields decides about it); the
    # update of an existing member is never held back
    assert held == 3
    assert kept["golden_id"].tolist() == ["G1", "G4", "G_upd"]


def test_no_key_field_holds_nothing() -> None:
    deltas = _deltas("G2", "G3")
    kept, held = hold_taken_keys(deltas, GOLDEN, MEMBERS, None)
    assert held == 0 and kept.equals(deltas)
