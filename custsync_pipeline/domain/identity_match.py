"""The probabilistic stage of identity resolution: records no strong key links.

A CRM duplicate with no e-mail and no phone, only name and address, shares no
key with its person. After the rules have formed their clusters, this stage:

1. **blocks**: candidate pairs are named records that agree on every key of one
   blocking list (``identity.matching.blocking``: by default surname phonetic +
   postal code, surname phonetic + city, birth date, first-name phonetic + postal
   code, street + postal code, first + last name phonetic); a block larger than
   ``max_block_size`` is skipped (a common name in a big town says little and costs
   quadratically);
2. **compares** each pair field by field into levels (exact / close / different /
   missing) with ``rapidfuzz`` Jaro-Winkler similarity, element-wise in C++
   (``process.cpdist``), once per distinct pair of values;
3. **scores** with a Fellegi–Sunter model, as Splink does: ``u`` (how often a level
   occurs between two random records) from random record pairs; ``m`` (how often
   between two records of one person) from the candidate pairs the rules already
   linked (customer data: unsupervised EM learns "same household" instead), by EM
   per blocking session when the rules linked too few (FEBRL4); the prior from the
   rules' linked pairs. A pair's match weight is the sum of ``log2(m/u)`` over its
   fields plus the prior's log-odds; its match probability follows;
4. **decides**, strongest pair first, over clusters: a pair at or above
   ``link_threshold`` links its two clusters unless a constraint refuses it (names
   or birth dates that differ, where the data shows those fields reliable; a company
   and a person; two values of a one-per-golden identifier; a steward's
   cannot-link), or the cluster fits two clusters that refuse each other; a pair
   between ``review_threshold`` and ``link_threshold`` goes to the review queue
   (``probable_match``) with its probability and field levels (no values).

Pure: numpy/pandas/rapidfuzz; deterministic (the random pairs are drawn with a fixed
seed over the canonical record order), so a rerun on unchanged input decides the same.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rapidfuzz.distance import JaroWinkler, Levenshtein
from rapidfuzz.process import cpdist

from custsync_pipeline.domain.identity_names import (
    first_name_sets_agree,
    first_names_compatible,
    fold,
    plain,
)
from custsync_pipeline.domain.plan import MatchingPlan

# comparison -> (level names, strongest first). Level -1 is "missing on a side".
LEVELS: dict[str, tuple[str, ...]] = {
    "first_name": ("exact", "nickname_or_initial", "jw>=0.88", "different"),
    "last_name": ("exact", "jw>=0.92", "jw>=0.80", "different"),
    "birth_date": ("exact", "one_digit_or_swap", "same_year", "different"),
    "street": ("exact", "jw>=0.90", "jw>=0.75", "different"),
    "postal_code": ("exact", "one_digit", "different"),
    "city": ("exact", "jw>=0.90", "different"),
    "email": ("exact", "one_edit_or_same_local", "different"),
    "phone": ("exact", "last_8_digits", "different"),
}
COMPARISONS = tuple(LEVELS)
BLOCKING_KEYS = (
    "last_name_phonetic",
    "first_name_phonetic",
    "first_initial",
    "last_name",
    "birth_date",
    "birth_year",
    "postal_code",
    "city",
    "street",
    "email",
    "phone",
)
RANDOM_PAIRS = 200_000
EM_ITERATIONS = 25
# candidate pairs the rules linked needed to learn m from them (else EM)
MIN_RULE_PAIRS = 200
# a field whose "different" level has m under this refuses merges when it differs
RELIABLE_M = 0.05
# weight of the default m beside the rules' pairs (as many pairs' worth)
PRIOR_PAIRS = 50
# rounds of the fixed point that judges ambiguity again on the merged clusters
MAX_ROUNDS = 5
AMBIGUOUS = "fits two people who were kept apart"


@dataclass
class MatchInput:
    """Per record (canonical order): folded fields, the rules' clusters and vetoes."""

    fields: dict[str, Coded]  # comparison -> folded values as codes (``coded_fields``)
    cluster: np.ndarray  # cluster of each record after the rules
    first_tokens: np.ndarray  # first-name token (identity_keys.name_tokens)
    surnames: np.ndarray  # folded last name
    births: np.ndarray  # YYYYMMDD
    kinds: np.ndarray  # person / company / None
    single_ids: list[np.ndarray] = field(default_factory=list)  # per 1-per-golden rule: key id
    cannot: list[tuple[int, int]] = field(default_factory=list)  # steward cannot-links
    # per record and blocking list: its block is too big in the whole population (when
    # only part of it is resolved here, a block's size is not what these records show)
    oversized: np.ndarray | None = None
    # per record: code of the household's shared e-mail it holds (-1: none)
    family: np.ndarray | None = None


