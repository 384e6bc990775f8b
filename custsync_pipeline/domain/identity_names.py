"""Names for identity resolution: splitting a full-name field, telling companies from
people, and comparing names the way people write them.

- ``split_full_names``: a whole name in one field (Voucherify ``name``, an Exact
  Online ``Name``, a CRM export's ``Full Name``) -> first / last / company. Two
  plain words are split directly (most names, vectorized); the rest — commas
  (``Svensson, Anna``), titles, particles (``van der Berg``), several words —
  go to ``nameparser``, once per distinct value. A legal form (``AB``, ``GmbH``,
  ``Ltd``) or a company word (``Consulting``, ``Holding``) makes it a company.
- ``first_names_compatible``: could two first names be one person's? Accents
  folded, an initial or short form (``J`` / ``Jo`` / ``Johan``), a nickname
  (``Bill`` / ``William``, ``Kalle`` / ``Karl``), or one typo that keeps the first
  letter (``Anan`` / ``Anna``, but not ``Angela`` / ``Ingela``: two names, not a typo).
  This is only a *veto* check: a compatible name never links records on its own.
  A Nordic first letter is a letter of its own for an initial: ``Ö`` agrees with
  ``Östen`` (and a plain ``O``), not with ``Oskar`` (``nordic_initials``).
- ``swapped_names``: records whose first and last name were typed the wrong way
  round (``first_name = "Svensson"``, ``last_name = "Anna"``), told from how often
  each word is a first or a last name across the whole run.

Pure: pandas/numpy, ``nameparser`` and ``rapidfuzz``; no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np
import pandas as pd
from nameparser import HumanName
from rapidfuzz.distance import OSA

# letters NFKD does not decompose: without this "Søren" would become "s", an initial
_FOLD = str.maketrans(
    {"ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "ß": "ss", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l",
     "þ": "th", "Þ": "th", "ð": "d", "Ð": "d", "œ": "oe", "Œ": "oe", "ı": "i"}
)  # fmt: skip

# legal forms: a name holding one is a company
LEGAL_FORMS = frozenset(
    {"ab", "aktiebolag", "as", "asa", "aps", "oy", "oyj", "gmbh", "ag", "bv", "nv", "ltd",
     "limited", "plc", "inc", "llc", "corp", "co", "sa", "sarl", "srl", "spa", "hb", "kb"}
)  # fmt: skip
# legal forms that are also given names (Norwegian "ASA" / Swedish "Åsa", "Asa" without its
# ring): a legal form only when written in capitals, as companies write it ("Equinor ASA")
NAME_LIKE_FORMS = frozenset({"asa"})
# words that name an organisation, not a person (checked folded, whole words)
COMPANY_WORDS = frozenset(
    {"company", "corporation", "group", "holding", "holdings", "consulting", "consultants",
     "services", "solutions", "systems", "trading", "partners", "associates", "industries",
     "international", "foundation", "stiftelse", "forening", "forbund", "kommun", "bygg",
     "konsult", "fastigheter", "handelsbolag", "restaurang", "salong", "studio", "design",
     "media", "logistics", "transport", "shop", "store", "butik", "kliniken", "clinic",
     "hotel", "cafe", "bar", "school", "skola", "university", "bank", "insurance", "gruppen",
     "teknik", "data", "it", "el", "vvs", "maleri", "ekonomi", "redovisning", "advokatbyra"}
)  # fmt: skip
# lower-case name particles that belong to the surname
_PARTICLES = frozenset({"af", "av", "von", "van", "der", "den", "de", "da", "di", "du", "la", "le"})

# Nicknames and short forms -> the formal names they stand for (English and Nordic).
# A short form that is a prefix (``Chris`` / ``Christina``) needs no entry: a prefix agrees.
_NICKNAMES: dict[str, tuple[str, ...]] = {
    "bill": ("william",), "will": ("william",), "billy": ("william",), "liam": ("william",),
    "bob": ("robert",), "bobby": ("robert",), "rob": ("robert",), "robbie": ("robert",),
    "dick": ("richard",), "rick": ("richard",), "rich": ("richard",), "ricky": ("richard",),
    "jim": ("james",), "jimmy": ("james",), "jamie": ("james",),
    "jack": ("john", "jacob"), "johnny": ("john",), "jon": ("jonathan", "john"),
    "mike": ("michael",), "mick": ("michael",), "micke": ("michael", "mikael"),
    "tom": ("thomas", "tomas"), "tommy": ("thomas", "tomas"),
    "tony": ("anthony", "anton"), "ted": ("edward", "theodore"), "ed": ("edward", "edvard"),
    "eddie": ("edward",), "ned": ("edward",),
    "kate": ("katherine", "catherine", "katarina"), "katie": ("katherine", "catherine"),
    "cathy": ("catherine",), "kathy": ("katherine",), "kaisa": ("katarina",),
    "kajsa": ("katarina",), "karin": ("katarina",), "kattis": ("katarina",),
    "liz": ("elizabeth", "elisabeth"), "beth": ("elizabeth", "elisabeth"),
    "betty": ("elizabeth", "elisabeth"), "lisa": ("elizabeth", "elisabeth"),
    "lise": ("elisabeth",), "elsa": ("elisabeth",), "lotta": ("charlotte",),
    "peggy": ("margaret",), "maggie": ("margaret",), "meg": ("margaret",),
    "greta": ("margareta",), "maja": ("maria",), "mia": ("maria",), "mimmi": ("maria",),
    "sue": ("susan", "susanne"), "susie": ("susan",), "sanna": ("susanna", "susanne"),
    "jenny": ("jennifer",), "jen": ("jennifer",), "becky": ("rebecca", "rebecka"),
    "nick": ("nicholas", "niklas"), "nicke": ("niklas",), "klas": ("niklas",),
    "kalle": ("karl", "carl"), "calle": ("carl", "karl"), "lasse": ("lars",),
    "lars": ("laurentius",), "pelle": ("per",), "pers": ("per",), "nisse": ("nils",),
    "olle": ("olof", "ola"), "ola": ("olof",), "janne": ("jan", "johan"), "hasse": ("hans",),
    "jocke": ("joakim",), "steve": ("steven", "stephen", "stefan"), "danne": ("daniel",),
    "dan": ("daniel",), "danny": ("daniel",), "sam": ("samuel", "samantha"),
    "alex": ("alexander", "alexandra"), "sasha": ("alexander", "alexandra"),
    "andy": ("andrew", "anders", "andreas"), "drew": ("andrew",), "ville": ("vilhelm",),
    "fredde": ("fredrik",), "fred": ("frederick", "fredrik"), "freddie": ("frederick",),
    "gus": ("gustav", "augustus"), "gösta": ("gustav",), "gosta": ("gustav",),
    "berit": ("birgitta",), "britt": ("birgitta",), "gittan": ("birgitta",),
    "stina": ("kristina", "christina"), "kicki": ("kristina",), "tina": ("kristina", "christina"),
    "ulla": ("ulrika",), "annie": ("anna",), "anki": ("anna",), "lena": ("helena", "magdalena"),
    "malin": ("magdalena",), "maddie": ("madeleine", "madison"), "abby": ("abigail",),
    "patty": ("patricia",), "trish": ("patricia",), "pat": ("patrick", "patricia"),
    "larry": ("lawrence",), "harry": ("henry", "harold"), "hank": ("henry",),
    "henke": ("henrik",), "chuck": ("charles",), "charlie": ("charles", "charlotte"),
    "joe": ("joseph",), "joey": ("joseph",), "josh": ("joshua",), "ben": ("benjamin",),
    "benny": ("benjamin", "bengt"), "matt": ("matthew", "mattias"), "matte": ("mattias",),
    "dave": ("david",), "davy": ("david",), "greg": ("gregory",), "jeff": ("jeffrey",),
    "phil": ("philip", "filip"), "pip": ("philip",), "ron": ("ronald",), "don": ("donald",),
    "tim": ("timothy",), "zach": ("zachary",), "emmy": ("emma", "emelie"), "ellie": ("eleanor",),
    "nell": ("eleanor", "helen"), "nellie": ("helen",), "jill": ("gillian",),
}  # fmt: skip


# Nordic letters are letters of their own at the start of a first name: an initial "Ö."
# is Örjan's or Östen's, never Oskar's (Swedish Ö is Danish-Norwegian Ø, Ä is Æ; Å is its
# own). A first-name token keeps such a first letter (``östen``, ``ö``: ``nordic_initials``);
# every comparison but an initial's reads the token with it folded away (``plain``)
_NORDIC = {"å": "å", "ä": "ä", "æ": "ä", "ö": "ö", "ø": "ö"}
_PLAIN = str.maketrans({"å": "a", "ä": "a", "ö": "o"})
_FIRST_LETTER = re.compile(r"[^\W\d_]")


def plain(token: str) -> str:
    """A first-name token with its Nordic first letter folded (``östen`` -> ``osten``)."""
    return token.translate(_PLAIN)


def _nordic_initial(token: str) -> bool:
    return len(token) == 1 and token in "åäö"


def nordic_initials(first_names: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """First-name tokens with the Nordic letter their name is written with kept first.

    ``tokens``: folded first-name tokens (``identity_keys.name_tokens``) of the raw
    ``first_names``. ``Östen`` -> ``östen``, ``Ö.`` -> ``ö``, ``Ørjan`` -> ``örjan``. A name
    the run also writes without the dots (``Osten`` beside ``Östen``: a system that drops
    accents) gets the written form too, so both stay one token; a name never written with
    the letter (``Oskar``) keeps its plain token. Computed once per distinct value.
    """
    out = np.asarray(tokens, dtype=object).copy()
    has = pd.notna(first_names) & pd.notna(out)
    if not has.any():
        return out
    idx = np.flatnonzero(has)
    # the token is a function of the first-name field: one look per distinct field value
    code, uniq = pd.factorize(np.asarray(first_names, dtype=object)[idx])
    first_of = np.empty(len(uniq), dtype=np.int64)
    first_of[code[::-1]] = np.arange(len(code) - 1, -1, -1)  # each value's first record
    new = out[idx[first_of]]
    marked = np.zeros(len(new), dtype=bool)
    for i, (value, t) in enumerate(zip(uniq.tolist(), new.tolist(), strict=True)):
        letter = _FIRST_LETTER.search(str(value))
        k = _NORDIC.get(letter.group(0).lower(), "") if letter else ""
        if k and t[:1] == plain(k):
            new[i], marked[i] = k + t[1:], True
    # the same name written without its letter: one written form per plain name
    written: dict[str, set[str]] = {}
    for t in new[marked].tolist():
        if len(t) > 1:
            written.setdefault(plain(t), set()).add(t)
    restore = {p: next(iter(ts)) for p, ts in written.items() if len(ts) == 1}
    for i in np.flatnonzero(~marked).tolist() if restore else []:
        new[i] = restore.get(new[i], new[i])
    out[idx] = new[code]
    return out


def fold(value: str) -> str:
    """Accents folded (``Søren`` -> ``soren``), lower case, letters, digits and spaces only."""
    text = unicodedata.normalize("NFKD", str(value).translate(_FOLD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.findall(r"[a-z0-9]+", text))


def _formal(name: str) -> set[str]:
    return {name, *_NICKNAMES.get(name, ())}


def formal_names(name: str) -> tuple[str, ...]:
    """The formal names a folded nickname stands for (``lisa`` -> elizabeth, elisabeth)."""
    return _NICKNAMES.get(name, ())


@lru_cache(maxsize=262144)
def first_names_compatible(a: str, b: str) -> bool:
    """Could two folded first-name tokens be one person's? (see the module docstring)."""
    if a == b:
        return True
    if _nordic_initial(a) or _nordic_initial(b):
        # "ö" is a name written with Ö (``östen``) or an initial without its dots ("o": a
        # system that drops accents), never a name written with O (``oskar``)
        i, other = (a, b) if _nordic_initial(a) else (b, a)
        return other.startswith(i) or other == plain(i)
    a, b = plain(a), plain(b)
    if a == b:
        return True
    if a.startswith(b) or b.startswith(a):
        return True  # "j" / "jo" / "johan": an initial or a short form
    fa, fb = _formal(a), _formal(b)
    if fa & fb:
        return True  # "bill" / "william", "kalle" / "calle"
    if any(x.startswith(y) or y.startswith(x) for x in fa for y in fb):
        return True  # "liz" -> "elizabeth" / "eliza"
    # one typo, in the names as typed or in the formal names behind a nickname
    # ("margreta" / "greta": Margareta with a letter dropped)
    return any(_one_typo(x, y) for x in fa for y in fb)


