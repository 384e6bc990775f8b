"""Transactions (receipts, web and POS orders) tied to golden records (seed 004, seed 000).

A transaction is one row of ``TRANSACTION_COLUMNS``: its own id and number, status,
channel (``web`` / ``pos``), store code, currency, total, ``ordered_at`` / ``updated_at``
(UTC), the buyer's keys as given (e-mail, phone, member number, guest flag) and its lines
(a JSON list). Every step here is vectorized pandas; nothing talks to a system or a DB.

* :func:`validate_transactions`: the Pandera schema ``transaction_schema(now)``; a failing
  row is quarantined (one row per failure naming the transaction and the field), never
  linked or published.
* :func:`link_transactions`: the golden id through the identity map's keys. A key links
  only when **exactly one** golden record holds it: a guest order with an e-mail joins the
  one golden record holding that address, as a guest record does in identity; an e-mail
  two golden records share (a family's) links nobody, unless the phone on the order names
  one of them (a household merged into one golden record by identity has one holder and
  links to it). Blocked values (placeholders, role addresses) never link.
* :func:`order_history`: the ``order_history`` aspect of each golden record: orders count,
  first and last order time and total spend per currency, with provenance (the source
  connector, the transactions it was computed from, and when).
* :func:`transaction_hash`: the content hash a target's ledger keys on with the id, so a
  replay sends nothing twice and a changed transaction is sent again where the target
  allows it.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pandera.pandas as pa

from custsync_pipeline.domain.aspects import DERIVED_ASPECTS

TRANSACTION_COLUMNS: tuple[str, ...] = (
    "source",  # connector the transaction came from
    "transaction_id",
    "number",
    "status",
    "channel",
    "store_code",
    "currency",
    "total",
    "ordered_at",
    "updated_at",
    "email",
    "phone",
    "member_number",
    "guest",
    "line_count",
    "lines",  # JSON list of {line_no, sku, name, quantity, unit_price, line_total}
)
LINK_COLUMNS: tuple[str, ...] = ("golden_id", "link_rule", "tx_hash")
CHANNELS: tuple[str, ...] = ("web", "pos")
STATUSES: tuple[str, ...] = ("completed", "returned", "cancelled")
# ISO 4217 codes of the markets served (seed 004: by store, market and language)
CURRENCIES: tuple[str, ...] = ("SEK", "NOK", "DKK", "EUR", "GBP", "USD", "CHF", "PLN")
ORDER_HISTORY_FIELDS: tuple[str, ...] = DERIVED_ASPECTS["order_history"]
ORDER_HISTORY_COLUMNS: tuple[str, ...] = (
    "golden_id",
    "currency",
    *ORDER_HISTORY_FIELDS,
    "source",  # provenance: the connector(s) the orders came from
    "transactions",  # provenance: ids of the newest transactions counted (up to 5), JSON
    "computed_at",
)
FUTURE_TOLERANCE = pd.Timedelta(days=1)

CHECK_REASONS: dict[str, str] = {
    "not_null": "is required but missing",
    "currency": "is not a supported ISO 4217 currency code",
    "channel": "is neither 'web' nor 'pos'",
    "status": "is not a known order status",
    "not_future": "is in the future",
    "positive_lines": "has a line with a quantity below 1 or a negative price",
    "non_negative": "is negative",
    "total_matches_lines": "does not equal the sum of the line totals",
    "has_lines": "has no lines",
}


def _check(fn, name: str, **kw) -> pa.Check:
    return pa.Check(fn, name=name, error=CHECK_REASONS[name], **kw)


def transaction_schema(now: pd.Timestamp | None = None) -> pa.DataFrameSchema:
    """The Pandera schema of a transactions frame (``TRANSACTION_COLUMNS``)."""
    limit = (now or pd.Timestamp.now(tz="UTC")) + FUTURE_TOLERANCE
    ts = pa.Column(
        "datetime64[ns, UTC]",
        _check(lambda s: s.isna() | (s <= limit), "not_future"),
        nullable=False,
        coerce=True,
    )
    return pa.DataFrameSchema(
        {
            "source": pa.Column("string", nullable=False),
            "transaction_id": pa.Column("string", nullable=False, unique=True),
            "number": pa.Column("string", nullable=True),
            "status": pa.Column("string", _check(lambda s: s.isin(STATUSES), "status")),
            "channel": pa.Column("string", _check(lambda s: s.isin(CHANNELS), "channel")),
            "store_code": pa.Column("string", nullable=False),
            "currency": pa.Column("string", _check(lambda s: s.isin(CURRENCIES), "currency")),
            "total": pa.Column("float64", _check(lambda s: s >= 0, "non_negative"), coerce=True),
            "ordered_at": ts,
            "updated_at": ts,
            "email": pa.Column("string", nullable=True),
            "phone": pa.Column("string", nullable=True),
            "member_number": pa.Column("string", nullable=True),
            "guest": pa.Column("bool", coerce=True),
            "line_count": pa.Column("int64", _check(lambda s: s >= 1, "has_lines"), coerce=True),
            "lines": pa.Column("string", nullable=False),
            "min_quantity": pa.Column(
                "float64", _check(lambda s: s >= 1, "positive_lines"), nullable=True, coerce=True
            ),
            "lines_total": pa.Column("float64", nullable=True, coerce=True),
        },
        checks=[
            pa.Check(
                lambda df: (df["lines_total"] - df["total"]).abs() < 0.005,
                name="total_matches_lines",
                error=CHECK_REASONS["total_matches_lines"],
            )
        ],
        strict=False,
    )


def empty_transactions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in TRANSACTION_COLUMNS})


def validate_transactions(
    frame: pd.DataFrame, now: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid, rejected): ``rejected`` has one row per failure (the quarantine's shape), with
    ``source_id``, ``field``, ``check``, ``severity`` ("row"), ``reason`` naming the transaction and
    the field, and ``raw_payload`` (the row as JSON, buyer keys masked)."""
    if frame.empty:
        return frame.copy(), _rejected_frame([])
    work = frame.copy()
    for col in ("min_quantity", "lines_total"):
        if col not in work:
            work[col] = np.nan
    for col in ("source", "transaction_id", "number", "status", "channel", "store_code",
                "currency", "email", "phone", "member_number", "lines"):  # fmt: skip
        work[col] = work[col].astype("string")
    work["total"] = pd.to_numeric(work["total"], errors="coerce")
    for col in ("ordered_at", "updated_at"):
        work[col] = pd.to_datetime(work[col], utc=True, errors="coerce")
    try:
        transaction_schema(now).validate(work, lazy=True)
        bad = pd.DataFrame(columns=["index", "column", "check"])
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        bad = pd.DataFrame(
            {
                "index": cases["index"],
                "column": cases["column"].astype("string"),
                "check": cases["check"].astype("string"),
            }
        )
        # a frame-wide check (totals) names no column: it is the total's
        bad["column"] = bad["column"].fillna("total").replace({"<NA>": "total"})
        bad = bad[bad["index"].notna()]
    bad_idx = pd.Index(bad["index"].unique())
    rejected_rows = work.loc[work.index.isin(bad_idx)]
    valid = frame.loc[~frame.index.isin(bad_idx)].copy()
    if bad.empty:
        return valid, _rejected_frame([])
    # pandera names a check by its error text (ours) or its own name (nullable, dtype …)
    by_text = {reason: name for name, reason in CHECK_REASONS.items()}
    names = bad["check"].map(by_text).fillna(bad["check"].str.replace(r"\(.*$", "", regex=True))
    names = names.where(names.isin(list(CHECK_REASONS)), "not_null")
    # a frame-wide check (the total against the lines) is the total's, whatever column it names
    bad = bad.assign(column=bad["column"].where(names != "total_matches_lines", "total"))
    ids = rejected_rows["transaction_id"].astype("string")
    joined = bad.assign(check_name=names.to_numpy()).join(ids.rename("source_id"), on="index")
    joined["field"] = joined["column"].replace(
        {"min_quantity": "lines.quantity", "lines_total": "lines"}
    )
    joined["reason"] = (
        "transaction "
        + joined["source_id"].fillna("?")
        + ": "
        + joined["field"]
        + " "
        + joined["check_name"].map(CHECK_REASONS).fillna("failed a check")
    )
    payload = masked_payload(rejected_rows)
    joined["raw_payload"] = joined["index"].map(payload)
    joined["severity"] = "row"
    out = joined[["source_id", "field", "check_name", "severity", "reason", "raw_payload"]]
    out = out.rename(columns={"check_name": "check"})
    return valid, out.drop_duplicates(["source_id", "field", "check"]).reset_index(drop=True)