@dataclass(frozen=True)
class MatchParams:
    """What the model learned from the whole population: ``m`` and ``u`` per comparison
    level, the prior and the fields reliable enough to refuse a merge. A full resolution
    estimates them; an incremental one reuses them, so a change of a few records decides
    exactly as a full resolution with the same parameters would."""

    comparisons: tuple[str, ...]
    m: tuple[tuple[float, ...], ...]
    u: tuple[tuple[float, ...], ...]
    prior: float
    reliable: tuple[str, ...]
    trained_on: str  # "rules" or "em"

    def to_json(self) -> str:
        return json.dumps(
            {
                "comparisons": self.comparisons,
                "m": self.m,
                "u": self.u,
                "prior": self.prior,
                "reliable": self.reliable,
                "trained_on": self.trained_on,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> MatchParams:
        raw = json.loads(text)
        return cls(
            comparisons=tuple(raw["comparisons"]),
            m=tuple(tuple(float(x) for x in row) for row in raw["m"]),
            u=tuple(tuple(float(x) for x in row) for row in raw["u"]),
            prior=float(raw["prior"]),
            reliable=tuple(raw["reliable"]),
            trained_on=str(raw["trained_on"]),
        )

    def tables(self) -> list[np.ndarray]:
        """``log2(m/u)`` per comparison level."""
        return [np.log2(np.asarray(m) / np.asarray(u)) for m, u in zip(self.m, self.u, strict=True)]


@dataclass
class MatchOutput:
    cluster: np.ndarray  # new cluster label per record
    links: tuple[np.ndarray, np.ndarray, np.ndarray]  # a, b, probability (accepted)
    review: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]  # a, b, probability, evidence
    refused: tuple[np.ndarray, np.ndarray, list[str]]  # a, b, why (above link threshold)
    stats: dict[str, int | float]
    params: MatchParams | None = None  # the parameters it decided with


# --------------------------------------------------------------------------- fields


def _soundex(word: str) -> str:
    """American Soundex of a folded word (``svensson`` -> ``s152``); "" when empty."""
    word = re.sub(r"[^a-z]", "", plain(word))
    if not word:
        return ""
    codes = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"),
             **dict.fromkeys("dt", "3"), "l": "4", **dict.fromkeys("mn", "5"), "r": "6"}  # fmt: skip
    out, last = word[0], codes.get(word[0], "")
    for ch in word[1:]:
        code = codes.get(ch, "")
        if code and code != last:
            out += code
        if ch not in "hw":
            last = code
    return (out + "000")[:4]


Coded = tuple[np.ndarray, np.ndarray]  # (code per record, -1 when missing; distinct values)


def _coded(values: np.ndarray, func) -> Coded:
    """``func`` once per distinct present value; codes of the results per record."""
    code, uniq = pd.factorize(values, use_na_sentinel=True)
    folded = np.array([func(str(u)) or None for u in uniq], dtype=object)
    f_code, f_uniq = pd.factorize(folded, use_na_sentinel=True)
    f_code = np.r_[f_code, -1].astype(np.int64)  # code -1 (missing) picks the trailing -1
    return f_code[code], np.asarray(f_uniq, dtype=object)


def _values(coded: Coded) -> np.ndarray:
    code, uniq = coded
    return np.r_[uniq, np.array([None], dtype=object)][code]


def coded_fields(
    recs: pd.DataFrame, order: np.ndarray, folded: dict[str, np.ndarray] | None = None
) -> dict[str, Coded]:
    """Folded comparison values per record (canonical order ``order``), as codes.

    ``folded``: fields the caller has already folded per record in canonical order
    (identity's first-name tokens, last names, birth dates): only factorized here.
    """

    def raw(name: str) -> np.ndarray:
        if name not in recs.columns:
            return np.full(len(order), None, dtype=object)
        return recs[name].to_numpy(dtype=object)

    digits = re.compile(r"\D")

    def birth(v: str) -> str:
        d = digits.sub("", v)
        return d if len(d) == 8 else ""

    folding = {
        "first_name": lambda v: (fold(v).split() or [""])[0],
        "last_name": fold,
        "birth_date": birth,
        "street": fold,
        "postal_code": lambda v: digits.sub("", v) or fold(v),
        "city": fold,
        # e-mail and phone arrive normalized (lower case, E.164)
        "email": str.strip,
        "phone": str.strip,
    }
    out: dict[str, Coded] = {}
    for name, func in folding.items():
        if folded and name in folded:
            code, uniq = pd.factorize(folded[name], use_na_sentinel=True)
            out[name] = (code.astype(np.int64), np.asarray(uniq, dtype=object))
        else:
            # factorized in the frame's order, the integer codes put in canonical order
            # (cheaper than reordering a million strings first)
            code, uniq = _coded(raw(name), func)
            out[name] = (code[order], uniq)
    return out


def match_fields(recs: pd.DataFrame, order: np.ndarray) -> dict[str, np.ndarray]:
    """Folded comparison values per record (None when missing), in canonical order."""
    return {name: _values(c) for name, c in coded_fields(recs, order).items()}


def _derived(coded: Coded, func) -> Coded:
    """A function of a coded field, computed on its distinct values."""
    code, uniq = coded
    d_code, d_uniq = pd.factorize(
        np.array([func(u) or None for u in uniq], dtype=object), use_na_sentinel=True
    )
    d_code = np.r_[d_code, -1].astype(np.int64)
    return d_code[code], np.asarray(d_uniq, dtype=object)


def _block_coded(codes: dict[str, Coded], key: str) -> Coded:
    if key == "last_name_phonetic":
        return _derived(codes["last_name"], lambda v: _soundex(v.split()[-1]))
    if key == "first_name_phonetic":
        return _derived(codes["first_name"], _soundex)
    if key == "first_initial":
        return _derived(codes["first_name"], lambda v: plain(v[:1]))
    if key == "birth_year":
        return _derived(codes["birth_date"], lambda v: v[:4])
    return codes[key]


def block_codes(codes: dict[str, Coded], key: str) -> np.ndarray:
    """One blocking key's code per record (-1 when missing)."""
    return _block_coded(codes, key)[0]


