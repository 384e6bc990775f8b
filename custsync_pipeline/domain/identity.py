"""Identity resolution: one person = one golden id, stable from run to run.

``resolve_identities`` turns the canonical records of every connector into an
identity map (connector, source_id -> golden_id), following the identifier
rules of the sync config (``identity.identifiers``):

- fast path, vectorized: identifier keys -> edges between records sharing a
  usable key -> connected components (``scipy.sparse.csgraph``);
- slow path (``identity_constrained``), only for the components that need it:
  a per-golden limit broken, first names that differ, a guest between several
  accounts, or a steward decision;
- names (``identity_names``): a full-name field split, nicknames, swapped names;
  a household's shared e-mail or landline links the holders whose names agree;
- probabilistic stage (``identity_match``, ``matching=``): records no key linked,
  compared on name, birth date and address (Fellegi–Sunter, blocking, rapidfuzz);
- stable ids (``identity_ids``): oldest id survives a merge, the larger part
  keeps the id in a split.

Pure: pandas/numpy/scipy only, no I/O, no dagster.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
from rapidfuzz.distance import OSA
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from custsync_pipeline.domain.hashing import row_hashes64
from custsync_pipeline.domain.identity_constrained import (
    ConstrainedInput,
    KeyGroup,
    resolve_constrained,
)
from custsync_pipeline.domain.identity_ids import (
    assign_golden_ids,
    empty_golden_ids,
    match_records,
    record_hash,
    resolve_golden_id,
    survivor_table,
)
from custsync_pipeline.domain.identity_keys import (
    OVERUSED,
    USABLE,
    KeyTable,
    birth_keys,
    build_keys,
    companies_compatible,
    company_keys,
    is_contact_rule,
    mask_keys,
    mask_value,
    name_tokens,
    names_compatible,
    surname_keys,
    surnames_compatible,
)
from custsync_pipeline.domain.identity_names import (
    WordRoles,
    fill_names,
    first_names_compatible,
    fold,
    formal_names,
    nordic_initials,
    plain,
    role_hashes,
    swap_words,
    swapped_names,
)
from custsync_pipeline.domain.plan import IdentifierRule, MatchingPlan

if TYPE_CHECKING:
    from custsync_pipeline.domain.identity_match import MatchParams

__all__ = [
    "IdentityResult",
    "resolve_identities",
    "resolve_golden_id",
    "mask_value",
    "MAP_COLUMNS",
    "LINK_COLUMNS",
    "CONFLICT_COLUMNS",
]

MAP_COLUMNS = ["connector", "source_id", "golden_id", "rule", "updated_at"]
LINK_COLUMNS = [
    "golden_id",
    "connector_a",
    "source_id_a",
    "connector_b",
    "source_id_b",
    "rule",
    "key",
]
CONFLICT_COLUMNS = [
    "conflict_id",
    "kind",
    "rule",
    "key_masked",
    "connector_a",
    "source_id_a",
    "golden_id_a",
    "connector_b",
    "source_id_b",
    "golden_id_b",
    "evidence",
]
DECISION_COLUMNS = ["decision", "connector_a", "source_id_a", "connector_b", "source_id_b"]

# A value shared by many records yields one conflict row per record up to this
# many (paired with the first holder), so a till placeholder used a thousand
# times does not flood the review queue.
CONFLICT_PAIRS_PER_KEY = 20


@dataclass
class IdentityResult:
    """What one resolution produced (see docs/identity.md for the columns).

    ``links.key`` and ``conflicts.key_masked`` hold masked keys only.
    """

    identity_map: pd.DataFrame
    golden_ids: pd.DataFrame
    links: pd.DataFrame
    conflicts: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)
    # the probabilistic stage's parameters (None when it did not run)
    match_params: MatchParams | None = None
    # per record of ``identity_map`` (same order), what reaches it (``identity_scope``):
    # bytes of 64-bit hashes, when asked for with ``with_reach``
    reach: np.ndarray | None = None
    # the first-name tokens it knew (``KnownWords``), when asked for with ``with_reach``
    known_words: np.ndarray | None = None


# record columns resolution reads besides the rules' identifier columns
_CONTEXT_COLUMNS = (
    "first_name",
    "last_name",
    "company_name",
    "full_name",
    "birth_date",
    "kind",
    "street",  # a holder's home: is a housemate in the data (_household_addresses)
    "postal_code",
    "updated_at",
)


_WORD = re.compile(r"[a-z]+")

# folded first-name token and last name per record, computed once in ``_prepare``
_TOKENS, _SURNAMES = "__first_token", "__surname"
# the words a swapped-name check counts (token / last word, whole first field / surname)
_WORD_COLUMNS = ("__w1_first", "__w1_last", "__w2_first", "__w2_last")
_INPUT = "__input"  # a hash of what resolution reads of the record, as it arrived
HEAD_TOKEN, HEAD_HOME, HEAD_WORDS, HEAD_INPUT, HEAD_BLOCKS = 0, 1, slice(2, 6), 6, 7


def reach_width(matching: MatchingPlan | None) -> int:
    """Fixed hashes per record in its reach (``_heads``)."""
    return HEAD_BLOCKS + (
        len(matching.blocking) if matching is not None and matching.enabled else 0
    )


def resolution_columns(
    rules: list[IdentifierRule], matching: MatchingPlan | None = None
) -> list[str]:
    """The record columns ``resolve_identities`` reads (load only these: memory at 1M)."""
    wanted = ["connector", "source_id"]
    extra = list(matching.comparisons) if matching is not None and matching.enabled else []
    for col in [c for r in rules for c in r.columns] + list(_CONTEXT_COLUMNS) + extra:
        if col not in wanted:
            wanted.append(col)
    return wanted


def _prepare(
    records: pd.DataFrame,
    rules: list[IdentifierRule],
    matching: MatchingPlan | None = None,
    roles: tuple[WordRoles, WordRoles] | None = None,
    input_hash: bool = False,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Only the columns resolution needs, one row per record, plus a canonical order.

    The order (by a fixed hash of connector and source id) makes every result
    independent of the order the records arrive in: position ``i`` of the
    resolution is row ``order[i]`` of the returned frame.
    """
    missing = {"connector", "source_id"} - set(records.columns)
    if missing:
        raise ValueError(f"records lack column(s) {sorted(missing)}")
    wanted = [c for c in resolution_columns(rules, matching) if c in records.columns]
    keep = (records["connector"].notna() & records["source_id"].notna()).to_numpy()
    cols = [c for c in wanted if c != "updated_at"]
    # object arrays: pandas' string dtype is several times slower to test for missing values
    recs = pd.DataFrame({c: records[c].to_numpy(dtype=object, na_value=None)[keep] for c in cols})
    if input_hash:  # before any name is split or turned round: the record as it arrived
        read = sorted(c for c in cols if c not in ("connector", "source_id"))
        try:
            hashed = row_hashes64(recs[read])
        except TypeError:  # values of mixed types: as text
            hashed = row_hashes64(recs[read].astype(str))
        recs[_INPUT] = hashed | np.uint64(1)
    # names as people compare them: a full-name field split, a name typed wrong way round
    fill_names(recs)
    tokens, surnames = name_tokens(recs), surname_keys(recs)
    one, whole = roles if roles is not None else (None, None)
    swapped = swapped_names(tokens, surnames, roles=one)
    words = [*swap_words(tokens, surnames)[1:], None, None]
    if "first_name" in recs.columns:
        # a surname of several words typed as the first name ("Carlsson-Berg" / "Ingrid")
        folded_first = _folded_first(recs["first_name"].to_numpy())
        swapped |= swapped_names(folded_first, surnames, True, roles=whole)
        words[2:] = swap_words(folded_first, surnames, True)[1:]
    # the words the swap counted, as hashes (``_heads``: the population's counts)
    for col, w, is_whole in zip(_WORD_COLUMNS, words, (False, False, True, True), strict=True):
        recs[col] = role_hashes(w, is_whole) if w is not None else np.zeros(len(recs), np.uint64)
    if swapped.any():
        first, last = recs["first_name"].to_numpy(), recs["last_name"].to_numpy()
        first[swapped], last[swapped] = last[swapped], first[swapped].copy()
        recs["first_name"], recs["last_name"] = first, last
        # the folded names of the swapped few, computed again (not the whole frame)
        few = recs.loc[swapped, ["first_name", "last_name"]]
        tokens[swapped], surnames[swapped] = name_tokens(few), surname_keys(few)
    if "first_name" in recs.columns:
        # "Ö." is Östen's, not Oskar's: the Nordic first letter kept (after the swap above)
        tokens = nordic_initials(recs["first_name"].to_numpy(dtype=object), tokens)
    # kept as columns so the de-duplication below filters them with their records
    recs[_TOKENS], recs[_SURNAMES] = tokens, surnames
    recs["connector"] = recs["connector"].astype(str).astype(object)
    recs["source_id"] = recs["source_id"].astype(str).astype(object)
    h = record_hash(recs["connector"].to_numpy(), recs["source_id"].to_numpy())
    if pd.Series(h).duplicated().any():  # the same record twice: keep its latest version
        if "updated_at" in records.columns:
            at = pd.to_datetime(records["updated_at"], utc=True, errors="coerce")[keep]
            order = np.argsort(at.to_numpy(), kind="stable")
            recs, h = recs.take(order).reset_index(drop=True), h[order]
        last = ~pd.Series(h).duplicated(keep="last").to_numpy()
        recs, h = recs[last].reset_index(drop=True), h[last]
    # a canonical order (by the fixed hash) applied to the small arrays derived from
    # ``recs`` rather than to the wide frame, which would cost a copy of every column
    order = np.argsort(h, kind="stable")
    return recs, order, h[order]