def _one_typo(a: str, b: str) -> bool:
    if min(len(a), len(b)) < 4 or a[0] != b[0]:
        return False  # "angela" / "ingela" is two names, not a typo
    if OSA.distance(a, b, score_cutoff=1) > 1:
        return False  # more than one insert, delete, substitute or swap
    # short names one letter apart ("anna" / "anne", "jan" / "jon") are two people as
    # often as a typo: there only two swapped letters count ("anan")
    return min(len(a), len(b)) >= 5 or sorted(a) == sorted(b)


def first_name_sets_agree(x: set[str] | frozenset[str], y: set[str] | frozenset[str]) -> bool:
    """Could two sets of first-name tokens (two clusters' names) be one person's?

    Some pair must agree, judged on whole names where a side has any: an initial
    ``n`` beside ``nora`` does not make the cluster agree with ``niklas``.
    """
    fx = {t for t in x if len(t) > 1} or set(x)
    fy = {t for t in y if len(t) > 1} or set(y)
    return any(first_names_compatible(p, q) for p in fx for q in fy)


# two plain words, each letters (and inner hyphens or apostrophes): "Anna Svensson"
_SIMPLE = re.compile(r"^[^\W\d_]+(?:['-][^\W\d_]+)* [^\W\d_]+(?:['-][^\W\d_]+)*$")