def _rejected_frame(rows: list) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["source_id", "field", "check", "severity", "reason", "raw_payload"]
    )


def mask_email(values: pd.Series) -> pd.Series:
    """``a***@domain``: the first character and the domain (never the whole address)."""
    text = values.astype("string")
    return text.str.replace(r"^(.)[^@]*@", r"\1***@", regex=True)


def mask_phone(values: pd.Series) -> pd.Series:
    """All but the last two digits hidden."""
    text = values.astype("string")
    return text.str.replace(r"\d(?=\d{2})", "*", regex=True)


def masked_payload(frame: pd.DataFrame) -> pd.Series:
    """The rows as JSON for the quarantine, e-mail and phone masked, member number dropped."""
    view = frame[[c for c in TRANSACTION_COLUMNS if c in frame.columns]].copy()
    if "email" in view:
        view["email"] = mask_email(view["email"])
    if "phone" in view:
        view["phone"] = mask_phone(view["phone"])
    view = view.drop(columns=["member_number"], errors="ignore")
    for col in ("ordered_at", "updated_at"):
        if col in view:
            view[col] = view[col].astype("string")
    records = view.astype(object).where(view.notna(), None).to_dict("records")
    return pd.Series([json.dumps(r, default=str) for r in records], index=frame.index)


# ----------------------------------------------------------------------------- linking