def word_hashes(words: np.ndarray) -> np.ndarray:
    """A fixed 64-bit hash per first-name token (0 for a missing one)."""
    words = np.asarray(words, dtype=object)
    out = np.zeros(len(words), dtype=np.uint64)
    has = pd.notna(words).astype(bool)
    if has.any():
        text = np.array(["w\x1f" + str(w) for w in words[has]], dtype=object)
        out[has] = pd.util.hash_array(text, categorize=False) | np.uint64(1)
    return out


class KnownWords:
    """The first-name tokens of the population: whether a word of an e-mail is someone's
    first name (households, initials). Held from the last full resolution by an
    incremental one (like the match parameters), so a change decides as a full resolution
    with the same parameters would."""

    def __init__(self, tokens: object) -> None:
        values = pd.unique(pd.Series(list(tokens), dtype=object).dropna().astype(str))
        self.tokens = frozenset(values.tolist())


@dataclass
class _Features:
    """What every stage reads of the records, in canonical order."""

    recs: pd.DataFrame
    order: np.ndarray
    rec_hash: np.ndarray
    conn: np.ndarray
    sid: np.ndarray
    rules: list[IdentifierRule]
    contact_rule: np.ndarray
    keys: KeyTable | None  # None: not worked out (``with_keys``)
    tokens: np.ndarray
    surnames: np.ndarray
    births: np.ndarray
    companies: np.ndarray
    raw_tokens: np.ndarray  # before an initial was read from the record's e-mail
    words: np.ndarray  # [n, 4] hashes of the words a swapped-name check counts
    inputs: np.ndarray | None = None  # per record, a hash of what resolution reads of it


def _features(
    records: pd.DataFrame,
    rules: list[IdentifierRule],
    golden_ids: pd.DataFrame | None,
    matching: MatchingPlan | None,
    known_words: KnownWords | None,
    roles: tuple[WordRoles, WordRoles] | None = None,
    input_hash: bool = False,
    with_keys: bool = True,
) -> _Features:
    recs, order, rec_hash = _prepare(records, rules, matching, roles, input_hash)
    n = len(recs)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    conn = recs["connector"].to_numpy(dtype=object)[order]
    sid = recs["source_id"].to_numpy(dtype=object)[order]
    if "custsync_id" in recs.columns and golden_ids is not None and len(golden_ids):
        # a golden id stamped into a target may since have been merged away: use the survivor
        survivors = survivor_table(golden_ids)
        if survivors:
            stamped = recs["custsync_id"].astype("string")
            recs["custsync_id"] = stamped.map(lambda g: survivors.get(g, g), na_action="ignore")
    rules = sorted(rules, key=lambda r: r.priority)  # stable: config order within a priority
    contact_rule = np.array([is_contact_rule(r) for r in rules], dtype=bool)
    keys = None
    if with_keys:  # the comparison fields alone (a close-match check) need no keys
        keys = build_keys(recs, rules)
        keys.occ_rec = inverse[keys.occ_rec]
        resort = np.lexsort((keys.occ_rec, keys.occ_key))
        keys.occ_rec, keys.occ_key = keys.occ_rec[resort], keys.occ_key[resort]
    tokens = recs[_TOKENS].to_numpy(dtype=object)[order]
    raw_tokens = tokens.copy()
    surnames = recs[_SURNAMES].to_numpy(dtype=object)[order]
    if "email" in recs.columns:
        _initials_named_by_email(
            tokens, surnames, recs["email"].to_numpy(dtype=object)[order], known_words
        )
    return _Features(
        recs=recs,
        order=order,
        rec_hash=rec_hash,
        conn=conn,
        sid=sid,
        rules=rules,
        contact_rule=contact_rule,
        keys=keys,
        tokens=tokens,
        surnames=surnames,
        births=birth_keys(recs)[order],
        companies=company_keys(recs)[order],
        raw_tokens=raw_tokens,
        words=np.c_[tuple(recs[c].to_numpy(dtype=np.uint64)[order] for c in _WORD_COLUMNS)],
        inputs=recs[_INPUT].to_numpy(dtype=np.uint64)[order] if input_hash else None,
    )


def _folded_first(values: np.ndarray) -> np.ndarray:
    """The whole first-name field folded (``surname_keys``' folding), once per value."""
    code, uniq = pd.factorize(values, use_na_sentinel=True)
    folded = np.array([fold(str(u)) or None for u in uniq] + [None], dtype=object)
    return folded[code]


