"""Markets (seed 004: "by store, market and language"): which market a customer belongs to,
and the market's rules applied to what is published.

Pure functions on golden frames, vectorized (``isin``/``map`` over columns). A customer's
market is the first market (config order) whose store codes hold its ``store_code``, else
the first whose countries hold its ``country``; none when neither tells. The rules:

- ``language``: the market's language where the customer has none;
- consents: a consent that does not apply in the market is not sent (left empty); one that
  applies and that nobody set gets the market's default (``yes`` / ``no``), when it has one;
- targets: only the market's targets receive its customers (a customer of no market, or of
  a market without ``targets``, goes to every target).

Defaults are applied to what is published, never stored in the golden record: a default is
no fact the consent's owner recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from custsync_pipeline.domain.plan import MarketPlan

MARKET_COLUMN = "market"


def _folded(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().str.upper()


def market_of(frame: pd.DataFrame, markets: Sequence[MarketPlan]) -> pd.Series:
    """Each row's market name (``<NA>`` when none): by store code first, then country."""
    out = pd.Series(pd.NA, index=frame.index, dtype="string")
    if not markets:
        return out
    for column, attr in (("store_code", "store_codes"), ("country", "countries")):
        if column not in frame.columns:
            continue
        table: dict[str, str] = {}
        for m in markets:  # the first market naming a code keeps it
            for code in getattr(m, attr):
                table.setdefault(str(code).strip().upper(), m.name)
        if table:
            found = _folded(frame[column]).map(table).astype("string")
            out = out.fillna(found)
    return out


def apply_market_rules(golden: pd.DataFrame, markets: Sequence[MarketPlan]) -> pd.DataFrame:
    """``golden`` plus a ``market`` column, with each market's language and consent rules
    applied (see the module docstring); rows of no market are left as they are."""
    out = golden.copy()
    out[MARKET_COLUMN] = market_of(out, markets)
    for m in markets:
        mine = (out[MARKET_COLUMN] == m.name).fillna(False).to_numpy()
        if not mine.any():
            continue
        if m.language and "language" in out.columns:
            lacking = mine & out["language"].isna().to_numpy()
            out.loc[lacking, "language"] = m.language
        for rule in m.consents:
            if rule.field not in out.columns:
                continue
            if not rule.applies:
                out.loc[mine, rule.field] = pd.NA
                stamp = f"{rule.field}_at"
                if stamp in out.columns:
                    out.loc[mine, stamp] = pd.NaT
            elif rule.default is not None:
                lacking = mine & out[rule.field].isna().to_numpy()
                out.loc[lacking, rule.field] = rule.default
    return out


def market_takes(golden: pd.DataFrame, markets: Sequence[MarketPlan], target: str) -> pd.Series:
    """True where ``target`` receives the row's customer (needs the ``market`` column)."""
    keep = pd.Series(True, index=golden.index)
    if MARKET_COLUMN not in golden.columns:
        return keep
    for m in markets:
        if m.targets is not None and target not in m.targets:
            keep &= ~(golden[MARKET_COLUMN] == m.name).fillna(False)
    return keep
