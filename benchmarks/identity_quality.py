"""Identity resolution quality on the sandbox generator's data, against its truth.

Generates messy overlapping customers (``sandbox.generator.generate``), maps
every system's records to the canonical model through its connector's own
``to_canonical`` (KatanaPIM: the packaged YAML entry of the generic REST connector),
normalizes and validates them as the pipeline does, resolves identities with
the sync config's rules and prints:

- pairwise precision and recall over same-person record pairs
  (targets: precision >= 0.999, recall >= 0.98);
- golden records that mix people, and how many of them involve a shared
  family email, a placeholder or a role address (target: none);
- the conflicts queued for review, by kind;
- detection from the data, not from lists: how many role-address records use
  an address on no block list (the generator's ``kundservice@`` /
  ``ekonomi@``), and the trap mixing again after a second resolution with
  every ``blocked_values`` / ``blocked_patterns`` removed (target: none).

Usage: PYTHONPATH=. python benchmarks/identity_quality.py [--people 20000] [--seed 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from custsync_pipeline.config import ConnectorConfig, load_sync_config
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.identity import resolve_identities
from custsync_pipeline.domain.identity_keys import blocked_reasons
from custsync_pipeline.sandbox.generator import generate
from custsync_pipeline.sandbox.server import CREDENTIALS as SANDBOX_CREDENTIALS

SANDBOX_ENV = dict(SANDBOX_CREDENTIALS)  # the sandbox's demo credentials
CREDENTIALS = {
    "salesforce": {"access_token": "SALESFORCE_ACCESS_TOKEN"},
    "voucherify": {"app_id": "VOUCHERIFY_APP_ID", "app_token": "VOUCHERIFY_APP_TOKEN"},
    "voyado": {"api_key": "VOYADO_API_KEY"},
    "exact": {"access_token": "EXACT_ACCESS_TOKEN"},
    "icomm": {"api_key": "ICOMM_API_KEY"},
}
WEB_USER = r"u\d{7}"


OPTIONS = {
    "salesforce": {"objects": ["Contact", "Account", "Lead"]},
    "exact": {"division": 1},
    "voucherify": {"source_id_patterns": {"web_user_id": WEB_USER}},
}


def to_canonical(frame_key: str, raw: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The connector's own mapping (a module, or the packaged YAML entry). Returns (frame, how).

    ``frame_key`` is the generator's key: ``system`` or ``system.Object``.
    """
    from custsync_pipeline.connectors import build_connector, known_types

    system, _, obj = frame_key.partition(".")
    packaged = load_sync_config().connectors.get(system)
    if packaged is not None and packaged.type == "rest":
        # a YAML-only connector (KatanaPIM): the packaged entry's own mapping
        conn = build_connector(system, packaged, SANDBOX_ENV)
        return conform(conn.to_canonical(raw)), "connector (rest)"
    if system not in known_types():
        raise ValueError(f"no connector maps the generator's {system!r} records")
    raw = raw.copy()
    if system == "salesforce":
        raw["attributes.type"] = obj or "Contact"
    elif system == "exact":
        raw["__resource"] = f"{obj or 'Account'}s"
    cfg = ConnectorConfig(
        type=system,
        base_url="http://127.0.0.1:9",
        credentials=CREDENTIALS.get(system, {}),
        options=OPTIONS.get(system, {}),
    )
    conn = build_connector(system, cfg, SANDBOX_ENV)
    return conform(conn.to_canonical(raw)), "connector"


def normalize_and_validate(frame: pd.DataFrame, system: str) -> pd.DataFrame:
    try:
        from custsync_pipeline.domain.normalize import normalize_customers
    except ImportError:  # before the validation helper landed: a minimal lower/strip
        frame = frame.copy()
        frame["email"] = frame["email"].str.strip().str.lower()
        return frame
    frame = normalize_customers(frame)
    try:
        from custsync_pipeline.domain.validate import validate_customers

        return validate_customers(frame, system, connector_type=system).valid
    except ImportError:
        return frame