def _star_edges(occ_rec: np.ndarray, occ_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (first holder, other holder) for occurrences sorted by key."""
    first = np.ones(len(occ_key), dtype=bool)
    first[1:] = occ_key[1:] != occ_key[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(occ_key)), 0))
    return occ_rec[start][~first], occ_rec[~first]


def _recount_contact_holders(
    keys, rules: list[IdentifierRule], contact_rule: np.ndarray, n: int
) -> None:
    """``max_records_per_value`` of a contact rule counts holders, not records.

    One person has a record in every system (and a Contact and a Lead in one):
    records a system identifier already links count as one holder, so only a
    value typed for many different people (a till placeholder) is overused.
    """
    limits = np.array(
        [
            r.max_records_per_value if (contact_rule[i] and r.max_records_per_value) else -1
            for i, r in enumerate(rules)
        ],
        dtype=np.int64,
    )
    if (limits < 0).all() or keys.n_keys == 0:
        return
    occ_rule = keys.key_rule[keys.occ_key]
    strong = (keys.key_status[keys.occ_key] == USABLE) & ~contact_rule[occ_rule]
    strong &= keys.key_count[keys.occ_key] >= 2
    a, b = _star_edges(keys.occ_rec[strong], keys.occ_key[strong])
    holder = _components(n, a, b)
    key_limit = limits[keys.key_rule]
    counted = key_limit[keys.occ_key] >= 0
    holders = _count_distinct(keys.occ_key[counted], holder[keys.occ_rec[counted]], keys.n_keys)
    judged = key_limit >= 0
    was = judged & (keys.key_status == OVERUSED)
    keys.key_status[was] = USABLE
    keys.key_reason[was] = ""
    over = judged & (keys.key_status == USABLE) & (holders > key_limit)
    keys.key_status[over] = OVERUSED
    keys.key_reason[over] = [
        f"value shared by more than {lim} different holders" for lim in key_limit[over]
    ]


def _name_gated_keys(
    keys: KeyTable, contact_rule: np.ndarray, tokens: np.ndarray, surnames: np.ndarray
) -> KeyTable:
    """A contact value held by too many people still links the holders whose names agree.

    A family e-mail of nine, a shared landline: refused as one key, it becomes
    one key per (last name, first initial) among its holders, so each person's
    own records link while the others stay apart. Holders without a full name
    get none (a guest on a family e-mail is ambiguous). Names that differ inside
    one such key (a nickname, two namesakes) go through the slow path's checks.
    """
    over = (keys.key_status == OVERUSED) & contact_rule[keys.key_rule]
    sel = over[keys.occ_key]
    if not sel.any():
        return keys
    rec, key = keys.occ_rec[sel], keys.occ_key[sel]
    sn, tk = surnames[rec], tokens[rec]
    ok = (pd.notna(sn) & pd.notna(tk)).astype(bool)
    rec, key, sn, tk = rec[ok], key[ok], sn[ok], tk[ok]
    if len(rec) == 0:
        return keys
    last_word = pd.Series(sn, dtype=object).str.rsplit(" ", n=1).str[-1].to_numpy(dtype=object)
    # only a household's value: most of its holders share one last name. A placeholder
    # typed at a till or a role address has holders of every name: it stays refused
    by_name = pd.DataFrame({"key": key, "name": last_word})
    per_name = by_name.groupby(["key", "name"], sort=False).size()
    top_share = per_name.groupby(level="key").max() / per_name.groupby(level="key").sum()
    family = by_name["key"].map(top_share >= 0.5).to_numpy(dtype=bool)
    rec, key, tk, last_word = rec[family], key[family], tk[family], last_word[family]
    if len(rec) == 0:
        return keys
    # one key per first initial, and per initial of the formal name behind a nickname
    # (Becky with Rebecka, Lisa with Elisabeth: one person's records on the shared value)
    code, uniq = pd.factorize(tk)
    initials = [_key_initials(t) for t in uniq.tolist()]
    per_name = np.array([len(i) for i in initials], dtype=np.int64)
    n_init = per_name[code]
    if (n_init > 1).any():
        rep = np.repeat(np.arange(len(rec)), n_init)
        rec, key, last_word = rec[rep], key[rep], last_word[rep]
        # each row's initials, in order: its name's run of the flat list (no row loop)
        flat = np.array([i for name in initials for i in name], dtype=object)
        first = np.cumsum(per_name) - per_name
        within = np.arange(len(rep)) - np.repeat(np.cumsum(n_init) - n_init, n_init)
        initial = flat[np.repeat(first[code], n_init) + within]
    else:
        initial = np.array([i[0] for i in initials], dtype=object)[code]
    sig = last_word + "|" + initial
    sig_code, _ = pd.factorize(sig)
    code, uniq = pd.factorize(key.astype(np.int64) * (int(sig_code.max()) + 1) + sig_code)
    count = np.bincount(code, minlength=len(uniq))
    first_key = np.zeros(len(uniq), dtype=np.int64)
    first_key[code] = key
    new_id = keys.n_keys + code
    # the new key ids follow every old one: sorting the new occurrences keeps the
    # table sorted by (key, record) without re-sorting millions of old ones
    order = np.lexsort((rec, new_id))
    return KeyTable(
        occ_rec=np.concatenate([keys.occ_rec, rec[order]]),
        occ_key=np.concatenate([keys.occ_key, new_id[order]]),
        key_rule=np.concatenate([keys.key_rule, keys.key_rule[first_key]]),
        key_value=np.concatenate([keys.key_value, keys.key_value[first_key]]),
        key_count=np.concatenate([keys.key_count, count]),
        key_status=np.concatenate([keys.key_status, np.full(len(uniq), USABLE, dtype=np.int8)]),
        key_reason=np.concatenate([keys.key_reason, np.full(len(uniq), "", dtype=object)]),
    )


def _key_initials(token: str) -> list[str]:
    """The initials a first-name token keys under on a household's shared value: its own
    and its formal names' (Becky: r). A name written with a Nordic letter (``östen``) keys
    under that letter only: "Ö." joins Östen, a plain "O." (Oskar's, or Östen's typed
    without the dots: no telling) does not."""
    return sorted({token[:1], *(f[:1] for f in formal_names(plain(token)))})


def _last_words(values: np.ndarray) -> np.ndarray:
    """The last word of each folded surname (``"svensson berg"`` -> ``"berg"``), or None."""
    code, uniq = pd.factorize(values, use_na_sentinel=True)
    last = np.array([str(u).rsplit(" ", 1)[-1] for u in uniq] + [None], dtype=object)
    return last[code]


def _address_names(word: str, token: str) -> bool:
    """Does a word of an e-mail's local part name a holder of that first name?

    As first names agree (``first_names_compatible``), or one typo apart in names of
    four letters or more: a clerk's typo in the name (``Ages`` for the ``agnes.berg@``
    its holder typed herself) does not make the address someone else's.
    """
    if first_names_compatible(word, token):
        return True
    token = plain(token)  # an address is ASCII
    return (
        min(len(word), len(token)) >= 4
        and word[0] == token[0]
        and OSA.distance(word, token, score_cutoff=1) <= 1
    )


def _household_addresses(
    keys: KeyTable,
    rules: list[IdentifierRule],
    tokens: np.ndarray,
    surnames: np.ndarray,
    has_name: np.ndarray,
    has_surname: np.ndarray,
    nameless: np.ndarray,
    street: np.ndarray | None,
    postal: np.ndarray | None,
    known_words: KnownWords | None = None,
) -> None:
    """An e-mail that names none of its named holders but another of the household.

    A record without a name (a guest checkout) on an e-mail with one named holder
    joins that holder. When the address does not name the holder (its local part
    holds none of the holder's first names) and names the family (``familjen.berg@``,
    ``bergs@``) or another first name of the data (``anna.berg@`` held by Erik Berg),
    or names nobody while someone of the holder's surname at the holder's street and
    postal code has a first name the holder's do not agree with (a housemate), it is
    a household's address: the guest could be any of them. The key is then refused
    as one key (the named holders still link by name, ``_name_gated_keys``) and the
    guest is left apart.
    """
    email_rule = np.array([r.columns[0] == "email" for r in rules], dtype=bool)
    shared = (keys.key_status == USABLE) & (keys.key_count >= 2) & email_rule[keys.key_rule]
    if not shared.any():
        return
    sel = shared[keys.occ_key]
    rec, key = keys.occ_rec[sel], keys.occ_key[sel]
    has_token = has_name[rec]
    guest = nameless[rec]
    n_keys = keys.n_keys
    wanted = (np.bincount(key[guest], minlength=n_keys) > 0) & (
        np.bincount(key[has_token], minlength=n_keys) > 0
    )
    h = wanted[key] & has_token
    if not h.any():
        return
    h_rec, h_key, h_tok = rec[h], key[h], tokens[rec[h]]
    uk, k_inv = np.unique(h_key, return_inverse=True)
    locals_ = [str(v).split("@", 1)[0] for v in keys.key_value[uk]]
    # e-mails are stored lower case: only a non-ASCII local part needs folding
    words = [_WORD.findall(x if x.isascii() else fold(x)) for x in locals_]
    holder_toks: dict[int, set] = {}
    holder_sns: dict[int, set] = {}
    sn = _last_words(surnames[h_rec])
    for i, t, s in zip(k_inv.tolist(), h_tok.tolist(), sn.tolist(), strict=True):
        holder_toks.setdefault(i, set()).add(t)
        if isinstance(s, str):
            holder_sns.setdefault(i, set()).update((s, s + "s"))
    # a local part written in one word ("sorenolsson"): the surname split off its end or start
    for i, ws in enumerate(words):
        for s in holder_sns.get(i, ()):
            if len(s) < 3 or s.endswith("s") and s[:-1] in holder_sns[i]:
                continue  # the plural form: the surname itself covers it
            for w in list(ws):
                if len(w) > len(s) and w.endswith(s):
                    ws += [w[: -len(s)], s]
                elif len(w) > len(s) and w.startswith(s):
                    ws += [s, w[len(s) :]]
    asked = {w for ws in words for w in ws if len(w) >= 3}
    if known_words is None:
        known = {plain(t) for t in pd.unique(tokens[has_name])} & asked if asked else set()
    else:  # the population's first names, when only part of it is resolved here
        known = {plain(t) for t in known_words.tokens} & asked
    household = np.zeros(len(uk), dtype=bool)
    housemate_wanted = np.zeros(len(uk), dtype=bool)
    for i, ws in enumerate(words):
        mine = holder_toks.get(i, set())
        if any(_address_names(w, t) for w in ws for t in mine):
            continue  # the address names its holder
        # it names the family (``familjen.berg``, ``bergs``) or another first name
        named_other = any(w in holder_sns.get(i, ()) for w in ws)
        named_other |= any(len(w) >= 3 and w in known for w in ws)
        household[i] = named_other
        housemate_wanted[i] = not named_other
    if street is not None and postal is not None and housemate_wanted.any():
        # someone of the holder's surname at the holder's home whose first name disagrees
        want = housemate_wanted[k_inv] & pd.notna(sn).astype(bool)
        hold = pd.DataFrame(
            {
                "k": k_inv[want],
                "sn": sn[want],
                "t": h_tok[want],
                "st": street[h_rec[want]],
                "pc": postal[h_rec[want]],
            }
        ).dropna()
        if len(hold):
            near = np.flatnonzero(has_name & has_surname)
            near = near[pd.Series(postal[near]).isin(hold["pc"].unique()).to_numpy()]
            near_sn = _last_words(surnames[near])
            same = pd.Series(near_sn).isin(hold["sn"].unique()).to_numpy()
            same &= pd.notna(street[near]).astype(bool)
            near = near[same]
            mates = pd.DataFrame(
                {
                    "sn": near_sn[same],
                    "st": street[near],
                    "pc": postal[near],
                    "o": tokens[near],
                }
            ).drop_duplicates()
            for frame in (hold, mates):  # each street folded once
                code, uniq_st = pd.factorize(frame["st"])
                frame["st"] = np.array([fold(str(v)) for v in uniq_st], dtype=object)[code]
            pairs = hold.merge(mates, on=["sn", "st", "pc"])
            if len(pairs):
                uniq = pairs[["t", "o"]].drop_duplicates()
                uniq["agree"] = [
                    first_names_compatible(a, b) for a, b in zip(uniq["t"], uniq["o"], strict=True)
                ]
                pairs = pairs.merge(uniq, on=["t", "o"])
                # a housemate: a first name that agrees with none of the holder's
                hold_agree = pairs.groupby(["k", "o"])["agree"].any()
                mate_k = hold_agree[~hold_agree].index.get_level_values("k").unique()
                household[np.asarray(mate_k, dtype=np.int64)] = True
    if not household.any():
        return
    k = uk[household]
    keys.key_status[k] = OVERUSED
    keys.key_reason[k] = "household address: names none of its named holders, and a housemate"


def _household_keys(
    keys: KeyTable, contact_rule: np.ndarray, n_plain: int, tokens: np.ndarray
) -> np.ndarray:
    """Which keys are a household's shared contact value (bool per key id): a big
    household's per-name key (``_name_gated_keys``, from ``n_plain`` on), or a usable
    e-mail or phone whose holders' full first names could not all be one person's."""
    out = np.zeros(keys.n_keys, dtype=bool)
    out[n_plain:] = True
    usable = (keys.key_status == USABLE) & (keys.key_count >= 2) & contact_rule[keys.key_rule]
    usable[n_plain:] = False
    sel = usable[keys.occ_key]
    code, uniq = pd.factorize(tokens, use_na_sentinel=True)
    full = np.r_[np.array([len(u) > 1 for u in uniq], dtype=bool), False][code]
    sel &= full[keys.occ_rec]
    if not sel.any():
        return out
    # most shared values are one person's, one name: only values holding two names are
    # checked (occurrences are sorted by key: each key's run of name codes, min and max)
    o_key, o_code = keys.occ_key[sel], code[keys.occ_rec[sel]]
    start = np.flatnonzero(np.r_[True, o_key[1:] != o_key[:-1]])
    varied = np.minimum.reduceat(o_code, start) != np.maximum.reduceat(o_code, start)
    two = np.repeat(varied, np.diff(np.r_[start, len(o_key)]))
    if two.any():
        out |= _names_disagree(o_key[two], uniq[o_code[two]], keys.n_keys)
    return out


def _ambiguous_initials(
    keys: KeyTable,
    household: np.ndarray,
    tokens: np.ndarray,
    surnames: np.ndarray,
    phones: np.ndarray | None,
    street: np.ndarray | None,
    postal: np.ndarray | None,
) -> KeyTable:
    """A record known only by an initial holds a household's shared e-mail or phone for
    no one in particular unless the household shows one person of that initial.

    ``E. Forsberg`` on ``familjen.forsberg@``, where Edvard is the only full name of an E
    among the holders, stays on the value (and joins Edvard) only when

    - nobody else of an E name lives there: no record of the surname at the initial
      record's street and postal code names someone whose first name disagrees with
      Edvard's (Elisabeth, known only from the ERP, at the family's address), and
    - nothing the record carries says otherwise: where it and the holder both have a
      street and postal code they are the same, or a phone of theirs is.

    Otherwise the occurrence is taken off the value: the record stays apart, or links by
    a key of its own. Several full names of the initial on the value (Edvard and Ebba)
    are left to the slow path, which keeps such a record apart already. A person's own
    value (its full-name holders could all be one person) is not touched.
    ``household``: per key id (``_household_keys``). Returns the key table without the
    occurrences taken off.
    """
    usable = (keys.key_status == USABLE) & (keys.key_count >= 2) & household
    sel = usable[keys.occ_key]
    if not sel.any():
        return keys
    rec, key = keys.occ_rec[sel], keys.occ_key[sel]
    tk = tokens[rec]
    one = pd.Series(tk, dtype=object).str.len().eq(1).to_numpy(dtype=bool)
    if not one.any():
        return keys
    wanted = np.zeros(keys.n_keys, dtype=bool)
    wanted[key[one]] = True
    on = wanted[key] & pd.notna(tk).astype(bool)  # the values an initial holds, whole
    rec, key, tk = rec[on], key[on], tk[on]
    sn = _last_words(surnames[rec])
    # street folded and postal code of these few records (and of their housemates below)
    none = np.full(len(rec), None, dtype=object)
    st = _folded_first(street[rec]) if street is not None else none
    pc = postal[rec] if postal is not None else none
    ph = phones[rec] if phones is not None else none
    # the full-name holders of each value by surname and initial, and where they live
    holders: dict[tuple[int, str, str], set[str]] = {}
    homes: dict[tuple[int, str, str], list[tuple]] = {}
    for j, (k, t, s) in enumerate(zip(key.tolist(), tk.tolist(), sn.tolist(), strict=True)):
        if len(t) < 2 or not isinstance(s, str):
            continue
        for i in _key_initials(t):
            holders.setdefault((k, s, i), set()).add(t)
            homes.setdefault((k, s, i), []).append((st[j], pc[j], ph[j]))
    drop = np.zeros(len(rec), dtype=bool)
    # (position, (surname, street, postal code), initial, the holder's name)
    todo: list[tuple[int, tuple, str, str]] = []
    for j in np.flatnonzero(pd.Series(tk, dtype=object).str.len().eq(1).to_numpy(dtype=bool)):
        k, t, s = int(key[j]), str(tk[j]), sn[j]
        names = holders.get((k, s, t), set()) if isinstance(s, str) else set()
        if not names or not all(first_names_compatible(a, b) for a in names for b in names):
            continue  # no one of the initial, or several: the slow path decides
        found = homes[(k, s, t)]
        home = (st[j], pc[j]) if pd.notna(st[j]) and pd.notna(pc[j]) else None
        same_phone = pd.notna(ph[j]) and any(ph[j] == h[2] for h in found)
        elsewhere = home is not None and all(
            pd.notna(h[0]) and pd.notna(h[1]) and home != (h[0], h[1]) for h in found
        )
        if elsewhere and not same_phone:
            drop[j] = True  # the record lives elsewhere: a relative on the family e-mail
        elif home is not None:
            todo.append((j, (s, *home), t, min(names)))
    if todo and street is not None and postal is not None:
        # housemates: everyone of the surname at the initial record's street and postal code
        want = {w for _, w, _, _ in todo}
        near = np.flatnonzero(
            pd.Series(postal, dtype=object).isin({w[2] for w in want}).to_numpy(dtype=bool)
        )
        near = near[pd.notna(street[near]).astype(bool) & pd.notna(tokens[near]).astype(bool)]
        mates: dict[tuple, set[str]] = {}
        for w, other in zip(
            zip(
                _last_words(surnames[near]).tolist(),
                _folded_first(street[near]).tolist(),
                postal[near].tolist(),
                strict=True,
            ),
            tokens[near].tolist(),
            strict=True,
        ):
            if w in want and len(other) > 1:
                mates.setdefault(w, set()).add(other)
        for j, w, t, name in todo:
            if any(
                t in _key_initials(other) and not first_names_compatible(other, name)
                for other in mates.get(w, ())
            ):
                drop[j] = True  # Elisabeth lives there too
    if not drop.any():
        return keys
    gone = np.zeros(len(keys.occ_rec), dtype=bool)
    gone[np.flatnonzero(sel)[on][drop]] = True
    keys.occ_rec, keys.occ_key = keys.occ_rec[~gone], keys.occ_key[~gone]
    keys.key_count = np.bincount(keys.occ_key, minlength=keys.n_keys)
    return keys


def _family_emails(
    fields: dict, keys: KeyTable, rules: list[IdentifierRule], household: np.ndarray
) -> np.ndarray | None:
    """Per record, the code (in ``fields["email"]``) of the household's shared e-mail it
    holds, -1 for none (``_household_keys``); None without an e-mail field."""
    if "email" not in fields:
        return None
    code, uniq = fields["email"]
    email_rule = np.array([r.columns[0] == "email" for r in rules], dtype=bool)
    values = set(keys.key_value[household & email_rule[keys.key_rule]].tolist())
    is_family = np.r_[pd.Series(uniq, dtype=object).isin(values).to_numpy(dtype=bool), False]
    return np.where(is_family[code], code, -1)


def _mask_noise_contacts(
    fields: dict,
    keys: KeyTable,
    rules: list[IdentifierRule],
    contact_rule: np.ndarray,
    n_plain: int,
) -> None:
    """A contact value the rules refuse as no one's own is no evidence for the probabilistic
    stage either (in place on its coded ``fields``).

    A blocked value (``noreply@``, ``+46000000``) or one shared by holders of all sorts of
    names (a till placeholder phone, a role address ``order@shop``) would otherwise count
    as an exact e-mail or phone match between strangers, and as "a contact point of its
    own" when a record's names are compared with another's. A household's shared value
    (its holders mostly of one surname, linked by name: the per-name keys from key id
    ``n_plain`` on, ``_name_gated_keys``) stays: it says where someone lives.
    """
    refused = np.flatnonzero(
        contact_rule[keys.key_rule[:n_plain]] & (keys.key_status[:n_plain] != USABLE)
    )
    if len(refused) == 0:
        return
    # the few refused values and the few households' values, compared as (rule, value)
    household = set(
        zip(keys.key_rule[n_plain:].tolist(), keys.key_value[n_plain:].tolist(), strict=True)
    )
    noise = np.zeros(keys.n_keys, dtype=bool)
    noise[refused] = [
        (r, v) not in household
        for r, v in zip(
            keys.key_rule[refused].tolist(), keys.key_value[refused].tolist(), strict=True
        )
    ]
    sel = noise[keys.occ_key]
    if not sel.any():
        return
    rec, rule = keys.occ_rec[sel], keys.key_rule[keys.occ_key[sel]]
    for r_idx in np.unique(rule).tolist():
        column = rules[r_idx].columns[0]
        if column in fields:
            code, uniq = fields[column]
            code = code.copy()
            code[rec[rule == r_idx]] = -1
            fields[column] = (code, uniq)


def _initials_named_by_email(
    tokens: np.ndarray,
    surnames: np.ndarray,
    emails: np.ndarray,
    known_words: KnownWords | None = None,
) -> None:
    """A first name known only by its initial, read from the record's own e-mail (in place).

    ``A. Hedlund`` on ``astrid.hedlund7@``: the local part holds the surname and exactly one
    first name of the data with that initial, so the record is Astrid's — not a rival to
    Albin at the same address, nor a partner. An address naming no one (``familjen.berg@``,
    ``bergs@``) or two first names of the initial leaves the initial as it is.
    """
    one = np.flatnonzero(
        (pd.Series(tokens, dtype=object).str.len() == 1).to_numpy(dtype=bool)
        & pd.notna(emails).astype(bool)
        & pd.notna(surnames).astype(bool)
    )
    if len(one) == 0:
        return
    if known_words is None:
        whole = tokens[pd.notna(tokens).astype(bool)]
        names = pd.unique(whole[pd.Series(whole, dtype=object).str.len().to_numpy() > 2])
    else:  # the population's first names, when only part of it is resolved here
        names = [t for t in known_words.tokens if len(t) > 2]
    # the names of the data as an address writes them (ASCII: ``östen`` is ``osten``)
    known: dict[str, set[str]] = {}
    for t in names:
        known.setdefault(plain(t), set()).add(t)
    for i, email, surname in zip(
        one.tolist(), emails[one].tolist(), surnames[one].tolist(), strict=True
    ):
        local = str(email).split("@", 1)[0]
        words = _WORD.findall(local if local.isascii() else fold(local))
        if str(surname).rsplit(" ", 1)[-1] not in words:
            continue  # the address does not name this family: no one's in particular
        # a name of that initial: "ö" only a name written with Ö, "o" either
        named = {
            t
            for w in words
            for t in known.get(w, ())
            if t[:1] == tokens[i] or plain(t[:1]) == tokens[i]
        }
        if len(named) == 1:
            tokens[i] = named.pop()


def _late_guests(
    keys: KeyTable, contact_rule: np.ndarray, named: np.ndarray, cluster: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nameless clusters (guest checkouts) that now point to exactly one named cluster.

    The rules leave a guest apart when its e-mail's named holders are several clusters;
    when a later stage has joined them into one, every usable contact key the guest
    holds points to that one cluster and the guest follows it (the rules' own guest
    step, run again on the final clusters). Returns the new cluster labels and the
    links (guest record, holder record, key id).
    """
    none = np.zeros(0, dtype=np.int64)
    n_c = int(cluster.max()) + 1 if len(cluster) else 0
    named_c = np.zeros(n_c, dtype=bool)
    named_c[cluster[named]] = True
    occ = ((keys.key_status == USABLE) & contact_rule[keys.key_rule])[keys.occ_key]
    rec, key = keys.occ_rec[occ], keys.occ_key[occ]
    c = cluster[rec]
    guest = ~named_c[c]
    if not guest.any():
        return cluster, none, none, none
    # only the keys some guest holds are read (not every contact key of the data)
    asked = np.zeros(keys.n_keys, dtype=bool)
    asked[key[guest]] = True
    mine = ~guest & asked[key]
    held = pd.DataFrame({"k": key[mine], "c": c[mine], "r": rec[mine]})
    held = held.drop_duplicates(["k", "c"])  # one holder record per key and cluster
    asks = pd.DataFrame({"k": key[guest], "g": c[guest], "gr": rec[guest]})
    asks = asks.drop_duplicates(["g", "k"])
    # every key the guest cluster holds must have named holders, all in one cluster
    per_key = held.groupby("k")["c"].nunique()
    asks["n"] = asks["k"].map(per_key).fillna(0).to_numpy()
    ok = (asks["n"] == 1).groupby(asks["g"]).all()
    asks = asks[asks["g"].map(ok).to_numpy(dtype=bool)]
    if asks.empty:
        return cluster, none, none, none
    pairs = asks.merge(held, on="k")
    target = pairs.groupby("g")["c"].nunique()
    pairs = pairs[pairs["g"].map(target).to_numpy() == 1]
    pairs = pairs.sort_values(["g", "k", "gr"]).drop_duplicates("g")
    if pairs.empty:
        return cluster, none, none, none
    new = np.arange(n_c, dtype=np.int64)
    new[pairs["g"].to_numpy(dtype=np.int64)] = pairs["c"].to_numpy(dtype=np.int64)
    _, out = np.unique(new[cluster], return_inverse=True)
    return (
        out,
        pairs["gr"].to_numpy(dtype=np.int64),
        pairs["r"].to_numpy(dtype=np.int64),
        pairs["k"].to_numpy(dtype=np.int64),
    )