def block_hashes(codes: dict[str, Coded], blocking: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """Per record and blocking list, a 64-bit hash of the block it falls in (0 when a key
    is missing): the same block in any population, unlike the codes."""
    n = len(next(iter(codes.values()))[0])
    out = np.zeros((n, len(blocking)), dtype=np.uint64)
    mix = np.uint64(0x9E3779B97F4A7C15)
    for r_idx, rule in enumerate(blocking):
        h = np.full(n, np.uint64(r_idx + 1), dtype=np.uint64)
        present = np.ones(n, dtype=bool)
        for key in rule:
            code, uniq = _block_coded(codes, key)
            present &= code >= 0
            per_value = pd.util.hash_array(
                np.asarray([f"{key}\x1f{v}" for v in uniq], dtype=object), categorize=False
            )
            vh = np.r_[per_value, np.uint64(0)][code]
            h = (h * mix) ^ vh
        out[:, r_idx] = np.where(present, h | np.uint64(1), np.uint64(0))
    return out


def upper_probability(
    codes: dict[str, Coded], a: np.ndarray, b: np.ndarray, params: MatchParams
) -> np.ndarray:
    """A bound from above on each pair's match probability whatever the rules decide to
    mask: an e-mail or phone the rules find to be noise counts as missing (weight 0) in a
    resolution, so only its positive weight is counted here."""
    levels = compare(codes, a, b, params.comparisons)
    w = np.full(len(a), np.log2(params.prior / (1 - params.prior)))
    for j, table in enumerate(params.tables()):
        if params.comparisons[j] in ("email", "phone"):
            table = np.maximum(table, 0.0)
        lv = levels[:, j]
        has = lv >= 0
        w[has] += table[lv[has]]
    return 1.0 / (1.0 + np.exp2(-np.clip(w, -60, 60)))


# --------------------------------------------------------------------------- pairs


def _pairs_within_blocks(code: np.ndarray, max_block: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a < b) of records sharing a block code (>= 0), blocks up to ``max_block``."""
    rec = np.flatnonzero(code >= 0)
    if len(rec) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(code[rec], kind="stable")
    rec, c = rec[order], code[rec][order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    sizes = np.diff(np.r_[starts, len(c)])
    keep_block = (sizes >= 2) & (sizes <= max_block)
    block_of = np.repeat(np.arange(len(starts)), sizes)
    end = np.repeat(starts + sizes, sizes)
    pos = np.arange(len(c))
    partners = np.where(keep_block[block_of], end - pos - 1, 0)
    total = int(partners.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a_pos = np.repeat(pos, partners)
    offset = np.arange(total) - np.repeat(np.cumsum(partners) - partners, partners)
    b_pos = a_pos + 1 + offset
    a, b = rec[a_pos], rec[b_pos]
    return np.minimum(a, b), np.maximum(a, b)


def candidate_pairs(
    codes: dict[str, Coded],
    blocking: tuple[tuple[str, ...], ...],
    max_block: int,
    oversized: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct candidate pairs from every blocking rule (a < b), and the first rule
    (index into ``blocking``) that proposed each. ``oversized`` [record, rule]: blocks
    known to be larger than ``max_block`` beyond these records, skipped."""
    n = len(next(iter(codes.values()))[0])
    cache: dict[str, np.ndarray] = {}
    pa, pb, pr = [], [], []
    for r_idx, rule in enumerate(blocking):
        combined = np.zeros(n, dtype=np.int64)
        present = np.ones(n, dtype=bool)
        for key in rule:
            if key not in cache:
                cache[key] = block_codes(codes, key)
            part = cache[key]
            present &= part >= 0
            # combine integer codes, re-densified so the product never overflows
            combined = pd.factorize(combined * (int(part.max()) + 2) + part + 1)[0]
        if oversized is not None:
            present &= ~oversized[:, r_idx]
        code = np.where(present, combined, -1).astype(np.int64)
        a, b = _pairs_within_blocks(code, max_block)
        pa.append(a)
        pb.append(b)
        pr.append(np.full(len(a), r_idx, dtype=np.int16))
    a, b, r = np.concatenate(pa), np.concatenate(pb), np.concatenate(pr)
    if len(a) == 0:
        return a, b, r
    key, first = np.unique(a * np.int64(n) + b, return_index=True)
    return key // n, key % n, r[first]


# --------------------------------------------------------------------------- comparison


def _jw(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cpdist(list(x), list(y), scorer=JaroWinkler.normalized_similarity, workers=1)


def _lev(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cpdist(list(x), list(y), scorer=Levenshtein.distance, workers=1)


def _levels_of_values(name: str, uniq: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Level of each pair (``uniq[lo]``, ``uniq[hi]``) of *different* present values.

    Per-value work (house numbers, local parts, years) runs once per value used.
    """
    used, inverse = np.unique(np.r_[lo, hi], return_inverse=True)
    vals = uniq[used]
    ix, iy = inverse[: len(lo)], inverse[len(lo) :]
    xr, yr = vals[ix], vals[iy]
    if name == "first_name":
        compat = np.fromiter(
            (first_names_compatible(p, q) for p, q in zip(xr, yr, strict=True)),
            dtype=bool,
            count=len(xr),
        )
        sim = _jw(xr, yr)
        return np.where(compat, 1, np.where(sim >= 0.88, 2, 3))
    if name == "last_name":
        sim = _jw(xr, yr)
        return np.where(sim >= 0.92, 1, np.where(sim >= 0.80, 2, 3))
    if name == "street":
        # the house number must agree ("Storgatan 6" is not "Storgatan 16"); the street
        # name may carry a typo
        nums, names = _house_numbers(vals), _street_names(vals)
        nx, ny = nums[ix], nums[iy]
        numbers_differ = (nx != "") & (ny != "") & (nx != ny)
        sim = _jw(names[ix], names[iy])
        return np.where(numbers_differ, 3, np.where(sim >= 0.90, 1, np.where(sim >= 0.75, 2, 3)))
    if name == "city":
        return np.where(_jw(xr, yr) >= 0.90, 1, 2)
    if name == "birth_date":
        year = pd.Series(vals, dtype=object).str[:4].to_numpy(dtype=object)
        month = pd.Series(vals, dtype=object).str[4:6].to_numpy(dtype=object)
        day = pd.Series(vals, dtype=object).str[6:8].to_numpy(dtype=object)
        same_year = year[ix] == year[iy]
        swap = same_year & (month[ix] == day[iy]) & (day[ix] == month[iy])
        return np.where((_lev(xr, yr) <= 1) | swap, 1, np.where(same_year, 2, 3))
    if name == "postal_code":
        return np.where(_lev(xr, yr) <= 1, 1, 2)
    if name == "email":
        local = pd.Series(vals, dtype=object).str.partition("@")[0].to_numpy(dtype=object)
        return np.where((local[ix] == local[iy]) | (_lev(xr, yr) <= 1), 1, 2)
    if name == "phone":
        tail = pd.Series(vals, dtype=object).str[-8:].to_numpy(dtype=object)
        return np.where(tail[ix] == tail[iy], 1, 2)
    raise ValueError(f"unknown comparison {name!r}")


def _house_numbers(values: np.ndarray) -> np.ndarray:
    found = pd.Series(values, dtype=object).str.findall(r"\d+").str.join(" ")
    return found.to_numpy(dtype=object)


def _street_names(values: np.ndarray) -> np.ndarray:
    names = pd.Series(values, dtype=object).str.replace(r"\d+", "", regex=True).str.strip()
    return names.to_numpy(dtype=object)


def compare(
    codes: dict[str, Coded], a: np.ndarray, b: np.ndarray, comparisons: tuple[str, ...]
) -> np.ndarray:
    """Level per pair and comparison (int8, -1 when missing on a side).

    Every comparison runs once per distinct pair of *values* (most pairs repeat a
    postal code, a city, a common name), then is broadcast to the record pairs.
    """
    out = np.full((len(a), len(comparisons)), -1, dtype=np.int8)
    for j, name in enumerate(comparisons):
        code, uniq = codes[name]
        ca, cb = code[a], code[b]
        both = (ca >= 0) & (cb >= 0)
        lev = np.full(len(a), -1, dtype=np.int8)
        lev[both & (ca == cb)] = 0
        diff = np.flatnonzero(both & (ca != cb))
        if len(diff):
            lo = np.minimum(ca[diff], cb[diff])
            hi = np.maximum(ca[diff], cb[diff])
            pair_code, pair_first = np.unique(lo * np.int64(len(uniq)) + hi, return_inverse=True)
            p_lo, p_hi = pair_code // len(uniq), pair_code % len(uniq)
            levels = _levels_of_values(name, uniq, p_lo, p_hi).astype(np.int8)
            lev[diff] = levels[pair_first]
        out[:, j] = lev
    return out


# --------------------------------------------------------------------------- model


def _level_freq(levels: np.ndarray, n_levels: int, weights: np.ndarray | None = None):
    has = levels >= 0
    w = np.ones(len(levels)) if weights is None else weights
    counts = np.bincount(levels[has], weights=w[has], minlength=n_levels)
    return counts, w[has].sum()


def estimate_u(
    codes: dict[str, Coded], comparisons: tuple[str, ...], n: int, seed: int = 0
) -> list[np.ndarray]:
    """``u`` per comparison level from random record pairs (fixed seed: deterministic)."""
    rng = np.random.default_rng(seed)
    k = min(RANDOM_PAIRS, max(n * (n - 1) // 2, 1))
    a = rng.integers(0, n, size=k)
    b = rng.integers(0, n, size=k)
    keep = a != b
    lv = compare(codes, a[keep], b[keep], comparisons)
    out = []
    for j, name in enumerate(comparisons):
        n_levels = len(LEVELS[name])
        counts, total = _level_freq(lv[:, j], n_levels)
        # Laplace smoothing: a level unseen among random pairs is rare, not impossible
        out.append((counts + 1.0) / (total + n_levels))
    return out


# the comparison a blocking key fixes: left out of EM on pairs blocked by it
_BLOCK_FIXES = {
    "last_name_phonetic": "last_name",
    "last_name": "last_name",
    "first_name_phonetic": "first_name",
    "first_initial": "first_name",
    "birth_date": "birth_date",
    "birth_year": "birth_date",
}


def estimate_m(
    levels: np.ndarray,
    u: list[np.ndarray],
    comparisons: tuple[str, ...],
    sessions: list[tuple[np.ndarray, tuple[str, ...]]],
) -> tuple[list[np.ndarray], float]:
    """``m`` per level by EM (u fixed, from random pairs), one session per blocking
    rule as Splink trains: a session leaves out the comparisons its blocking keys fix
    (those agree by construction there). Returns m and the share of candidate pairs
    that match (the largest any session saw)."""
    m_sum = [np.zeros(len(LEVELS[c])) for c in comparisons]
    m_n = np.zeros(len(comparisons))
    best_prior = 0.0
    for rows, keys in sessions:
        fixed = {_BLOCK_FIXES.get(k, k) for k in keys}
        use = [j for j, c in enumerate(comparisons) if c not in fixed]
        if len(rows) == 0 or not use:
            continue
        lv = levels[rows][:, use]
        uu = [u[j] for j in use]
        m = []
        for j in use:
            n_levels = len(LEVELS[comparisons[j]])
            start = np.full(n_levels, 0.1 / max(n_levels - 1, 1))
            start[0] = 0.9
            m.append(start)
        prior = 0.1
        for _ in range(EM_ITERATIONS):
            p = _probability(lv, m, uu, prior)
            prior = float(np.clip(p.mean(), 1e-6, 1 - 1e-6))
            for i, j in enumerate(use):
                n_levels = len(LEVELS[comparisons[j]])
                counts, total = _level_freq(lv[:, i], n_levels, p)
                if total > 0:
                    m[i] = (counts + 1e-3) / (total + 1e-3 * n_levels)
        for i, j in enumerate(use):
            m_sum[j] += m[i]
            m_n[j] += 1
        best_prior = max(best_prior, prior * len(rows) / max(len(levels), 1))
    out = []
    for j, c in enumerate(comparisons):
        if m_n[j]:
            out.append(m_sum[j] / m_n[j])
        else:  # never trained: a neutral default
            start = np.full(len(LEVELS[c]), 0.1 / max(len(LEVELS[c]) - 1, 1))
            start[0] = 0.9
            out.append(start)
    return out, best_prior


def estimate_from_rules(
    levels: np.ndarray, within: np.ndarray, comparisons: tuple[str, ...]
) -> list[np.ndarray]:
    """``m`` from candidate pairs the rules already put in one cluster (one person, by a
    shared identifier). Unsupervised EM on customer data converges on "same household"
    (surname, street, city) as its match class; the rules' own links are labelled
    matches the data provides for free. EM is the fallback when they are too few."""
    m = []
    for j, name in enumerate(comparisons):
        n_levels = len(LEVELS[name])
        counts, total = _level_freq(levels[within, j], n_levels)
        # pseudo-counts from a typo-aware prior: pairs the rules linked may hold no typo
        # at all, which must not make a close spelling count against a match
        m.append((counts + PRIOR_PAIRS * _m_prior(n_levels)) / (total + PRIOR_PAIRS))
    return m


def _m_prior(n_levels: int) -> np.ndarray:
    """A default m: mostly exact, some close, a few different (sums to 1)."""
    out = np.full(n_levels, 0.03 / max(n_levels - 2, 1))
    out[0], out[-1] = 0.85, 0.03
    if n_levels > 2:
        out[1:-1] = 0.12 / (n_levels - 2)
    return out / out.sum()


def match_weight(
    levels: np.ndarray, m: list[np.ndarray], u: list[np.ndarray], prior: float
) -> np.ndarray:
    """Fellegi–Sunter match weight (log2 Bayes factor plus the prior's log-odds)."""
    w = np.full(len(levels), np.log2(prior / (1 - prior)))
    for j in range(levels.shape[1]):
        lv = levels[:, j]
        has = lv >= 0
        table = np.log2(m[j] / u[j])
        w[has] += table[lv[has]]
    return w


def _probability(levels, m, u, prior) -> np.ndarray:
    w = match_weight(levels, m, u, prior)
    return 1.0 / (1.0 + np.exp2(-np.clip(w, -60, 60)))


# --------------------------------------------------------------------------- decide


def _last_word(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), None, dtype=object)
    has = pd.notna(values)
    if has.any():
        out[has] = pd.Series(values[has], dtype=object).str.rsplit(" ", n=1).str[-1].to_numpy()
    return out


def _evidence(levels: np.ndarray, comparisons: tuple[str, ...], p: np.ndarray) -> list[str]:
    """``match probability 0.93: first_name exact, last_name jw>=0.92, …`` (no values)."""
    out = []
    names = [LEVELS[c] for c in comparisons]
    for row, prob in zip(levels, p, strict=True):
        parts = [f"{comparisons[j]} {names[j][lv]}" for j, lv in enumerate(row.tolist()) if lv >= 0]
        out.append(f"match probability {prob:.3f}: " + ", ".join(parts))
    return out


def _close(x: set[str], y: set[str]) -> bool:
    """Two names a typist could have made of one (Jaro-Winkler >= 0.9, four letters or
    more): the score has weighed them; a veto is for names clearly different."""
    return any(
        min(len(p), len(q)) >= 4 and JaroWinkler.normalized_similarity(p, q) >= 0.9
        for p in x
        for q in y
    )


def _births_agree(x: set[str], y: set[str]) -> bool:
    """Equal, one digit apart, or day and month swapped: a typo, not another person."""
    for p in x:
        for q in y:
            if p == q or Levenshtein.distance(p, q, score_cutoff=1) <= 1:
                return True
            if p[:4] == q[:4] and p[4:6] == q[6:8] and p[6:8] == q[4:6]:
                return True
    return False


def _ambiguous(partners: pd.DataFrame, merger: _Merger) -> set[int]:
    """Clusters (``partners.c``) with strong matches (``o``, weight ``w``) to two clusters
    that refuse each other: such a cluster fits two people and stays apart."""
    count = partners.groupby("c")["o"].transform("size").to_numpy()
    out: set[int] = set()
    for c, grp in (
        partners[count >= 2]
        .sort_values(["c", "w", "o"], ascending=[True, False, True])
        .groupby("c")["o"]
    ):
        # (judged on what the records contradict, not on a household's doubt: a rival the
        # doubt refuses is still a rival)
        others = [o for o in grp.tolist()[:10] if not merger.contradiction(int(c), int(o))]
        if any(merger.contradiction(x, y) for i, x in enumerate(others) for y in others[i + 1 :]):
            out.add(int(c))
    return out


class _Merger:
    """Union-find over the rules' clusters that refuses a merge two clusters' records
    contradict (names, birth dates, kinds, one-per-golden identifiers): a probable link
    never chains two people together through a third record."""

    def __init__(self, inp: MatchInput, touched: np.ndarray, reliable: set[str]) -> None:
        """``touched``: the clusters candidate pairs name (only those are built);
        ``reliable``: the fields whose disagreement refuses a merge."""
        from collections import defaultdict

        from custsync_pipeline.domain.identity_keys import surnames_compatible

        self.surnames_compatible = surnames_compatible
        self.reliable = reliable
        n_c = int(inp.cluster.max()) + 1
        self.parent = list(range(n_c))
        self.first: defaultdict[int, set] = defaultdict(set)
        self.last: defaultdict[int, set] = defaultdict(set)
        self.birth: defaultdict[int, set] = defaultdict(set)
        self.kind: defaultdict[int, set] = defaultdict(set)
        self.email: defaultdict[int, set] = defaultdict(set)
        self.phone: defaultdict[int, set] = defaultdict(set)
        self.cannot: defaultdict[int, set] = defaultdict(set)
        self.family: defaultdict[int, set] = defaultdict(set)
        self.holders: defaultdict[int, set] = defaultdict(set)  # household value -> clusters
        self.ids: dict[int, list[int]] = {}
        wanted = np.zeros(n_c, dtype=bool)
        wanted[touched] = True
        if inp.family is not None:
            # the other holders of a touched cluster's household e-mail are read too: a
            # member the probable link must not be confused with (``_household_doubt``)
            fam = np.flatnonzero(inp.family >= 0)
            codes = np.unique(inp.family[fam[wanted[inp.cluster[fam]]]])
            fam = fam[np.isin(inp.family[fam], codes)]
            wanted[inp.cluster[fam]] = True
            for c, code in zip(inp.cluster[fam].tolist(), inp.family[fam].tolist(), strict=True):
                self.family[c].add(code)
                self.holders[code].add(c)
        rec = np.flatnonzero(wanted[inp.cluster])
        for attr, values in (
            ("first", inp.first_tokens),
            ("last", inp.surnames),
            ("birth", inp.births),
            ("kind", inp.kinds),
            *(
                (name, inp.fields[name][0].astype(object))
                for name in ("email", "phone")
                if name in inp.fields
            ),
        ):
            v = values[rec]
            has = rec[pd.notna(v) & (v != -1)]
            sets = getattr(self, attr)
            for c, v in zip(inp.cluster[has].tolist(), values[has].tolist(), strict=True):
                sets[c].add(v)
        for c in np.flatnonzero(wanted).tolist():
            self.ids[c] = [int(x[c]) for x in inp.single_ids]
        for x, y in inp.cannot:
            cx, cy = int(inp.cluster[x]), int(inp.cluster[y])
            self.cannot[cx].add(cy)
            self.cannot[cy].add(cx)

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def refusal(self, x: int, y: int) -> str:
        """Why clusters ``x`` and ``y`` (roots) may not merge ("" when they may)."""
        why = self.contradiction(x, y)
        if why or not self.holders:
            return why
        return self._household_doubt(x, y) or self._household_doubt(y, x)

    def _household_doubt(self, a: int, b: int) -> str:
        """Could ``a`` be another member of a household it shares an e-mail with than ``b``?

        Another holder of ``a``'s household e-mail fits ``a``'s names too and is clearly
        not ``b``'s person: ``M. Bergström`` beside Margareta, where Mattias is on the
        family e-mail; ``D. Cederholm`` beside Dagny, where Dennis is. Unlike
        ``_ambiguous`` it needs no strong match to the rival: a holder with no address
        (a parcel-box order) is never a candidate pair, yet the e-mail shows it is there.
        """
        if not self.family[a] or self.birth[a] & self.birth[b]:
            return ""  # (one birth date on both: that person's, whoever else lives there)
        # everyone on a's household e-mail whose names fit a's, b among them: two of them
        # clearly different people, and a could be either
        fits = [b]
        seen = {a, b}
        for code in self.family[a]:
            for r in self.holders[code]:
                r = self.find(r)
                if r in seen:
                    continue
                seen.add(r)
                if self.first[r] and self._fits(a, r) and not self.contradiction(a, r):
                    fits.append(r)
        if any(self.contradiction(p, q) for i, p in enumerate(fits) for q in fits[i + 1 :]):
            return "fits two members of a household on its shared e-mail"
        return ""

    def _fits(self, a: int, r: int) -> bool:
        """Do ``r``'s names agree with ``a``'s (first names, and last names where both have)?

        A rival known only by an initial counts beside a whole name too: a household's
        second Åsa, with a birth date of her own, may be known only as "Å."."""
        if not first_name_sets_agree(self.first[a], self.first[r]):
            return False
        return not (
            self.last[a]
            and self.last[r]
            and not any(self.surnames_compatible(p, q) for p in self.last[a] for q in self.last[r])
        )

    def contradiction(self, x: int, y: int) -> str:
        if any(self.find(c) == y for c in self.cannot[x]) or any(
            self.find(c) == x for c in self.cannot[y]
        ):
            return "steward_cannot_link"
        if (
            "birth_date" in self.reliable
            and self.birth[x]
            and self.birth[y]
            and not _births_agree(self.birth[x], self.birth[y])
        ):
            return "birth dates differ"
        if self.kind[x] and self.kind[y] and not (self.kind[x] & self.kind[y]):
            return "a company and a person"
        for i, (p, q) in enumerate(zip(self.ids[x], self.ids[y], strict=True)):
            if p >= 0 and q >= 0 and p != q:
                return f"two values of an identifier limited to one per golden record ({i})"
        swapped = bool(self.first[x] & self.last[y]) and bool(self.last[x] & self.first[y])
        if swapped:
            return ""
        if (
            self.first[x]
            and self.first[y]
            and not (self.first[x] & self.first[y])
            and (
                (self.email[x] and self.email[y] and not (self.email[x] & self.email[y]))
                or (self.phone[x] and self.phone[y] and not (self.phone[x] & self.phone[y]))
            )
        ):
            # only an initial, a nickname or a typo makes the first names agree, and each
            # side has an e-mail or phone of its own: another member of the household
            return "first names agree only loosely and the contact points differ"
        first_differ = (
            "first_name" in self.reliable
            and bool(self.first[x])
            and bool(self.first[y])
            and not first_name_sets_agree(self.first[x], self.first[y])
            and not _close(self.first[x], self.first[y])
        )
        last_differ = (
            "last_name" in self.reliable
            and bool(self.last[x])
            and bool(self.last[y])
            and not any(self.surnames_compatible(p, q) for p in self.last[x] for q in self.last[y])
            and not _close(self.last[x], self.last[y])
        )
        # one name field differing beside the same birth date and the other name agreeing
        # is a typing error or a married name, not a sibling (a sibling has its own birth
        # date; twins with one surname, birth date and a strong score are the known cost)
        same_birth = bool(self.birth[x] & self.birth[y])
        if first_differ and not (same_birth and not last_differ):
            return "first names differ"
        if last_differ and not (same_birth and not first_differ):
            return "last names differ"
        if first_differ and last_differ:
            return "names differ"
        return ""

    def roots(self) -> np.ndarray:
        """The root of every cluster (pointer jumping, vectorized)."""
        roots = np.asarray(self.parent, dtype=np.int64)
        while True:
            nxt = roots[roots]
            if (nxt == roots).all():
                return roots
            roots = nxt

    def union(self, x: int, y: int) -> None:
        self.parent[y] = x
        for attr in ("first", "last", "birth", "kind", "cannot", "email", "phone", "family"):
            getattr(self, attr)[x] |= getattr(self, attr)[y]
        self.ids[x] = [p if p >= 0 else q for p, q in zip(self.ids[x], self.ids[y], strict=True)]


def match_clusters(
    inp: MatchInput, plan: MatchingPlan, params: MatchParams | None = None
) -> MatchOutput:
    """The probabilistic stage over the rules' clusters (see the module docstring).

    ``params``: m, u, prior and reliable fields to decide with instead of estimating
    them (an incremental resolution); ignored when made for other comparisons."""
    n = len(inp.cluster)
    comparisons = tuple(c for c in plan.comparisons if c in inp.fields)
    empty = np.zeros(0, dtype=np.int64)
    nothing = MatchOutput(
        inp.cluster, (empty, empty, np.zeros(0)), (empty, empty, np.zeros(0), []),
        (empty, empty, []), {"match_candidate_pairs": 0},
    )  # fmt: skip
    if n < 2 or not comparisons:
        return nothing
    a, b, proposed_by = candidate_pairs(
        inp.fields, plan.blocking, plan.max_block_size, inp.oversized
    )
    # only records with a name and something besides a contact point are matched: a
    # nameless guest (an e-mail and nothing else) has too little to tell a household's
    # members apart; the rules placed it
    has_name = pd.notna(inp.first_tokens) | pd.notna(inp.surnames)
    has_more = np.zeros(n, dtype=bool)
    for name in ("birth_date", "street", "postal_code", "city"):
        if name in inp.fields:
            has_more |= inp.fields[name][0] >= 0
    named = (has_name & has_more).astype(bool)
    keep = named[a] & named[b]
    a, b, proposed_by = a[keep], b[keep], proposed_by[keep]
    if len(a) == 0:
        return nothing
    levels = compare(inp.fields, a, b, comparisons)
    across = inp.cluster[a] != inp.cluster[b]
    if params is None or params.comparisons != comparisons:
        params = estimate_params(inp, plan, comparisons, levels, across, proposed_by, len(a))
    m = [np.asarray(x) for x in params.m]
    u = [np.asarray(x) for x in params.u]
    prior, how = params.prior, params.trained_on
    weight = match_weight(levels, m, u, prior)
    p = 1.0 / (1.0 + np.exp2(-np.clip(weight, -60, 60)))
    cand = np.flatnonzero(across & (p >= plan.review_threshold))
    why = np.full(len(a), "", dtype=object)
    accept = np.zeros(len(a), dtype=bool)
    cand_all = np.flatnonzero(across & (p >= plan.review_threshold))
    reliable = set(params.reliable)  # the fields whose disagreement refuses a merge
    touched = np.unique(np.r_[inp.cluster[a[cand_all]], inp.cluster[b[cand_all]]])
    merger = _Merger(inp, touched, reliable)
    # a cluster with strong matches to two clusters that refuse each other (a keyless
    # duplicate of "Erik Berg" where father and son live) fits both: it stays apart.
    # Unless one match agrees on the birth date and the other has none to compare and
    # weighs less by the link threshold's odds (0.99: 99 to 1; the odds between two
    # partners are 2 ** the difference of their match weights): an initial and an
    # address are no rival to a full name, a birth date and an address
    hi = np.flatnonzero(across & (p >= plan.link_threshold))
    ca, cb = inp.cluster[a[hi]], inp.cluster[b[hi]]
    j_birth = comparisons.index("birth_date") if "birth_date" in comparisons else -1
    birth_lv = levels[hi, j_birth] if j_birth >= 0 else np.full(len(hi), -1, dtype=np.int8)
    partners = (
        pd.DataFrame(
            {
                "c": np.r_[ca, cb],
                "o": np.r_[cb, ca],
                "w": np.r_[weight[hi], weight[hi]],
                "birth": np.r_[birth_lv, birth_lv],
            }
        )
        .sort_values(["c", "o", "w", "birth"], ascending=[True, True, False, True])
        .drop_duplicates(["c", "o"])  # the best pair per pair of clusters
    )
    # the strongest match that agrees on the birth date, per cluster
    dated = np.where(partners["birth"].to_numpy() == 0, partners["w"].to_numpy(), -np.inf)
    top_dated = partners.assign(d=dated).groupby("c")["d"].transform("max").to_numpy()
    margin = float(np.log2(plan.link_threshold / max(1.0 - plan.link_threshold, 1e-12)))
    outweighed = (partners["w"].to_numpy() < top_dated - margin) & (
        partners["birth"].to_numpy() < 0
    )
    partners = partners[~outweighed]
    ambiguous = _ambiguous(partners, merger)
    # strongest first, a fixed order (probability, then the pair): deterministic
    for i in cand[np.lexsort((b[cand], a[cand], -p[cand]))].tolist():
        x, y = merger.find(int(inp.cluster[a[i]])), merger.find(int(inp.cluster[b[i]]))
        if x == y:
            continue
        reason = merger.refusal(x, y)
        if not reason and (
            int(inp.cluster[a[i]]) in ambiguous or int(inp.cluster[b[i]]) in ambiguous
        ):
            reason = AMBIGUOUS
        if reason:
            why[i] = reason
        elif p[i] >= plan.link_threshold:
            merger.union(x, y)
            accept[i] = True
    # a fixed point: the links made can settle an ambiguity. A rival known only by an
    # initial ("N. Berg") that has since joined the record naming its person in full
    # (Nora, by birth date and address) is no rival to Nils: ambiguity is judged again
    # on the merged clusters, with everything they now hold, until nothing changes
    for _ in range(MAX_ROUNDS):
        waiting = np.flatnonzero(why == AMBIGUOUS)
        if len(waiting) == 0:
            break
        root = merger.roots()
        # only the clusters a waiting pair names are judged again
        ends = np.unique(root[np.r_[inp.cluster[a[waiting]], inp.cluster[b[waiting]]]])
        merged = partners.assign(c=root[partners["c"].to_numpy()], o=root[partners["o"].to_numpy()])
        merged = merged[(merged["c"] != merged["o"]) & np.isin(merged["c"].to_numpy(), ends)]
        merged = merged.sort_values(["c", "o", "w"], ascending=[True, True, False])
        still = _ambiguous(merged.drop_duplicates(["c", "o"]), merger)
        linked = False
        for i in waiting[np.lexsort((b[waiting], a[waiting], -p[waiting]))].tolist():
            x, y = merger.find(int(inp.cluster[a[i]])), merger.find(int(inp.cluster[b[i]]))
            if x == y:
                why[i] = ""
                continue
            if x in still or y in still:
                continue
            why[i] = merger.refusal(x, y)
            if not why[i] and p[i] >= plan.link_threshold:
                merger.union(x, y)
                accept[i] = linked = True
        if not linked:
            break
    new_cluster = merger.roots()[inp.cluster]
    apart = new_cluster[a] != new_cluster[b]
    # review: between the thresholds and nothing refuses it; refused above the link
    # threshold (not by a steward): both go to the queue with their scores
    review = across & apart & (p >= plan.review_threshold) & (p < plan.link_threshold)
    review &= why == ""
    review |= across & apart & (why == AMBIGUOUS)
    # refused above the link threshold: only a clash of identifiers is worth a look; other
    # names or birth dates at one address are a household, told apart already
    refused = across & apart & (p >= plan.link_threshold)
    refused &= pd.Series(why, dtype=object).str.startswith("two values").to_numpy(dtype=bool)
    r = np.flatnonzero(review)
    f = np.flatnonzero(refused)
    stats = {
        "match_candidate_pairs": int(len(a)),
        "match_links": int(accept.sum()),
        "match_review": int(len(r)),
        "match_refused": int(len(f)),
        "match_prior_permille": int(round(prior * 1000)),
        "match_trained_on_rule_pairs": int(how == "rules"),
        "match_vetoing_fields": len(reliable),
    }
    return MatchOutput(
        cluster=new_cluster,
        links=(a[accept], b[accept], p[accept]),
        review=(a[r], b[r], p[r], _evidence(levels[r], comparisons, p[r])),
        refused=(a[f], b[f], [f"match probability {p[i]:.3f}; refused: {why[i]}" for i in f]),
        stats=stats,
        params=params,
    )


def estimate_params(
    inp: MatchInput,
    plan: MatchingPlan,
    comparisons: tuple[str, ...],
    levels: np.ndarray,
    across: np.ndarray,
    proposed_by: np.ndarray,
    n_pairs: int,
) -> MatchParams:
    """m, u, the prior and the reliable fields, from the whole population."""
    n = len(inp.cluster)
    u = estimate_u(inp.fields, comparisons, n)
    sessions = [(np.flatnonzero(proposed_by == i), rule) for i, rule in enumerate(plan.blocking)]
    # the prior is for two random records (u comes from random pairs too): the rules'
    # own linked pairs over all pairs, as Splink estimates it from deterministic rules
    sizes = np.bincount(inp.cluster).astype(np.float64)
    total_pairs = n * (n - 1) / 2
    rule_pairs = float((sizes * (sizes - 1) / 2).sum())
    if (~across).sum() >= MIN_RULE_PAIRS:
        m = estimate_from_rules(levels, ~across, comparisons)
        prior = rule_pairs / total_pairs
        how = "rules"
    else:
        m, share = estimate_m(levels, u, comparisons, sessions)
        prior = max(share * n_pairs, rule_pairs, 1.0) / total_pairs
        how = "em"
    # a name or birth date that differs refuses a merge only where the data shows the
    # field is reliable: one person's records rarely disagree on it (m of "different"
    # under 5%). Customer data: yes (a different first name at one address is a sibling);
    # a data set whose every field is noisy (FEBRL4): the score alone decides
    reliable = tuple(
        c
        for j, c in enumerate(comparisons)
        if c in ("first_name", "last_name", "birth_date") and m[j][-1] < RELIABLE_M
    )
    return MatchParams(
        comparisons=comparisons,
        m=tuple(tuple(float(x) for x in row) for row in m),
        u=tuple(tuple(float(x) for x in row) for row in u),
        prior=float(np.clip(prior, 1e-12, 0.5)),
        reliable=reliable,
        trained_on=how,
    )