def pair_count(sizes: np.ndarray) -> int:
    sizes = sizes.astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def measure(people: int, seed: int, with_matching: bool = True) -> dict:
    """Generate, map, normalize, validate and resolve; the figures main() prints."""
    t0 = time.perf_counter()
    data = generate(seed=seed, people=people)
    frames, how = [], {}
    for system, raw in data.frames.items():
        canon, how[system] = to_canonical(system, raw)
        frames.append(normalize_and_validate(canon, system.partition(".")[0]))
    records = pd.concat(frames, ignore_index=True)
    t1 = time.perf_counter()
    config = load_sync_config()
    rules = config.identity.identifiers
    matching = config.plan().matching if with_matching else None  # the probabilistic stage
    result = resolve_identities(
        records, rules, now=pd.Timestamp("2026-11-01", tz="UTC"), matching=matching
    )
    t2 = time.perf_counter()

    truth = data.truth.rename(columns={"system": "connector"})[
        ["connector", "source_id", "person_id"]
    ]
    truth = truth.astype({"source_id": str})
    m = result.identity_map.merge(truth, on=["connector", "source_id"], how="inner")
    true_pairs = pair_count(m.groupby("person_id").size().to_numpy())
    pred_pairs = pair_count(m.groupby("golden_id").size().to_numpy())
    tp = pair_count(m.groupby(["golden_id", "person_id"]).size().to_numpy())
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0

    traps = data.defects[
        data.defects["defect"].isin(
            ["shared_family_email", "placeholder_email", "placeholder_phone", "role_email"]
        )
    ].rename(columns={"system": "connector"})
    traps = traps.astype({"source_id": str})

    def trap_mixing(id_map: pd.DataFrame) -> tuple[pd.Index, pd.DataFrame]:
        """Golden records holding more than one person, and the trap rows among them."""
        mm = id_map.merge(truth, on=["connector", "source_id"], how="inner")
        per_golden = mm.groupby("golden_id")["person_id"].nunique()
        mixed_ids = per_golden[per_golden > 1].index
        rows = mm[mm["golden_id"].isin(mixed_ids)].merge(
            traps[["connector", "source_id", "defect"]], on=["connector", "source_id"], how="inner"
        )
        return mixed_ids, rows

    mixed, trap_rows = trap_mixing(result.identity_map)

    # detection from the data: role addresses on no list, and a run with every list removed
    email_rule = next((r for r in rules if r.name == "email"), None)
    role_keys = traps.loc[traps["defect"] == "role_email", ["connector", "source_id"]]
    role_frame = records[["connector", "source_id", "email"]].astype({"source_id": str})
    role_frame = role_frame.merge(role_keys, on=["connector", "source_id"]).dropna(subset=["email"])
    role_mail = role_frame["email"].astype(str).str.strip().str.lower()
    listed = pd.Series(False, index=role_mail.index)
    if email_rule is not None:  # the rule's own lists and patterns, as resolution applies them
        listed |= blocked_reasons(role_mail, email_rule) != ""
    unlisted_role = role_mail[~listed]
    no_lists = [r.model_copy(update={"blocked_values": [], "blocked_patterns": []}) for r in rules]
    bare = resolve_identities(
        records, no_lists, now=pd.Timestamp("2026-11-01", tz="UTC"), matching=matching
    )
    bare_mixed, bare_trap_rows = trap_mixing(bare.identity_map)
    unlisted_ids = role_frame.loc[~listed, ["connector", "source_id"]]
    unlisted_mixed = trap_rows.merge(unlisted_ids, on=["connector", "source_id"], how="inner")

    return dict(
        data=data,
        how=how,
        records=records,
        result=result,
        m=m,
        true_pairs=true_pairs,
        pred_pairs=pred_pairs,
        tp=tp,
        precision=precision,
        recall=recall,
        mixed=mixed,
        trap_rows=trap_rows,
        unlisted_role=unlisted_role,
        unlisted_mixed=unlisted_mixed,
        bare_mixed=bare_mixed,
        bare_trap_rows=bare_trap_rows,
        t0=t0,
        t1=t1,
        t2=t2,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-matching", action="store_true", help="rules only")
    args = parser.parse_args()
    f = measure(args.people, args.seed, with_matching=not args.no_matching)
    data, how, records, result, m = f["data"], f["how"], f["records"], f["result"], f["m"]
    true_pairs, pred_pairs, tp = f["true_pairs"], f["pred_pairs"], f["tp"]
    precision, recall, mixed, trap_rows = f["precision"], f["recall"], f["mixed"], f["trap_rows"]
    unlisted_role, unlisted_mixed = f["unlisted_role"], f["unlisted_mixed"]
    bare_mixed, bare_trap_rows = f["bare_mixed"], f["bare_trap_rows"]
    t0, t1, t2 = f["t0"], f["t1"], f["t2"]

    print(f"identity quality: seed {args.seed}, {args.people} people")
    print("  mapping per system: " + ", ".join(f"{s}={h}" for s, h in how.items()))
    print(f"  source records {len(data.truth)}, valid after validation {len(records)}")
    print(
        f"  golden records {result.identity_map['golden_id'].nunique()}, people {m['person_id'].nunique()}"
    )
    print(f"  same-person pairs {true_pairs}, predicted pairs {pred_pairs}, correct {tp}")
    print(f"  pairwise precision {precision:.5f}  (target >= 0.999)")
    print(f"  pairwise recall    {recall:.5f}  (target >= 0.98)")
    print(f"  golden records mixing people: {len(mixed)}")
    print(
        "  ... of which through a shared family email / placeholder / role address: "
        f"{trap_rows['golden_id'].nunique()}"
    )
    if len(trap_rows):
        print(trap_rows.groupby("defect")["golden_id"].nunique().to_string())
    print(
        f"  role-address records on no block list: {len(unlisted_role)} "
        f"({unlisted_role.nunique()} addresses); golden records mixing people through them: "
        f"{unlisted_mixed['golden_id'].nunique()}"
    )
    print(
        "  with every block list removed: golden records mixing people "
        f"{len(bare_mixed)}, through a family email / placeholder / role address "
        f"{bare_trap_rows['golden_id'].nunique()}"
    )
    if len(bare_trap_rows):
        print(bare_trap_rows.groupby("defect")["golden_id"].nunique().to_string())
    print(
        "  conflicts queued: "
        + ", ".join(f"{k}={v}" for k, v in result.conflicts["kind"].value_counts().items())
    )
    print(
        f"  slow path: {result.stats['slow_path_records']} records in {result.stats['slow_path_clusters']} clusters"
    )
    print(f"  time: generate+map+normalize+validate {t1 - t0:.1f}s, resolve {t2 - t1:.2f}s")


if __name__ == "__main__":
    main()