def _is_company(folded: str, text: str = "") -> bool:
    """A legal form or company word among the folded words (``text``: the name as typed,
    for the legal forms that are also given names: ``Åsa Berg`` is a person)."""
    upper = set(re.findall(r"[^\W\d_]+", text)) if text else set()
    return any(
        w in COMPANY_WORDS
        or (w in LEGAL_FORMS and (w not in NAME_LIKE_FORMS or w.upper() in upper))
        for w in folded.split()
    )


def _parse_one(value: str) -> tuple[str | None, str | None, str | None]:
    """(first, last, company) of one full name that is not two plain words."""
    text = " ".join(value.split())
    folded = fold(text)
    if not folded:
        return None, None, None
    if _is_company(folded, text) or "&" in text:
        return None, None, text
    words = text.split(" ")
    before, _, after = text.partition(",")
    after_words = after.split()
    if len(before.split()) == 1 and len(after_words) >= 2 and after_words[0] in _PARTICLES:
        # "Fredrik, af Ekenstam": a given name, then the surname with its particle
        return before.strip(" ."), " ".join(after_words), None
    if "," not in text and len(words) >= 2 and words[0] in _PARTICLES:
        # a surname's particle opens the name: surname first ("von Platen Kristina",
        # "van der Berg Jan", or the surname alone); no given name starts with "von" or "af"
        k = 0
        while k < len(words) - 1 and words[k] in _PARTICLES:
            k += 1
        rest = words[k + 1 :]
        return (rest[0] if rest else None), " ".join(words[: k + 1]), None
    human = HumanName(text)
    first = human.first.strip(" .") or None
    last = human.last.strip() or None
    if first is None and "," in text:
        # "Berg, V.": nameparser reads a lone V, I or X as a generation suffix (the fifth);
        # after a surname and a comma it is the given name's initial
        given = text.split(",", 1)[1].split()
        if given and re.fullmatch(r"[^\W\d_]\.?", given[0]):
            first = given[0].strip(".")
    middle = human.middle.split()
    # nameparser reads "Anna Maria Svensson Berg" as first Anna, last Berg: keep
    # middle words that are particles or capitalised surnames with the last name
    # only when they are particles; other middle names are dropped (first name wins)
    particles = [w for w in middle if w.lower() in _PARTICLES]
    if particles and last:
        last = " ".join([*particles, last])
    if first is None and last is None:
        return None, text, None
    if first is not None and last is None and " " not in text:
        return None, first, None  # a single word: a surname more often than not
    return first, last, None


