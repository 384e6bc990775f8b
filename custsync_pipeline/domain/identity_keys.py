"""Identity keys: turning canonical records into identifier occurrences.

Holds the vectorized key builder used by ``domain.identity`` (one pass per
identifier rule, regexes and lists applied once per unique value), the
first-name tokens that tell family members apart, and the masking of keys
for anything a person reads (``j***@gmail.com``, ``+46*****12``).
Pure functions on pandas/numpy; no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from custsync_pipeline.domain.identity_names import first_names_compatible
from custsync_pipeline.domain.plan import IdentifierRule

# Columns whose values are contact points people share (a family email, a
# shop's landline); rules keyed on them are "contact" rules and get the
# family / guest checks. Every other rule is a system identifier ("strong").
CONTACT_COLUMNS = frozenset({"email", "phone"})

# Values that are never an identifier, whatever the config says.
JUNK_VALUES = frozenset(
    {"", "null", "none", "n/a", "na", "nan", "-", "--", "0", "unknown", "undefined", "test"}
)

# Key status codes (per distinct key value).
USABLE, BLOCKED, OVERUSED = 0, 1, 2


def blocked_reasons(values: pd.Series, rule: IdentifierRule) -> np.ndarray:
    """Per value (non-null strings): '' when the rule may use it, else why it is blocked.

    Also used by survivorship, so a placeholder typed at a till never wins a golden field.
    """
    reason = np.full(len(values), "", dtype=object)
    if rule.blocked_values:
        listed = values.str.lower().isin({v.strip().lower() for v in rule.blocked_values})
        reason[listed.to_numpy(dtype=bool)] = "blocked value (list)"
    if rule.blocked_patterns:
        hit = _pattern_hits(values, "|".join(f"(?:{p})" for p in rule.blocked_patterns))
        reason[hit & (reason == "")] = "blocked value (pattern)"
    return reason


def _pattern_hits(values: pd.Series, pattern: str) -> np.ndarray:
    """Case-insensitive regex search over strings: Arrow's RE2 kernel in C++ (a million
    values in a blink), Python's ``re`` for what RE2 cannot run (look-arounds)."""
    try:
        hits = pc.match_substring_regex(
            pa.array(values.to_numpy(dtype=object), type=pa.string()),
            pattern,
            ignore_case=True,
        )
        return hits.to_numpy(zero_copy_only=False).astype(bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        compiled = re.compile(pattern, re.IGNORECASE)
        return values.map(lambda v: bool(compiled.search(v))).to_numpy(dtype=bool)


def is_contact_rule(rule: IdentifierRule) -> bool:
    return rule.columns[0] in CONTACT_COLUMNS


def _clean_id(values: pd.Series, column: str) -> pd.Series:
    out = values.astype(object).where(values.notna(), None)
    if column in CONTACT_COLUMNS and pd.api.types.infer_dtype(out, skipna=True) == "string":
        # Arrow's string kernels: several times faster than Python str methods at 1M
        arr = pc.utf8_trim_whitespace(pa.array(out.to_numpy(dtype=object), type=pa.string()))
        if column == "email":
            arr = pc.utf8_lower(arr)
        return pd.Series(arr.to_numpy(zero_copy_only=False), index=values.index, dtype=object)
    out = out.map(str, na_action="ignore").str.strip()
    if column == "email":
        out = out.str.lower()
    elif column == "salesforce_id":
        # An 18-character Salesforce id is the 15-character one plus a case-safe
        # suffix: references stored by other systems often use the other form.
        long = out.str.len().eq(18) & out.str.fullmatch(r"[A-Za-z0-9]{18}").fillna(False)
        out = out.where(~long, out.str.slice(0, 15))
    return out


@dataclass
class KeyTable:
    """Identifier occurrences of a frame of records.

    ``occ_rec``/``occ_key`` list (record index, key id) pairs, sorted by key
    then record; per key id: ``key_rule`` (index into the rule list),
    ``key_value`` (normalized value; composite parts joined by ``|``),
    ``key_count`` (records holding it) and ``key_status``.
    """

    occ_rec: np.ndarray
    occ_key: np.ndarray
    key_rule: np.ndarray
    key_value: np.ndarray
    key_count: np.ndarray
    key_status: np.ndarray
    key_reason: np.ndarray  # why a key is not usable ("" when usable)

    @property
    def n_keys(self) -> int:
        return len(self.key_rule)


def build_keys(records: pd.DataFrame, rules: list[IdentifierRule]) -> KeyTable:
    """Every identifier occurrence of ``records`` under ``rules`` (vectorized)."""
    recs: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    k_rule: list[np.ndarray] = []
    k_value: list[np.ndarray] = []
    k_status: list[np.ndarray] = []
    k_reason: list[np.ndarray] = []
    offset = 0
    for r_idx, rule in enumerate(rules):
        missing = [c for c in rule.columns if c not in records.columns]
        if missing:
            continue
        first = records[rule.columns[0]].to_numpy(dtype=object)
        # factorize the raw values first: cleaning then runs once per distinct value
        # most records lack most identifiers: hash only the present values
        present = np.flatnonzero(pd.notna(first))
        sub_code, raw_uniq = pd.factorize(first[present], use_na_sentinel=True)
        raw_code = np.full(len(first), -1, dtype=np.int64)
        raw_code[present] = sub_code
        if len(raw_uniq) == 0:
            continue
        clean = _clean_id(pd.Series(raw_uniq, dtype=object), rule.columns[0]).fillna("")
        vals_u = clean.to_numpy(dtype=object)
        mask = raw_code >= 0
        vals = pd.Series(vals_u[raw_code[mask]], dtype=object)
        for col in rule.columns[1:]:
            part = records[col].to_numpy(dtype=object)[mask]
            p_code, p_uniq = pd.factorize(part, use_na_sentinel=True)
            p_clean = (
                _clean_id(pd.Series(p_uniq, dtype=object), col).fillna("").to_numpy(dtype=object)
            )
            p_vals = np.where(p_code >= 0, p_clean[np.maximum(p_code, 0)], "")
            vals = vals + "|" + pd.Series(p_vals, dtype=object)
        junk_u = pd.Series(vals_u, dtype=object).str.lower().isin(JUNK_VALUES).to_numpy()
        if len(rule.columns) > 1:
            junk = vals.str.lower().isin(JUNK_VALUES).to_numpy() | junk_u[raw_code[mask]]
        else:
            junk = junk_u[raw_code[mask]]
        rec_idx = np.flatnonzero(mask)[~junk]
        vals = vals[~junk].reset_index(drop=True)
        if len(vals) == 0:
            continue
        if len(rule.columns) == 1:
            # cleaning may fold distinct raw values together: re-factorize the uniques only
            u_code, uniques = pd.factorize(vals_u, sort=False)
            code = u_code[raw_code[mask]][~junk]
        else:
            code, uniques = pd.factorize(vals.to_numpy(dtype=object), sort=False)
        uniq = pd.Series(uniques, dtype="object")
        reason = blocked_reasons(uniq, rule)
        status = np.where(reason != "", BLOCKED, USABLE).astype(np.int8)
        count = np.bincount(code, minlength=len(uniq))
        if rule.max_records_per_value is not None:
            over = (count > rule.max_records_per_value) & (status == USABLE)
            status[over] = OVERUSED
            reason[over] = f"value shared by more than {rule.max_records_per_value} records"
        recs.append(rec_idx.astype(np.int64))
        codes.append(code.astype(np.int64) + offset)
        k_rule.append(np.full(len(uniq), r_idx, dtype=np.int32))
        k_value.append(uniq.to_numpy(dtype=object))
        k_status.append(status)
        k_reason.append(reason)
        # count per key is finished below once every rule is in
        offset += len(uniq)
    if not recs:
        empty_i = np.zeros(0, dtype=np.int64)
        return KeyTable(
            empty_i,
            empty_i,
            np.zeros(0, dtype=np.int32),
            np.zeros(0, dtype=object),
            empty_i,
            np.zeros(0, dtype=np.int8),
            np.zeros(0, dtype=object),
        )
    occ_rec = np.concatenate(recs)
    occ_key = np.concatenate(codes)
    # a record can repeat a value only through a duplicated composite; keep one
    order = np.lexsort((occ_rec, occ_key))
    occ_rec, occ_key = occ_rec[order], occ_key[order]
    keep = np.ones(len(occ_rec), dtype=bool)
    keep[1:] = (occ_rec[1:] != occ_rec[:-1]) | (occ_key[1:] != occ_key[:-1])
    occ_rec, occ_key = occ_rec[keep], occ_key[keep]
    n_keys = offset
    return KeyTable(
        occ_rec=occ_rec,
        occ_key=occ_key,
        key_rule=np.concatenate(k_rule),
        key_value=np.concatenate(k_value),
        key_count=np.bincount(occ_key, minlength=n_keys),
        key_status=np.concatenate(k_status),
        key_reason=np.concatenate(k_reason),
    )


# letters NFKD does not decompose: without this "Søren" would become "s", an initial
_FOLD = str.maketrans(
    {"ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "ß": "ss", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l",
     "þ": "th", "Þ": "th", "ð": "d", "Ð": "d", "œ": "oe", "Œ": "oe", "ı": "i"}
)  # fmt: skip


def _ascii_token(value: str) -> str:
    text = unicodedata.normalize("NFKD", value.translate(_FOLD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    match = re.search(r"[a-z]+", text)
    return match.group(0) if match else ""


def name_tokens(records: pd.DataFrame) -> np.ndarray:
    """A first-name token per record (accents stripped, lower case, first word) or None.

    Computed once per unique name. Used only to tell apart people who share
    a contact point; a missing name is no evidence either way.
    """
    if "first_name" not in records.columns:
        return np.full(len(records), None, dtype=object)
    names = records["first_name"].astype("string")
    uniq = names.dropna().unique()
    table = {v: (_ascii_token(v) or None) for v in uniq}
    return names.map(table).astype(object).where(names.notna(), None).to_numpy(dtype=object)


# legal forms that say nothing about which company it is
_LEGAL_FORMS = frozenset(
    {"ab", "aktiebolag", "as", "asa", "aps", "oy", "oyj", "gmbh", "ag", "bv", "nv", "ltd",
     "limited", "plc", "inc", "llc", "corp", "co", "sa", "sarl", "srl", "spa", "hb", "kb"}
)  # fmt: skip


def _fold_words(value: str) -> str:
    """Accents folded, lower case, letters and digits only, words joined by one space."""
    text = unicodedata.normalize("NFKD", value.translate(_FOLD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.findall(r"[a-z0-9]+", text))


def _folded_column(records: pd.DataFrame, column: str, fold) -> np.ndarray:
    """``fold`` applied once per unique value of ``column`` (None when missing or empty)."""
    if column not in records.columns:
        return np.full(len(records), None, dtype=object)
    values = records[column].to_numpy(dtype=object)
    present = np.flatnonzero(pd.notna(values))
    out = np.full(len(values), None, dtype=object)
    if len(present):
        code, uniq = pd.factorize(values[present].astype(str))
        table = np.array([fold(u) or None for u in uniq], dtype=object)
        out[present] = table[code]
    return out


def surname_keys(records: pd.DataFrame) -> np.ndarray:
    """A folded last name per record (``"svensson berg"``) or None."""
    return _folded_column(records, "last_name", _fold_words)


def _birth_key(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return digits if len(digits) == 8 else ""  # YYYYMMDD; anything else says nothing


def birth_keys(records: pd.DataFrame) -> np.ndarray:
    """A birth date per record as ``YYYYMMDD`` (from ``1980-04-02``, ``19800402``) or None."""
    return _folded_column(records, "birth_date", _birth_key)


def _company_key(value: str) -> str:
    return " ".join(w for w in _fold_words(value).split() if w not in _LEGAL_FORMS)


def company_keys(records: pd.DataFrame) -> np.ndarray:
    """A folded company name per record, legal form dropped (``"acme"``), or None."""
    return _folded_column(records, "company_name", _company_key)


@lru_cache(maxsize=65536)
def surnames_compatible(a: str, b: str) -> bool:
    """Could two folded last names be one person's? (a shared word, an initial, one typo)."""
    if a == b:
        return True
    wa, wb = set(a.split()), set(b.split())
    if wa & wb:
        return True  # a double-barrelled name holds the other: "svensson berg" / "berg"
    if a.startswith(b) or b.startswith(a):
        return True  # an initial
    return min(len(a), len(b)) >= 4 and _within_one_edit(a, b)


@lru_cache(maxsize=65536)
def companies_compatible(a: str, b: str) -> bool:
    """Could two folded company names be one company? (all words of one in the other, one typo)."""
    if a == b:
        return True
    wa, wb = set(a.split()), set(b.split())
    if wa and wb and (wa <= wb or wb <= wa):
        return True  # "acme" / "acme nordic"
    return min(len(a), len(b)) >= 4 and _within_one_edit(a, b)


def names_compatible(a: str, b: str) -> bool:
    """Could two first-name tokens be the same person's? (``identity_names``: initials,
    nicknames, a typo that keeps the first letter)."""
    return first_names_compatible(a, b)


def _within_one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance <= 1 (one insert, delete, substitute or swap)."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


def mask_value(value: str | None) -> str:
    """Mask a key for display: ``j***@gmail.com``, ``+46*****12``; system ids stay readable."""
    if value is None or value is pd.NA:
        return ""
    text = str(value)
    if "|" in text:  # composite key: mask each part
        return "|".join(mask_value(p) for p in text.split("|"))
    if "@" in text:
        local, _, domain = text.rpartition("@")
        return f"{local[:1]}***@{domain}"
    digits = re.sub(r"[\s\-().]", "", text)
    if re.fullmatch(r"\+?\d{6,}", digits):
        head = digits[:3] if digits.startswith("+") else digits[:2]
        return f"{head}*****{digits[-2:]}"
    return text


_MASK_CHUNK = 65536


def mask_keys(values: np.ndarray, contact: np.ndarray | bool = True) -> np.ndarray:
    """Vectorized masking (numpy string ufuncs): emails always, phone numbers where ``contact``.

    An email keeps its first character and its domain (``j***@gmail.com``,
    also inside a composite ``j***@gmail.com|SE``); a contact value of seven
    or more characters that is no email keeps its first three and last two
    (``+46*****12``); system ids stay readable. Missing values become "".
    """
    values = np.asarray(values, dtype=object)
    if len(values) > _MASK_CHUNK:
        # numpy's fixed-width strings cost (longest value x rows): bound them by chunks
        contact_all = np.broadcast_to(np.asarray(contact, dtype=bool), values.shape)
        return np.concatenate(
            [
                mask_keys(values[i : i + _MASK_CHUNK], contact_all[i : i + _MASK_CHUNK])
                for i in range(0, len(values), _MASK_CHUNK)
            ]
        )
    out = np.where(pd.notna(values), values, "").astype(object)
    contact_all = np.broadcast_to(np.asarray(contact, dtype=bool), values.shape)
    # system ids stay as they are unless they hold an email (an Icomm UserId can)
    present = pd.notna(values) & (
        contact_all | pd.Series(out).str.contains("@", regex=False).to_numpy(dtype=bool)
    )
    if not present.any():
        return out
    txt = values[present].astype(str)
    contact_arr = contact_all[present]
    at = np.strings.find(txt, "@")
    is_email = at >= 0
    email = np.strings.add(
        np.strings.add(np.strings.slice(txt, 0, 1), "***"),
        np.strings.slice(txt, np.maximum(at, 0), None),
    )
    is_phone = contact_arr & ~is_email & (np.strings.str_len(txt) >= 7)
    phone = np.strings.add(
        np.strings.add(np.strings.slice(txt, 0, 3), "*****"), np.strings.slice(txt, -2, None)
    )
    masked = np.where(is_email, email, np.where(is_phone, phone, txt))
    out[present] = masked.astype(object)
    return out


def mask_values(values: pd.Series) -> pd.Series:
    """Mask a column of emails / phone numbers for display (see ``mask_keys``)."""
    return pd.Series(mask_keys(values.to_numpy(dtype=object), True), index=values.index)


def mask_name(token: str | None) -> str:
    return f"{token[:1]}***" if token else "?"