def _masked_link_keys(keys, link_k: np.ndarray, contact_rule: np.ndarray) -> np.ndarray:
    """Masked key text per link, masking each distinct key once ("" for steward links)."""
    out = np.full(len(link_k), "", dtype=object)
    has = link_k >= 0
    if not has.any():
        return out
    uniq, inverse = np.unique(link_k[has], return_inverse=True)
    masked = mask_keys(keys.key_value[uniq], contact_rule[keys.key_rule[uniq]])
    out[has] = masked[inverse]
    return out


def _kinds(recs: pd.DataFrame) -> np.ndarray:
    """``person`` / ``company`` per record (None when unknown), once per distinct value.

    An unknown kind is inferred: a person's name makes a person, a company
    name alone a company.
    """
    n = len(recs)
    out = np.full(n, None, dtype=object)
    if "kind" in recs.columns:
        code, uniq = pd.factorize(recs["kind"].to_numpy(dtype=object))
        table = np.array(
            [
                k if k in ("person", "company") else None
                for k in (str(u).strip().lower() for u in uniq)
            ]
            + [None],
            dtype=object,
        )
        out = table[code]  # code -1 (missing) picks the trailing None
    unknown = pd.isna(out)
    person = np.zeros(n, dtype=bool)
    for col in ("first_name", "last_name"):
        if col in recs.columns:
            person |= pd.notna(recs[col].to_numpy(dtype=object))
    out[unknown & person] = "person"
    if "company_name" in recs.columns:
        company = pd.notna(recs["company_name"].to_numpy(dtype=object))
        out[unknown & ~person & company] = "company"
    return out


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels


def _count_distinct(group: np.ndarray, value: np.ndarray, n_groups: int) -> np.ndarray:
    """Number of distinct ``value`` per ``group`` (both non-negative ints)."""
    if len(group) == 0:
        return np.zeros(n_groups, dtype=np.int64)
    width = int(value.max()) + 1
    # pd.unique hashes int64 in one pass (numpy's unique sorts or is slower here)
    pairs = pd.unique(group.astype(np.int64) * width + value.astype(np.int64))
    return np.bincount(pairs // width, minlength=n_groups)


def _names_disagree(
    group: np.ndarray, tokens: np.ndarray, n_groups: int, compatible=names_compatible
) -> np.ndarray:
    """Groups holding names (first, last or company) that could not all be one party's.

    Two distinct names are checked with ``compatible`` (a typo, an initial);
    three or more always go to the slow path.
    """
    codes, uniques = pd.factorize(tokens)
    width = len(uniques)
    pairs = np.unique(group.astype(np.int64) * width + codes)
    g, c = pairs // width, pairs % width
    count = np.bincount(g, minlength=n_groups)
    out = count > 2
    two = count[g] == 2
    g2, c2 = g[two], c[two]
    first = np.ones(len(g2), dtype=bool)
    first[1:] = g2[1:] != g2[:-1]
    a, b, grp = c2[first], c2[~first], g2[first]
    if len(grp):
        # the name check once per distinct pair of names, broadcast to the groups
        pair_index, pair_codes = pd.factorize(a * width + b)
        verdict = np.fromiter(
            (compatible(str(uniques[p // width]), str(uniques[p % width])) for p in pair_codes),
            dtype=bool,
            count=len(pair_codes),
        )
        out[grp[~verdict[pair_index]]] = True
    return out


def _decision_pairs(
    decisions: pd.DataFrame | None, conn: np.ndarray, sid: np.ndarray
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """(must-link pairs, cannot-link pairs, decisions waiting for a record that is absent)."""
    if decisions is None or len(decisions) == 0:
        return [], [], 0
    index = pd.Series(
        np.arange(len(conn)),
        index=pd.MultiIndex.from_arrays([conn, sid]),
    )
    must: list[tuple[int, int]] = []
    cannot: list[tuple[int, int]] = []
    waiting = 0
    for row in decisions[DECISION_COLUMNS].itertuples(index=False):  # few rows: stewards' hands
        a = index.get((str(row.connector_a), str(row.source_id_a)))
        b = index.get((str(row.connector_b), str(row.source_id_b)))
        if a is None or b is None or a == b:
            waiting += 1  # a record that is gone: the decision waits until it comes back
            continue
        (must if row.decision == "must_link" else cannot).append((int(a), int(b)))
    return must, cannot, waiting


def resolve_identities(
    records: pd.DataFrame,
    rules: list[IdentifierRule],
    prior_map: pd.DataFrame | None = None,
    golden_ids: pd.DataFrame | None = None,
    decisions: pd.DataFrame | None = None,
    now: pd.Timestamp | None = None,
    matching: MatchingPlan | None = None,
    match_params: MatchParams | None = None,
    known_words: KnownWords | None = None,
    with_reach: bool = False,
    oversized_blocks: np.ndarray | None = None,
    word_roles: tuple[WordRoles, WordRoles] | None = None,
) -> IdentityResult:
    """Resolve canonical ``records`` of every connector into stable golden ids.

    ``records`` carries normalized ``email``/``phone`` and the identifier
    columns the rules name; ``prior_map`` (connector, source_id, golden_id
    [, updated_at]) and ``golden_ids`` come from the state DB; ``decisions``
    are steward rows (decision, connector_a, source_id_a, connector_b,
    source_id_b) with decision ``must_link`` / ``cannot_link``.

    ``match_params``, ``known_words``, ``oversized_blocks`` and ``word_roles`` come
    from the whole population when ``records`` is only part of it (``identity_scope``):
    the probabilistic stage's parameters, the first names an e-mail may name, the
    hashes (``block_hashes``) of the blocks too big to pair in, and how often each word
    is a first and a last name (two passes: ``swapped_names``).
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if now.tzinfo is None:
        now = now.tz_localize("UTC")
    f = _features(records, rules, golden_ids, matching, known_words, word_roles, with_reach)
    recs, order, rec_hash, conn, sid = f.recs, f.order, f.rec_hash, f.conn, f.sid
    rules, contact_rule, keys = f.rules, f.contact_rule, f.keys
    tokens, surnames, births, companies = f.tokens, f.surnames, f.births, f.companies
    n = len(recs)
    key_hashes = _key_hashes(keys, rules) if with_reach else None
    _recount_contact_holders(keys, rules, contact_rule, n)
    has_name = pd.notna(tokens).astype(bool)
    has_surname = pd.notna(surnames).astype(bool)
    has_company = pd.notna(companies).astype(bool)
    _household_addresses(
        keys,
        rules,
        tokens,
        surnames,
        has_name,
        has_surname,
        ~(has_name | has_surname | has_company),
        *(
            recs[c].to_numpy(dtype=object)[order] if c in recs.columns else None
            for c in ("street", "postal_code")
        ),
        known_words,
    )
    n_plain = keys.n_keys  # keys from here on are a household's per-name keys
    keys = _name_gated_keys(keys, contact_rule, tokens, surnames)
    household = _household_keys(keys, contact_rule, n_plain, tokens)
    keys = _ambiguous_initials(
        keys,
        household,
        tokens,
        surnames,
        *(
            recs[c].to_numpy(dtype=object)[order] if c in recs.columns else None
            for c in ("phone", "street", "postal_code")
        ),
    )

    # --- fast path: usable shared keys -> star edges -> components
    usable = keys.key_status == USABLE
    shared = keys.key_count >= 2
    link_key = usable & shared
    sel = link_key[keys.occ_key]
    l_rec, l_key = keys.occ_rec[sel], keys.occ_key[sel]
    first_of_key = np.ones(len(l_key), dtype=bool)
    first_of_key[1:] = l_key[1:] != l_key[:-1]
    hub = np.full(keys.n_keys, -1, dtype=np.int64)
    hub[l_key[first_of_key]] = l_rec[first_of_key]
    spoke = ~first_of_key
    e_a, e_b, e_key = hub[l_key[spoke]], l_rec[spoke], l_key[spoke]

    must, cannot, decisions_waiting = _decision_pairs(decisions, conn, sid)
    m_a = np.array([p[0] for p in must], dtype=np.int64)
    m_b = np.array([p[1] for p in must], dtype=np.int64)
    labels = _components(n, np.concatenate([e_a, m_a]), np.concatenate([e_b, m_b]))
    n_comp = int(labels.max()) + 1 if n else 0
    comp_size = np.bincount(labels, minlength=n_comp)

    # --- which components need the constrained slow path (and why, for metadata)
    flag = np.zeros(n_comp, dtype=bool)
    reasons: dict[str, np.ndarray] = {}
    multi = comp_size > 1
    u_occ = usable[keys.occ_key]
    occ_rule = keys.key_rule[keys.occ_key]
    for r_idx, rule in enumerate(rules):
        # a limit broken, or two values of a contact point (the contact-mismatch check)
        limit = 1 if contact_rule[r_idx] else rule.max_per_golden
        if rule.max_per_golden is not None and limit is not None:
            limit = min(limit, rule.max_per_golden)
        if limit is None:
            continue
        s = u_occ & (occ_rule == r_idx)
        distinct = _count_distinct(labels[keys.occ_rec[s]], keys.occ_key[s], n_comp)
        reasons[f"values_{rule.name}"] = distinct > limit
    if has_name.any():
        reasons["names"] = _names_disagree(labels[has_name], tokens[has_name], n_comp)
    has_birth = pd.notna(births).astype(bool)
    if has_birth.any():
        codes, _ = pd.factorize(births[has_birth])
        reasons["birth_dates"] = _count_distinct(labels[has_birth], codes, n_comp) > 1
    for label, values, has, compat in (
        ("surnames", surnames, has_surname, surnames_compatible),
        ("companies", companies, has_company, companies_compatible),
    ):
        if has.any():
            reasons[label] = _names_disagree(labels[has], values[has], n_comp, compat)
    kinds = _kinds(recs)[order]
    has_kind = pd.notna(kinds).astype(bool)
    if has_kind.any():
        codes, _ = pd.factorize(kinds[has_kind])
        reasons["kinds"] = _count_distinct(labels[has_kind], codes, n_comp) > 1
    decided = np.zeros(n_comp, dtype=bool)
    for a, b in must + cannot:
        decided[labels[a]] = True
        decided[labels[b]] = True
    reasons["steward"] = decided
    # a nameless record (a guest checkout) between two named clusters must choose
    named = has_name
    weak_comp = np.zeros(n_comp, dtype=bool)
    weak_comp[labels[~named]] = True
    weak_comp &= multi
    if weak_comp.any():
        both = named[e_a] & named[e_b]
        named_labels = _components(n, e_a[both], e_b[both])
        sel_named = named & weak_comp[labels]
        n_named = _count_distinct(labels[sel_named], named_labels[sel_named], n_comp)
        reasons["nameless_between_named"] = weak_comp & (n_named >= 2)
    for why in reasons.values():
        flag |= why
    flag &= multi

    final = labels.astype(np.int64)
    rec_flag = flag[labels]
    slow_links: list[tuple[int, int, str, int]] = []
    slow_conflicts: list[tuple[str, str, int, int, int, str]] = []
    slow_idx = np.flatnonzero(rec_flag)
    if len(slow_idx):
        out, local_of = _run_slow_path(
            slow_idx,
            keys,
            link_key,
            rules,
            contact_rule,
            tokens,
            must,
            cannot,
            kinds,
            surnames,
            companies,
            births,
        )
        final[slow_idx] = n_comp + np.asarray(out.labels, dtype=np.int64)
        slow_links = [(int(slow_idx[a]), int(slow_idx[b]), r, k) for a, b, r, k in out.links]
        slow_conflicts = [
            (kind, r, k, int(slow_idx[a]), int(slow_idx[b]), ev)
            for kind, r, k, a, b, ev in out.conflicts
        ]
    _, cluster = np.unique(final, return_inverse=True)

    # --- probabilistic stage: records no strong key linked (identity_match)
    match_stats: dict[str, int] = {}
    m_a = m_b = m_k = np.zeros(0, dtype=np.int64)
    params_used = None
    fields = None
    blocks = np.zeros((n, 0), dtype=np.uint64)
    if matching is not None and matching.enabled:
        from custsync_pipeline.domain.identity_match import block_hashes, coded_fields

        fields = coded_fields(
            recs, order, {"first_name": tokens, "last_name": surnames, "birth_date": births}
        )
        if with_reach or oversized_blocks is not None:
            # before noise contacts are masked: the blocks the values fall in
            blocks = block_hashes(fields, matching.blocking)
    if matching is not None and matching.enabled and n > 1:
        from custsync_pipeline.domain.identity_match import MatchInput, match_clusters

        n_clusters = int(cluster.max()) + 1
        single_ids = []
        for r_idx, rule in enumerate(rules):
            if rule.max_per_golden == 1 and not contact_rule[r_idx]:
                s = usable[keys.occ_key] & (keys.key_rule[keys.occ_key] == r_idx)
                ids = np.full(n_clusters, -1, dtype=np.int64)
                ids[cluster[keys.occ_rec[s]]] = keys.occ_key[s]
                single_ids.append(ids)
        _mask_noise_contacts(fields, keys, rules, contact_rule, n_plain)
        family = _family_emails(fields, keys, rules, household)
        matched = match_clusters(
            MatchInput(
                fields=fields,
                cluster=cluster,
                first_tokens=tokens,
                surnames=surnames,
                births=births,
                kinds=kinds,
                single_ids=single_ids,
                cannot=cannot,
                oversized=None
                if oversized_blocks is None
                else np.isin(blocks, oversized_blocks) & (blocks != 0),
                family=family,
            ),
            matching,
            match_params,
        )
        params_used = matched.params
        _, cluster = np.unique(matched.cluster, return_inverse=True)
        m_a, m_b = matched.links[0], matched.links[1]
        for a_, b_, ev in zip(*matched.refused, strict=True):
            slow_conflicts.append(("probable_match", "probabilistic", -1, int(a_), int(b_), ev))
        ra, rb, _, rev = matched.review
        for a_, b_, ev in zip(ra, rb, rev, strict=True):
            slow_conflicts.append(("probable_match", "probabilistic", -1, int(a_), int(b_), ev))
        match_stats = matched.stats
        # fixed point: a guest left apart between clusters the probabilistic stage has
        # since joined now points to one cluster, and follows it
        cluster, g_a, g_b, g_k = _late_guests(
            keys, contact_rule, has_name | has_surname | has_company, cluster
        )
        m_a, m_b = np.r_[m_a, g_a], np.r_[m_b, g_b]
        m_k = np.r_[np.full(len(m_a) - len(g_a), -1, dtype=np.int64), g_k]

    # --- stable golden ids
    members = pd.DataFrame({"connector": conn, "source_id": sid, "cluster": cluster})
    has_prior_map = prior_map is not None and len(prior_map) > 0
    prior_pos = match_records(conn, sid, prior_map, rec_hash) if has_prior_map else None
    gid, golden_table, id_stats = assign_golden_ids(
        members, prior_map, golden_ids, now, prior_pos=prior_pos
    )

    # --- evidence: accepted links
    fast = ~rec_flag[e_a]
    rule_names = np.array([r.name for r in rules], dtype=object)
    link_a = np.concatenate([e_a[fast], np.array([x[0] for x in slow_links], dtype=np.int64), m_a])
    link_b = np.concatenate([e_b[fast], np.array([x[1] for x in slow_links], dtype=np.int64), m_b])
    link_k = np.concatenate(
        [e_key[fast], np.array([x[3] for x in slow_links], dtype=np.int64), m_k]
    )
    late = m_k >= 0  # a guest's late link by its contact key (else probabilistic)
    late_rule = np.full(len(m_k), -1, dtype=np.int64)
    late_rule[late] = keys.key_rule[m_k[late]]
    m_rule = np.full(len(m_k), "probabilistic", dtype=object)
    m_rule[late] = np.array([r.name for r in rules], dtype=object)[late_rule[late]]
    link_rule = np.concatenate(
        [
            rule_names[keys.key_rule[e_key[fast]]],
            np.array([x[2] for x in slow_links], dtype=object),
            m_rule,
        ]
    )
    links = pd.DataFrame(
        {
            "golden_id": gid[link_a],
            "connector_a": conn[link_a],
            "source_id_a": sid[link_a],
            "connector_b": conn[link_b],
            "source_id_b": sid[link_b],
            "rule": link_rule,
            "key": _masked_link_keys(keys, link_k, contact_rule),
        },
        columns=LINK_COLUMNS,
    )

    # --- identity map: the strongest rule that linked each record
    # rank 0 = steward, then the rules strongest first (their order after sorting)
    rank_of = {"steward": 0} | {r.name: i + 1 for i, r in enumerate(rules)}
    names_by_rank = np.array(
        ["steward"] + [r.name for r in rules] + ["probabilistic", "own"], dtype=object
    )
    # fast links carry their rule index (rules are sorted: index + 1 = rank); the few
    # slow-path links are looked up by name
    link_rank = np.concatenate(
        [
            keys.key_rule[e_key[fast]].astype(np.int64) + 1,
            np.array([rank_of.get(x[2], len(rules) + 2) for x in slow_links], dtype=np.int64),
            np.where(late, late_rule + 1, len(rules) + 1),
        ]
    )
    best = np.full(n, len(rules) + 2, dtype=np.int64)
    np.minimum.at(best, link_a, link_rank)
    np.minimum.at(best, link_b, link_rank)
    rule_col = names_by_rank[best]
    identity_map = pd.DataFrame(
        {"connector": conn, "source_id": sid, "golden_id": gid, "rule": rule_col}
    )
    identity_map["updated_at"] = now
    if prior_map is not None and len(prior_map) and "updated_at" in prior_map.columns:
        pos = prior_pos
        found = pos >= 0
        prev_gid = np.where(
            found, prior_map["golden_id"].to_numpy(dtype=object)[np.maximum(pos, 0)], None
        )
        prev_at = pd.to_datetime(prior_map["updated_at"], utc=True, errors="coerce")
        prev_at = prev_at.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        prev_at = np.where(found, prev_at[np.maximum(pos, 0)], np.datetime64("NaT"))
        same = found & (prev_gid == gid) & ~np.isnat(prev_at)
        stamped = np.where(same, prev_at, now.tz_convert("UTC").tz_localize(None).to_datetime64())
        identity_map["updated_at"] = pd.to_datetime(stamped).tz_localize("UTC")
    identity_map["updated_at"] = pd.to_datetime(identity_map["updated_at"], utc=True)

    # --- conflicts: refused links, both sides and the evidence
    conflicts = _conflicts(keys, link_key, rules, slow_conflicts, cluster, conn, sid, gid)

    stats = {
        "records": n,
        "golden_records": int(cluster.max()) + 1 if n else 0,
        "links": len(links),
        "conflicts": len(conflicts),
        "slow_path_records": len(slow_idx),
        "slow_path_clusters": int(flag.sum()),
        "steward_decisions_applied": len(must) + len(cannot),
        "steward_decisions_waiting": decisions_waiting,
        **{f"slow_path_{k}": int((v & multi).sum()) for k, v in reasons.items()},
        **id_stats,
        **match_stats,
    }
    for kind, count in conflicts["kind"].value_counts().items():
        stats[f"conflicts_{kind}"] = int(count)
    reach = known = None
    if with_reach:
        reach = pack_reach(_heads(f, blocks), *key_hashes, n)
        known = (
            np.array(sorted(known_words.tokens), dtype=object)
            if known_words is not None
            else np.array(sorted(KnownWords(f.raw_tokens).tokens), dtype=object)
        )
    return IdentityResult(
        identity_map, golden_table, links, conflicts, stats, params_used, reach, known
    )


@dataclass
class RecordFacts:
    """What reaches each of some records, in their canonical order (``identity_scope``)."""

    connector: np.ndarray
    source_id: np.ndarray
    fields: dict | None  # the probabilistic stage's coded fields (None when it is off)
    reach: np.ndarray | None  # pack_reach bytes per record (None: fields only)


def name_words(
    records: pd.DataFrame,
    rules: list[IdentifierRule],
    matching: MatchingPlan | None = None,
    roles: tuple[WordRoles, WordRoles] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(connector, source_id, swap words [n, 4], first-name token hash) of each record,
    in canonical order; the token after a swap judged with ``roles``."""
    recs, order, _ = _prepare(records, rules, matching, roles)
    words = np.c_[tuple(recs[c].to_numpy(dtype=np.uint64)[order] for c in _WORD_COLUMNS)]
    return (
        recs["connector"].to_numpy(dtype=object)[order],
        recs["source_id"].to_numpy(dtype=object)[order],
        words.reshape(len(order), 4),
        word_hashes(recs[_TOKENS].to_numpy(dtype=object)[order]),
    )


def input_hashes(
    records: pd.DataFrame, rules: list[IdentifierRule], matching: MatchingPlan | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(connector, source_id, a hash of what resolution reads of the record) per record."""
    recs, _, _ = _prepare(records, rules, matching, input_hash=True)
    return (
        recs["connector"].to_numpy(dtype=object),
        recs["source_id"].to_numpy(dtype=object),
        recs[_INPUT].to_numpy(dtype=np.uint64),
    )


def describe_records(
    records: pd.DataFrame,
    rules: list[IdentifierRule],
    golden_ids: pd.DataFrame | None,
    matching: MatchingPlan | None,
    known_words: KnownWords | None,
    roles: tuple[WordRoles, WordRoles] | None = None,
    fields_only: bool = False,
) -> RecordFacts:
    """The identifiers, blocks and comparison fields of ``records`` as a resolution of the
    whole population sees them (``known_words``, ``roles``: the population's first names
    and word counts). ``fields_only``: the comparison fields alone (no reach: identifier
    keys, input hashes and blocks are not worked out)."""
    f = _features(
        records, rules, golden_ids, matching, known_words, roles,
        input_hash=not fields_only, with_keys=not fields_only,
    )  # fmt: skip
    n = len(f.recs)
    fields = None
    blocks = np.zeros((n, 0), dtype=np.uint64)
    if matching is not None and matching.enabled:
        from custsync_pipeline.domain.identity_match import block_hashes, coded_fields

        fields = coded_fields(
            f.recs,
            f.order,
            {"first_name": f.tokens, "last_name": f.surnames, "birth_date": f.births},
        )
        if not fields_only:
            blocks = block_hashes(fields, matching.blocking)
    if fields_only:
        return RecordFacts(f.conn, f.sid, fields, None)
    reach = pack_reach(_heads(f, blocks), *_key_hashes(f.keys, f.rules), n)
    return RecordFacts(f.conn, f.sid, fields, reach)


def _heads(f: _Features, blocks: np.ndarray) -> np.ndarray:
    """The fixed part of each record's reach: its first-name token, its home (surname,
    street, postal code: where ``_household_addresses`` looks for housemates), the four
    words a swapped-name check counts, a hash of what resolution reads of it, and the
    block of each blocking list."""
    n = len(f.conn)
    home = np.zeros(n, dtype=np.uint64)
    if "street" in f.recs.columns and "postal_code" in f.recs.columns:
        street = f.recs["street"].to_numpy(dtype=object)[f.order]
        postal = f.recs["postal_code"].to_numpy(dtype=object)[f.order]
        sn = _last_words(f.surnames)
        has = (pd.notna(f.tokens) & pd.notna(sn) & pd.notna(street) & pd.notna(postal)).astype(bool)
        if has.any():
            code, uniq = pd.factorize(street[has])
            folded = np.array([fold(str(v)) for v in uniq], dtype=object)[code]
            text = (
                "h\x1f" + sn[has].astype(str) + "\x1f" + folded + "\x1f" + postal[has].astype(str)
            )
            home[has] = pd.util.hash_array(text.astype(object), categorize=False) | np.uint64(1)
    inputs = f.inputs if f.inputs is not None else np.zeros(n, dtype=np.uint64)
    return np.c_[word_hashes(f.raw_tokens), home, f.words, inputs, blocks]


def _key_hashes(keys: KeyTable, rules: list[IdentifierRule]) -> tuple[np.ndarray, np.ndarray]:
    """(record, hash) per identifier occurrence: a fixed hash of rule and value."""
    if keys.n_keys == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    names = np.array([r.name for r in rules], dtype=object)[keys.key_rule]
    text = names + "\x1f" + keys.key_value.astype(str).astype(object)
    per_key = pd.util.hash_array(text.astype(object), categorize=False) | np.uint64(1)
    return keys.occ_rec, per_key[keys.occ_key]


def pack_reach(heads: np.ndarray, key_rec: np.ndarray, key_hash: np.ndarray, n: int) -> np.ndarray:
    """Per record, the bytes of its hashes: the fixed ``heads`` (``_heads``: first-name
    token, home, one per blocking list; 0 when missing), then its identifier values (as
    many as it holds)."""
    width = heads.shape[1]
    if n == 0:
        return np.zeros(0, dtype=object)
    order = np.argsort(key_rec, kind="stable")
    counts = np.bincount(key_rec, minlength=n)
    rows = np.zeros(n * width + len(key_rec), dtype=np.uint64)
    lengths = width + counts
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    fixed = starts[:, None] + np.arange(width)[None, :]
    rows[fixed.ravel()] = heads.ravel()
    within = np.arange(len(key_rec)) - np.repeat(np.cumsum(counts) - counts, counts)
    rows[np.repeat(starts + width, counts) + within] = key_hash[order]
    # one Arrow binary array over the buffer: the per-record bytes cut in C
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64) * 8
    arr = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(rows)]
    )
    return arr.to_numpy(zero_copy_only=False)


def _reach_buffers(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, length in hashes per entry, every hash) of packed reach: through one Arrow
    binary array (no Python pass over a million entries); anything not bytes is empty."""
    values = np.asarray(packed, dtype=object)
    try:
        arr = pa.array(values, type=pa.large_binary(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. memoryviews from a driver
        items = [
            bytes(b) if isinstance(b, bytes | bytearray | memoryview) else None for b in values
        ]
        arr = pa.array(items, type=pa.large_binary())
    off = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    flat = np.frombuffer(data, dtype=np.uint64) if data is not None else np.zeros(0, np.uint64)
    return off[:-1] // 8, np.diff(off) // 8, flat


def unpack_reach(
    packed: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(token hash per record, the other heads per record [n, width-1]: home, then one per
    blocking list; key owner, key hash) from ``pack_reach``'s bytes (an empty or missing
    entry: nothing known)."""
    starts, lengths, flat = _reach_buffers(packed)
    n = len(lengths)
    full = lengths >= width
    head = np.zeros((n, width), dtype=np.uint64)
    idx = starts[full][:, None] + np.arange(width)[None, :]
    head[full] = flat[idx] if len(idx) else head[full]
    counts = np.where(full, lengths - width, 0)
    owner = np.repeat(np.arange(n), counts)
    if (full | (lengths == 0)).all():  # as written: the keys are every hash not a head
        keys = np.ones(len(flat), dtype=bool)
        keys[idx.ravel()] = False
        return head[:, 0], head[:, 1:], owner, flat[keys]
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    key_hash = flat[np.repeat(starts + width, counts) + within]
    return head[:, 0], head[:, 1:], owner, key_hash


def _run_slow_path(
    slow_idx: np.ndarray,
    keys,
    link_key: np.ndarray,
    rules: list[IdentifierRule],
    contact_rule: np.ndarray,
    tokens: np.ndarray,
    must: list[tuple[int, int]],
    cannot: list[tuple[int, int]],
    kinds: np.ndarray,
    surnames: np.ndarray,
    companies: np.ndarray,
    births: np.ndarray,
):
    n_slow = len(slow_idx)
    local = np.full(len(tokens), -1, dtype=np.int64)
    local[slow_idx] = np.arange(n_slow)
    in_slow = local[keys.occ_rec] >= 0
    limits = {i: r.max_per_golden for i, r in enumerate(rules) if r.max_per_golden is not None}

    # key groups (all holders of a usable shared key sit in one component)
    s = in_slow & link_key[keys.occ_key]
    g_rec, g_key = local[keys.occ_rec[s]], keys.occ_key[s]
    groups: list[KeyGroup] = []
    if len(g_key):
        starts = np.flatnonzero(np.r_[True, g_key[1:] != g_key[:-1]])
        bounds = np.r_[starts, len(g_key)]
        for i in range(len(starts)):
            k = int(g_key[bounds[i]])
            r_idx = int(keys.key_rule[k])
            groups.append(
                KeyGroup(
                    priority=rules[r_idx].priority,
                    rule_order=r_idx,
                    rule=rules[r_idx].name,
                    key_id=k,
                    contact=bool(contact_rule[r_idx]),
                    members=g_rec[bounds[i] : bounds[i + 1]].tolist(),
                )
            )
    # values per record for the limited rules (usable keys, shared or not)
    values: list[dict[int, set[int]]] = [{} for _ in range(n_slow)]
    contact_idx = [i for i in range(len(rules)) if contact_rule[i]]
    tracked = sorted(set(limits) | set(contact_idx))
    if tracked:
        lim_rule = np.zeros(len(rules), dtype=bool)
        lim_rule[tracked] = True
        v = (
            in_slow
            & (keys.key_status[keys.occ_key] == USABLE)
            & lim_rule[keys.key_rule[keys.occ_key]]
        )
        for rec, k in zip(local[keys.occ_rec[v]].tolist(), keys.occ_key[v].tolist(), strict=True):
            values[rec].setdefault(int(keys.key_rule[k]), set()).add(k)
    inp = ConstrainedInput(
        n=n_slow,
        groups=groups,
        limits=limits,
        rule_names={i: r.name for i, r in enumerate(rules)},
        values=values,
        names=[t if isinstance(t, str) else None for t in tokens[slow_idx]],
        must=[(int(local[a]), int(local[b])) for a, b in must],
        cannot=[(int(local[a]), int(local[b])) for a, b in cannot],
        contact_rules=contact_idx,
        kinds=[k if isinstance(k, str) else None for k in kinds[slow_idx]],
        priorities={i: r.priority for i, r in enumerate(rules)},
        surnames=[x if isinstance(x, str) else None for x in surnames[slow_idx]],
        companies=[x if isinstance(x, str) else None for x in companies[slow_idx]],
        births=[x if isinstance(x, str) else None for x in births[slow_idx]],
    )
    return resolve_constrained(inp), local


def _masked_conflict_keys(keys, key_ids: np.ndarray, rules: list[IdentifierRule]) -> np.ndarray:
    """Masked key per conflict ("" for a probabilistic pair, which has no key)."""
    out = np.full(len(key_ids), "", dtype=object)
    has = key_ids >= 0
    if has.any():
        contact = np.array([is_contact_rule(r) for r in rules], dtype=bool)
        out[has] = mask_keys(keys.key_value[key_ids[has]], contact[keys.key_rule[key_ids[has]]])
    return out


def _conflict_id(parts: pd.DataFrame) -> pd.Series:
    if parts.empty:  # agg over no rows gives a frame, not a Series
        return pd.Series([], index=parts.index, dtype=object)
    joined = parts.astype(str).agg("\x1f".join, axis=1)
    return joined.map(lambda t: hashlib.sha1(t.encode()).hexdigest()[:16])


def _conflicts(
    keys,
    link_key: np.ndarray,
    rules: list[IdentifierRule],
    slow_conflicts: list[tuple[str, str, int, int, int, str]],
    cluster: np.ndarray,
    conn: np.ndarray,
    sid: np.ndarray,
    gid: np.ndarray,
) -> pd.DataFrame:
    # keys shared by several records but not usable: blocked or overused values
    refused = (~link_key) & (keys.key_count >= 2)
    s = refused[keys.occ_key]
    r_rec, r_key = keys.occ_rec[s], keys.occ_key[s]
    rank = np.zeros(len(r_key), dtype=np.int64)
    if len(r_key):
        starts = np.r_[True, r_key[1:] != r_key[:-1]]
        start_pos = np.maximum.accumulate(np.where(starts, np.arange(len(r_key)), 0))
        rank = np.arange(len(r_key)) - start_pos
        first_rec = r_rec[start_pos]
    keep = (rank >= 1) & (rank <= CONFLICT_PAIRS_PER_KEY)
    kinds = np.where(keys.key_status == 1, "blocked_value", "shared_value")
    rule_names = np.array([r.name for r in rules], dtype=object)
    if len(r_key):
        k = r_key[keep]
        evid = [
            f"{reason}; held by {count} records"
            for reason, count in zip(keys.key_reason[k], keys.key_count[k], strict=True)
        ]
        a_idx, b_idx = first_rec[keep], r_rec[keep]
        data = {
            "kind": kinds[k],
            "rule": rule_names[keys.key_rule[k]],
            "key_id": k,
            "a": a_idx,
            "b": b_idx,
            "evidence": evid,
        }
    else:
        data = {c: [] for c in ("kind", "rule", "key_id", "a", "b", "evidence")}
    frame = pd.DataFrame(data)
    if slow_conflicts:
        frame = pd.concat(
            [
                frame,
                pd.DataFrame(
                    slow_conflicts, columns=["kind", "rule", "key_id", "a", "b", "evidence"]
                ),
            ],
            ignore_index=True,
        )
    if len(frame) == 0:
        return pd.DataFrame(columns=CONFLICT_COLUMNS)
    a = frame["a"].to_numpy(dtype=np.int64)
    b = frame["b"].to_numpy(dtype=np.int64)
    # a refusal that other evidence overrode (both sides ended together) is no conflict;
    # a value dropped under a limit is reported although its holder stayed in the cluster
    apart = (cluster[a] != cluster[b]) | (frame["kind"].to_numpy() == "identifier_dropped")
    frame, a, b = frame[apart], a[apart], b[apart]
    key_ids = frame["key_id"].to_numpy(dtype=np.int64)
    out = pd.DataFrame(
        {
            "kind": frame["kind"].to_numpy(dtype=object),
            "rule": frame["rule"].to_numpy(dtype=object),
            "key_masked": _masked_conflict_keys(keys, key_ids, rules),
            "connector_a": conn[a],
            "source_id_a": sid[a],
            "golden_id_a": gid[a],
            "connector_b": conn[b],
            "source_id_b": sid[b],
            "golden_id_b": gid[b],
            "evidence": frame["evidence"].to_numpy(dtype=object),
        }
    )
    out.insert(
        0,
        "conflict_id",
        _conflict_id(
            out[["kind", "rule", "connector_a", "source_id_a", "connector_b", "source_id_b"]]
        ),
    )
    out = out.drop_duplicates("conflict_id").reset_index(drop=True)
    return out[CONFLICT_COLUMNS]


def empty_result() -> IdentityResult:
    """A result for no records at all (a first run before any extraction)."""
    return IdentityResult(
        pd.DataFrame(columns=MAP_COLUMNS),
        empty_golden_ids(),
        pd.DataFrame(columns=LINK_COLUMNS),
        pd.DataFrame(columns=CONFLICT_COLUMNS),
        {},
    )