def split_full_names(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per value (object array, None/NA when missing): (first, last, company) arrays.

    Computed once per distinct value; two plain words split without the parser.
    """
    n = len(values)
    first = np.full(n, None, dtype=object)
    last = np.full(n, None, dtype=object)
    company = np.full(n, None, dtype=object)
    present = np.flatnonzero(pd.notna(values))
    if len(present) == 0:
        return first, last, company
    code, uniq = pd.factorize(pd.Series(values[present], dtype=object).astype(str).str.strip())
    u = pd.Series(uniq, dtype=object)
    simple = u.str.match(_SIMPLE).to_numpy(dtype=bool)
    # a lower-case particle first ("von Platen"): a surname, read by ``_parse_one``
    simple &= ~u.str.split(" ", n=1).str[0].isin(_PARTICLES).to_numpy(dtype=bool)
    u_first = np.full(len(u), None, dtype=object)
    u_last = np.full(len(u), None, dtype=object)
    u_company = np.full(len(u), None, dtype=object)
    if simple.any():
        parts = u[simple].str.split(" ", n=1, expand=True)
        # a legal form or company word among the two ("Acme AB") still makes a company
        # (a legal form that is also a given name only in capitals: "Asa Berg" is a person)
        folded_words = parts.apply(lambda col: col.str.lower())
        company_word = LEGAL_FORMS | COMPANY_WORDS
        comp = np.zeros(len(parts), dtype=bool)
        for col in (0, 1):
            word = folded_words[col]
            name_like = word.isin(NAME_LIKE_FORMS) & (parts[col] != parts[col].str.upper())
            comp |= (word.isin(company_word) & ~name_like).to_numpy(dtype=bool)
        idx = np.flatnonzero(simple)
        comp_arr = comp
        u_first[idx[~comp_arr]] = parts[0].to_numpy(dtype=object)[~comp_arr]
        u_last[idx[~comp_arr]] = parts[1].to_numpy(dtype=object)[~comp_arr]
        u_company[idx[comp_arr]] = u[simple].to_numpy(dtype=object)[comp_arr]
    for i in np.flatnonzero(~simple):  # the irregular few: once per distinct value
        u_first[i], u_last[i], u_company[i] = _parse_one(u.iat[i])
    first[present], last[present], company[present] = u_first[code], u_last[code], u_company[code]
    return first, last, company


def fill_names(recs: pd.DataFrame) -> pd.DataFrame:
    """First, last and company name completed from ``full_name`` (in place; returns ``recs``).

    Only empty fields are filled, so a record that has its name split keeps it. A
    name typed whole into ``first_name`` or ``last_name`` while the other is empty
    (a file export mapped to one column) is read as a full name too.
    """
    n = len(recs)
    for col in ("first_name", "last_name", "company_name"):
        if col not in recs.columns:
            recs[col] = np.full(n, None, dtype=object)
    first = recs["first_name"].to_numpy(dtype=object).copy()
    last = recs["last_name"].to_numpy(dtype=object).copy()
    company = recs["company_name"].to_numpy(dtype=object).copy()
    kind = (
        recs["kind"].to_numpy(dtype=object)
        if "kind" in recs.columns
        else np.full(n, None, dtype=object)
    )
    is_company = pd.Series(kind, dtype=object).astype(str).str.lower().eq("company").to_numpy()
    has_first, has_last = pd.notna(first), pd.notna(last)
    full = (
        recs["full_name"].to_numpy(dtype=object).copy()
        if "full_name" in recs.columns
        else np.full(n, None, dtype=object)
    )
    no_split = ~has_first & ~has_last & pd.isna(company)
    # a whole name in a single name column: "Anna Svensson" in last_name, first_name empty
    one_col = ~is_company & (has_first ^ has_last) & pd.isna(full)
    if one_col.any():
        only = np.where(has_first, first, last)
        spaced = pd.Series(only[one_col], dtype=object).astype(str).str.contains(" ", regex=False)
        pick = np.flatnonzero(one_col)[spaced.to_numpy(dtype=bool)]
        full[pick] = only[pick]
        first[pick] = None
        last[pick] = None
        no_split[pick] = True
    todo = np.flatnonzero(no_split & pd.notna(full))
    if len(todo) == 0:
        return recs
    f, la, c = split_full_names(full[todo])
    company_kind = is_company[todo]
    # a record the source calls a company keeps the whole name as its company name
    c = np.where(company_kind & pd.isna(c), full[todo], c)
    f = np.where(company_kind, None, f)
    la = np.where(company_kind, None, la)
    first[todo], last[todo] = f, la
    company[todo] = np.where(pd.notna(c), c, company[todo])
    recs["first_name"], recs["last_name"], recs["company_name"] = first, last, company
    if "kind" in recs.columns:
        k = kind.copy()
        k[todo] = np.where(pd.notna(c) & pd.isna(f) & pd.isna(la), "company", k[todo])
        recs["kind"] = k
    return recs


def swap_words(
    first: np.ndarray, last: np.ndarray, whole: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(has both, first-name word, last-name word) per record as ``swapped_names`` counts
    them (the words None where a name is missing)."""
    has = (pd.notna(first) & pd.notna(last)).astype(bool)
    fw = np.full(len(first), None, dtype=object)
    lw = np.full(len(first), None, dtype=object)
    if has.any():
        fw[has] = np.asarray(first, dtype=object)[has].astype(str)
        s_code, s_uniq = pd.factorize(np.asarray(last, dtype=object)[has])
        s_word = np.array(
            [str(v) if whole else str(v).split(" ")[-1] for v in s_uniq], dtype=object
        )
        lw[has] = s_word[s_code]
    return has, fw, lw


class WordRoles:
    """How often each word is a first name and a last name in the whole population (by a
    64-bit hash of the word), for ``swapped_names`` on part of it."""

    def __init__(self, first_hashes: np.ndarray, last_hashes: np.ndarray) -> None:
        both = np.unique(np.r_[first_hashes, last_hashes])
        self.words = both[both != 0]
        self.as_first = np.bincount(
            np.searchsorted(self.words, first_hashes[first_hashes != 0]), minlength=len(self.words)
        )
        self.as_last = np.bincount(
            np.searchsorted(self.words, last_hashes[last_hashes != 0]), minlength=len(self.words)
        )

    def counts(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(as first name, as last name) per hash (0 for an unknown word)."""
        if len(self.words) == 0:  # a population without names: every word unknown
            return np.zeros(len(hashes), dtype=np.int64), np.zeros(len(hashes), dtype=np.int64)
        pos = np.searchsorted(self.words, hashes)
        pos = np.minimum(pos, len(self.words) - 1)
        hit = self.words[pos] == hashes
        return np.where(hit, self.as_first[pos], 0), np.where(hit, self.as_last[pos], 0)


def role_hashes(words: np.ndarray, whole: bool) -> np.ndarray:
    """A fixed 64-bit hash per word (0 when missing), one space of hashes per pass."""
    words = np.asarray(words, dtype=object)
    out = np.zeros(len(words), dtype=np.uint64)
    has = pd.notna(words).astype(bool)
    if has.any():
        salt = "2\x1f" if whole else "1\x1f"
        text = np.array([salt + str(w) for w in words[has]], dtype=object)
        out[has] = pd.util.hash_array(text, categorize=False) | np.uint64(1)
    return out


def swapped_names(
    first: np.ndarray, last: np.ndarray, whole: bool = False, roles: WordRoles | None = None
) -> np.ndarray:
    """Which records have first and last name typed the wrong way round (bool array).

    ``first`` and ``last`` are folded first-name tokens and last names (None when
    missing). A record is swapped when its first-name word is seen clearly more
    often as a last name in this run and its last name's word more often as a
    first name (``Svensson`` / ``Anna``). Counting is vectorized; one pass.

    ``whole``: compare whole folded fields rather than the last name's last word (a
    surname of several words typed as the first name: ``Carlsson-Berg`` / ``Ingrid``,
    ``af Ekenstam`` / ``Karl``; ``first`` is then the whole folded first-name field).
    ``roles``: the whole population's counts, when these records are only part of it.
    """
    out = np.zeros(len(first), dtype=bool)
    has = pd.notna(first) & pd.notna(last)
    if not has.any():
        return out
    if roles is not None:
        _, fw, lw = swap_words(first, last, whole)
        f_as_first, f_as_last = roles.counts(role_hashes(fw[has], whole))
        l_as_first, l_as_last = roles.counts(role_hashes(lw[has], whole))
    else:
        # everything on codes of distinct words: a million records, a few thousand names
        f_code, f_uniq = pd.factorize(first[has])
        s_code, s_uniq = pd.factorize(last[has])
        s_word = np.array(
            [str(v) if whole else str(v).split(" ")[-1] for v in s_uniq], dtype=object
        )
        words, inverse = np.unique(
            np.concatenate([np.asarray(f_uniq, dtype=object).astype(str), s_word.astype(str)]),
            return_inverse=True,
        )
        fw_id = inverse[: len(f_uniq)][f_code]  # word id of each record's first name
        lw_id = inverse[len(f_uniq) :][s_code]  # word id of each record's last name's last word
        as_first = np.bincount(fw_id, minlength=len(words))
        as_last = np.bincount(lw_id, minlength=len(words))
        f_as_first, f_as_last = as_first[fw_id], as_last[fw_id]
        l_as_first, l_as_last = as_first[lw_id], as_last[lw_id]
    out[np.flatnonzero(has)] = swap_rule(f_as_first, f_as_last, l_as_first, l_as_last)
    return out


def swap_rule(
    f_as_first: np.ndarray, f_as_last: np.ndarray, l_as_first: np.ndarray, l_as_last: np.ndarray
) -> np.ndarray:
    """The swap decision from a record's word counts (the record itself among them)."""
    # the record itself counts once each way: leave it out. "Clearly": the first-name word
    # is a last name of two others or more, the last-name word a first name of another,
    # each over three times as often as the other way
    f_as_first, l_as_last = f_as_first - 1, l_as_last - 1
    return (
        (f_as_last >= 2)
        & (f_as_last > 3 * f_as_first)
        & (l_as_first >= 1)
        & (l_as_first > 3 * l_as_last)
    )