def key_holders(keys: pd.DataFrame) -> pd.DataFrame:
    """From ``keys`` (``key_type``, ``value``, ``golden_id``: every normalized e-mail and
    phone of every source record with its golden id) -> one row per (key_type, value) with
    ``holders`` (distinct golden ids) and ``golden_id`` (the holder when there is one)."""
    if keys.empty:
        return pd.DataFrame(columns=["key_type", "value", "holders", "golden_id"])
    k = keys.dropna(subset=["value", "golden_id"]).drop_duplicates(
        ["key_type", "value", "golden_id"]
    )
    grouped = k.groupby(["key_type", "value"], sort=False)["golden_id"]
    out = pd.DataFrame({"holders": grouped.size(), "golden_id": grouped.first()}).reset_index()
    out.loc[out["holders"] != 1, "golden_id"] = None
    return out


def _blocked(
    values: pd.Series, blocked_values: Iterable[str], patterns: Iterable[str]
) -> pd.Series:
    out = values.isin(list(blocked_values))
    for pattern in patterns:
        with warnings.catch_warnings():  # groups in a rule's pattern are only alternatives
            warnings.simplefilter("ignore", UserWarning)
            out |= values.str.contains(pattern, flags=re.IGNORECASE, regex=True, na=False)
    return out.fillna(False).astype(bool)


def link_transactions(
    tx: pd.DataFrame,
    holders: pd.DataFrame,
    blocked: dict[str, tuple[Iterable[str], Iterable[str]]] | None = None,
) -> pd.DataFrame:
    """``tx`` with ``golden_id`` and ``link_rule``: ``email`` / ``phone`` when exactly one
    golden record holds the key, ``ambiguous:email`` / ``ambiguous:phone`` when several do
    (and no other key decides), ``blocked:email`` for a placeholder or role address,
    ``unknown`` for keys nobody holds, ``no_keys`` for an anonymous guest.

    ``blocked``: key type -> (blocked values, blocked patterns), the identity rules'."""
    out = tx.copy()
    blocked = blocked or {}
    golden = pd.Series(pd.NA, index=out.index, dtype="object")
    rule = pd.Series("no_keys", index=out.index, dtype="object")
    for key_type in ("email", "phone"):
        values = out[key_type].astype("string").str.strip()
        if key_type == "email":
            values = values.str.lower()
        vals, pats = blocked.get(key_type, ((), ()))
        is_blocked = _blocked(values, vals, pats) & values.notna()
        h = holders[holders["key_type"] == key_type].set_index("value")
        n = values.map(h["holders"]).fillna(0).astype(int)
        gid = values.map(h["golden_id"])
        undecided = golden.isna()
        hit = undecided & ~is_blocked & (n == 1)
        golden = golden.where(~hit, gid)
        rule = rule.where(~hit, key_type)
        # a weaker outcome only where no earlier key said something stronger
        weak = undecided & ~hit & values.notna()
        first_word = rule.isin(["no_keys", "unknown"])
        rule = rule.where(~(weak & is_blocked & first_word), f"blocked:{key_type}")
        rule = rule.where(
            ~(weak & ~is_blocked & (n > 1) & rule.isin(["no_keys", "unknown"])),
            f"ambiguous:{key_type}",
        )
        rule = rule.where(~(weak & ~is_blocked & (n == 0) & (rule == "no_keys")), "unknown")
    out["golden_id"] = golden
    out["link_rule"] = rule
    return out


# ----------------------------------------------------------------------------- hashing


def transaction_hash(tx: pd.DataFrame) -> pd.Series:
    """sha1 of what a target receives (without the golden link), per transaction."""
    cols = [c for c in TRANSACTION_COLUMNS if c in tx.columns and c != "source"]
    text = tx[cols].astype("string").fillna("\x00")
    joined = text.iloc[:, 0]
    for c in cols[1:]:
        joined = joined + "\x1f" + text[c]
    return joined.map(lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())


# ----------------------------------------------------------------------------- history


def order_history(tx: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """The ``order_history`` aspect: one row per (golden id, currency) of the linked,
    non-cancelled transactions, with provenance columns (``ORDER_HISTORY_COLUMNS``).
    Returned orders count as orders; their spend is not added (it was refunded)."""
    linked = tx[tx["golden_id"].notna() & (tx["status"] != "cancelled")].copy()
    if linked.empty:
        return pd.DataFrame(columns=list(ORDER_HISTORY_COLUMNS))
    linked["ordered_at"] = pd.to_datetime(linked["ordered_at"], utc=True)
    linked["spend"] = pd.to_numeric(linked["total"]).where(linked["status"] != "returned", 0.0)
    linked = linked.sort_values(["ordered_at", "transaction_id"])
    g = linked.groupby(["golden_id", "currency"], sort=True)
    out = pd.DataFrame(
        {
            "orders_count": g.size(),
            "first_order_at": g["ordered_at"].min(),
            "last_order_at": g["ordered_at"].max(),
            "total_spend": g["spend"].sum().round(2),
            "source": g["source"].agg(lambda s: ",".join(sorted(set(s)))),
            "transactions": g["transaction_id"].agg(lambda s: json.dumps(list(s)[-5:])),
        }
    ).reset_index()
    out["computed_at"] = now or pd.Timestamp.now(tz="UTC")
    return out[list(ORDER_HISTORY_COLUMNS)]
