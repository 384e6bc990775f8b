"""A second, independent test-data generator for identity resolution, with known truth.

Written apart from ``custsync_pipeline.sandbox.generator`` (it shares no code and no
name lists with it) so that the identity rules are judged on data they were not
tuned to. It produces canonical records of five systems — a CRM (Contacts with
duplicates), a loyalty club, a web shop that keeps the whole name in one field,
an ERP (customers and companies, one ``Name`` field) and a newsletter tool (e-mail
only) — and the person behind every record. Its traps and noise:

- nicknames and short forms (``Bill`` for ``William``, ``Kalle`` for ``Karl``),
  initials, dropped accents, one-letter typos in names;
- first and last name swapped;
- full names in one field (``Svensson, Anna``, ``Dr. Anna Berg``), companies too;
- households of two to twelve people on one e-mail and/or one landline, with two
  namesakes in the larger ones (a father and son ``Erik Svensson``, told apart by
  birth date and mobile);
- shared landlines between households' members whose e-mails differ;
- e-mail typos (``gmial.com``, a dropped letter), missing e-mail or phone;
- CRM duplicates with no e-mail and no phone, only name and address;
- a role address (``order@…``) and a till placeholder phone typed for many people;
- guest checkouts (newsletter, shop) with an e-mail and nothing else.

``generate(seed, people)`` returns ``(records, truth)``: canonical, normalized
records (``domain.normalize``) and ``connector, source_id, person_id``, plus the
records' trap labels in ``truth.trap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from custsync_pipeline.domain.canonical import conform

FIRST = {
    "f": ["Amelia", "Beatrice", "Clara", "Dagny", "Ebba", "Freja", "Gunilla", "Hedda", "Ingrid",
          "Josefin", "Katarina", "Linnea", "Margareta", "Nora", "Olivia", "Petra", "Ronja",
          "Sigrid", "Tuva", "Ulrika", "Vera", "Wilma", "Yvonne", "Agnes", "Elisabeth", "Susanne",
          "Kristina", "Rebecka", "Charlotte", "Helena", "Birgitta", "Patricia", "Jennifer",
          "Emelie", "Astrid", "Solveig", "Märta", "Åsa", "Eleonora", "Frida"],
    "m": ["Albin", "Bertil", "Casper", "Dennis", "Einar", "Fredrik", "Gustav", "Hampus", "Isak",
          "Joakim", "Karl", "Leif", "Mattias", "Nils", "Oskar", "Per", "Rasmus", "Sixten",
          "Torbjörn", "Ulf", "Valter", "William", "Yngve", "Anders", "Robert", "Thomas", "Daniel",
          "Henrik", "Niklas", "Lars", "Richard", "Michael", "Benjamin", "Samuel", "Göran",
          "Jörgen", "Östen", "Håkan", "Edvard", "Filip"],
}  # fmt: skip
NICK = {
    "William": "Bill", "Robert": "Bob", "Thomas": "Tommy", "Daniel": "Danne",
    "Henrik": "Henke", "Niklas": "Nicke", "Lars": "Lasse", "Richard": "Rick",
    "Michael": "Micke", "Benjamin": "Benny", "Samuel": "Sam", "Karl": "Kalle", "Per": "Pelle",
    "Joakim": "Jocke", "Fredrik": "Fredde", "Elisabeth": "Lisa", "Susanne": "Sanna",
    "Kristina": "Stina", "Rebecka": "Becky", "Charlotte": "Lotta", "Helena": "Lena",
    "Birgitta": "Britt", "Patricia": "Trish", "Jennifer": "Jenny", "Katarina": "Kajsa",
    "Margareta": "Greta", "Gustav": "Gösta", "Edvard": "Ed", "Filip": "Phil",
}  # fmt: skip
LAST = ["Ahlberg", "Björklund", "Cederholm", "Dahlgren", "Ekström", "Forsberg", "Grahn",
        "Hedlund", "Isaksson", "Jönsson", "Kjellberg", "Lundqvist", "Mårtensson", "Nordin",
        "Öberg", "Pettersson", "Quist", "Rydberg", "Sandström", "Törnqvist", "Ullman", "Vikström",
        "Wallin", "Zetterlund", "Åkesson", "Bergström", "Holmgren", "Lindahl", "Sjöberg",
        "Strand", "Nyström", "Engström", "Hägglund", "Fransson", "Blom", "Falk", "Lund", "Sundberg",
        "Wikström", "Hallberg", "Ström", "Magnusson", "Axelsson", "Eklund", "Backman", "Rosén",
        "Carlsson-Berg", "af Ekenstam", "von Platen", "Mäkinen", "Nguyen", "O'Brien", "Kowalski",
        "Andersen", "Haugen", "Virtanen", "Jensen", "Olsen", "Berglund", "Näslund"]  # fmt: skip
STREETS = ["Storgatan", "Kungsvägen", "Ringvägen", "Skolgatan", "Björkvägen", "Parkgatan",
           "Södra vägen", "Kyrkogatan", "Hamngatan", "Ekvägen", "Tallstigen", "Ängsvägen"]  # fmt: skip
CITIES = [("Umeå", "903"), ("Luleå", "972"), ("Växjö", "352"), ("Gävle", "802"),
          ("Borås", "503"), ("Kalmar", "392"), ("Falun", "791"), ("Visby", "621"),
          ("Östersund", "831"), ("Karlstad", "652"), ("Lund", "223"), ("Sundsvall", "852")]  # fmt: skip
DOMAINS = ["gmail.com", "hotmail.com", "outlook.com", "telia.com", "yahoo.se", "icloud.com"]
TYPO_DOMAINS = {"gmail.com": "gmial.com", "hotmail.com": "hotmal.com", "outlook.com": "outlok.com"}
COMPANY_WORDS = ["Bygg", "Konsult", "Design", "Trading", "Media", "Transport", "Fastigheter"]
ROLE_ADDRESS = "order@butiken-norr.se"  # on no block list
PLACEHOLDER_PHONE = "+46700000111"  # typed at a till for many customers


@dataclass
class _Person:
    pid: int
    kind: str
    first: str
    last: str
    company: str | None
    birth: str
    email: str | None
    mobile: str | None
    landline: str | None
    street: str
    postal: str
    city: str
    household: int
    trap: str
    namesake: bool = False  # shares first and last name with a member of the household


def _ascii(text: str) -> str:
    table = str.maketrans("åäöÅÄÖéüøæ", "aaoAAOeuoa")
    return text.translate(table)


def _typo(rng: np.random.Generator, word: str) -> str:
    if len(word) < 5:
        return word
    i = int(rng.integers(2, len(word) - 1))  # never the first letters
    return word[:i] + word[i + 1 :] if rng.random() < 0.5 else word[:i] + word[i] + word[i:]


def _email(rng, first: str, last: str, n: int) -> str:
    local = _ascii(f"{first}.{last}").lower().replace(" ", "").replace("'", "")
    return f"{local}{n}@{DOMAINS[int(rng.integers(len(DOMAINS)))]}"  # unique: n is the person


def _people(rng: np.random.Generator, n: int) -> list[_Person]:
    out: list[_Person] = []
    pid = 0
    household = 0
    while pid < n:
        household += 1
        city, postal3 = CITIES[int(rng.integers(len(CITIES)))]
        street = f"{STREETS[int(rng.integers(len(STREETS)))]} {int(rng.integers(1, 120))}"
        postal = f"{postal3} {int(rng.integers(10, 99))}"
        last = LAST[int(rng.integers(len(LAST)))]
        landline = f"+46{int(rng.integers(10, 99))}{int(rng.integers(100000, 999999))}"
        r = rng.random()
        if r < 0.04:  # a company
            name = f"{last} {COMPANY_WORDS[int(rng.integers(len(COMPANY_WORDS)))]} AB"
            out.append(
                _Person(pid, "company", "", "", name, "", f"info{pid}@{_ascii(last).lower()}.se",
                        None, landline, street, postal, city, household, "company")
            )  # fmt: skip
            pid += 1
            continue
        # household size: mostly one or two, some families, a few big ones (8-12)
        size = (
            1
            if r < 0.55
            else 2
            if r < 0.8
            else int(rng.integers(3, 6))
            if r < 0.97
            else int(rng.integers(8, 13))
        )
        shared_email = None
        if size > 1 and rng.random() < 0.5:
            shared_email = f"familjen.{_ascii(last).lower()}{household}@{DOMAINS[0]}"
        shared_line = size > 1 and rng.random() < 0.6
        namesake_of: _Person | None = None
        used: set[str] = set()
        for k in range(size):
            if pid >= n:
                break
            sex = "f" if rng.random() < 0.5 else "m"
            first = FIRST[sex][int(rng.integers(len(FIRST[sex])))]
            while first in used:  # parents do not give two children one name ...
                first = FIRST[sex][int(rng.integers(len(FIRST[sex])))]
            if size >= 8 and k == 1 and namesake_of is not None:
                first = namesake_of.first  # ... but a son may carry his father's
            used.add(first)
            year = int(rng.integers(1940, 2008))
            birth = f"{year}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
            own_email = _email(rng, first, last, pid) if rng.random() < 0.85 else None
            email = shared_email if shared_email and rng.random() < 0.8 else own_email
            mobile = f"+467{int(rng.integers(0, 4))}{int(rng.integers(1000000, 9999999))}"
            if rng.random() < 0.15:
                mobile = None
            trap = "household_big" if size >= 8 else "household" if size > 1 else ""
            p = _Person(pid, "person", first, last, None, birth, email, mobile,
                        landline if shared_line else None, street, postal, city, household, trap)  # fmt: skip
            if k == 0:
                namesake_of = p
            elif first == namesake_of.first:
                p.namesake = namesake_of.namesake = True
            out.append(p)
            pid += 1
    return out


def _name_variant(rng, p: _Person) -> tuple[str, str, str]:
    """(first, last, noise label) as another system typed them."""
    first, last, label = p.first, p.last, ""
    r = rng.random()
    if r < 0.06 and p.first in NICK:
        first, label = NICK[p.first], "nickname"
    elif r < 0.09:
        first, label = first[0] + ".", "initial"
    elif r < 0.13:
        first, last, label = _ascii(first), _ascii(last), "accents_dropped"
    elif r < 0.16:
        first, label = _typo(rng, first), "name_typo"
    elif r < 0.19:
        first, last, label = last, first, "swapped_names"
    return first, last, label


def _full(rng, first: str, last: str) -> str:
    r = rng.random()
    if r < 0.15:
        return f"{last}, {first}"
    if r < 0.2:
        return f"Dr. {first} {last}"
    return f"{first} {last}"


def generate(seed: int = 1, people: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical normalized records of five systems and the truth (see the module doc)."""
    from custsync_pipeline.domain.normalize import normalize_customers

    rng = np.random.default_rng(seed)
    persons = _people(rng, people)
    rows: list[dict] = []
    truth: list[tuple[str, str, int, str]] = []
    counter = {"crm": 0, "loyalty": 0, "shop": 0, "erp": 0, "news": 0}

    def add(system: str, p: _Person, trap: str, **fields) -> None:
        counter[system] += 1
        sid = f"{system[:2].upper()}{seed}-{counter[system]:07d}"
        rows.append({"connector": system, "source_id": sid, "kind": p.kind, **fields})
        truth.append((system, sid, p.pid, trap or p.trap))

    for p in persons:
        phone = p.mobile or p.landline
        placeholder = rng.random() < 0.01
        if placeholder:
            phone = PLACEHOLDER_PHONE
        email = p.email
        email_trap = ""
        if email and rng.random() < 0.04 and email.split("@")[1] in TYPO_DOMAINS:
            local, dom = email.split("@")
            email, email_trap = f"{local}@{TYPO_DOMAINS[dom]}", "email_typo"
        crm_id = f"003{p.pid:012d}"
        cust_no = f"K{100000 + p.pid}"
        address = dict(street=p.street, postal_code=p.postal, city=p.city, country="SE")
        if p.kind == "company":
            add("crm", p, "", company_name=p.company, email=p.email, phone=p.landline,
                salesforce_id=crm_id, customer_number=cust_no, **address)  # fmt: skip
            add("erp", p, "", full_name=p.company, customer_number=cust_no, phone=p.landline,
                **address)  # fmt: skip
            if rng.random() < 0.5:
                add("news", p, "", email=p.email)
            continue
        # CRM: most people; a duplicate with only name and address for some
        # (namesakes are both in the CRM, with their birth dates: told apart somewhere)
        if rng.random() < 0.8 or p.namesake:
            f, la, lab = _name_variant(rng, p)
            add("crm", p, lab or email_trap, first_name=f, last_name=la, email=email,
                phone=phone, salesforce_id=crm_id, birth_date=p.birth,
                customer_number=cust_no if rng.random() < 0.5 else None, **address)  # fmt: skip
            if rng.random() < 0.08:
                add("crm", p, "crm_duplicate_no_keys", first_name=p.first, last_name=p.last,
                    **address)  # fmt: skip
        # loyalty: own e-mail and mobile, a reference to the CRM sometimes
        if rng.random() < 0.6:
            f, la, lab = _name_variant(rng, p)
            mail = email if rng.random() < 0.9 else None
            add("loyalty", p, lab or ("missing_email" if mail is None else ""), first_name=f,
                last_name=la, email=mail, phone=p.mobile if rng.random() < 0.8 else None,
                birth_date=p.birth if rng.random() < 0.7 else None,
                salesforce_id=crm_id if rng.random() < 0.3 else None, **address)  # fmt: skip
        # web shop: the whole name in one field; a role address for a few orders
        if rng.random() < 0.45:
            f, la, lab = _name_variant(rng, p)
            role = rng.random() < 0.01
            # an order has a delivery address (a parcel box for some: no street)
            delivery = dict(address) if rng.random() < 0.85 else {"city": p.city}
            add("shop", p, "role_email" if role else lab, full_name=_full(rng, f, la),
                email=ROLE_ADDRESS if role else email,
                phone=phone if rng.random() < 0.5 else None, **delivery)  # fmt: skip
        # ERP: customer number and a Name field
        if rng.random() < 0.25:
            f, la, lab = _name_variant(rng, p)
            add("erp", p, lab, full_name=_full(rng, f, la), customer_number=cust_no,
                email=email if rng.random() < 0.5 else None, **address)  # fmt: skip
        # newsletter: an e-mail and nothing else (a guest)
        # (a newsletter is signed up for with one's own address far more often)
        if email and rng.random() < (0.3 if email == p.email and "familjen" not in email else 0.05):
            add("news", p, "guest", email=email)
        if placeholder:
            truth[-1] = (*truth[-1][:3], "placeholder_phone")
    records = normalize_customers(conform(pd.DataFrame(rows)), default_region="SE")
    truth_df = pd.DataFrame(truth, columns=["connector", "source_id", "person_id", "trap"])
    return records, truth_df


def pair_count(sizes: np.ndarray) -> int:
    sizes = sizes.astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def score(identity_map: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Pairwise precision and recall, and golden records holding several people."""
    m = identity_map.merge(truth, on=["connector", "source_id"], how="inner")
    true_pairs = pair_count(m.groupby("person_id").size().to_numpy())
    pred_pairs = pair_count(m.groupby("golden_id").size().to_numpy())
    tp = pair_count(m.groupby(["golden_id", "person_id"]).size().to_numpy())
    per_golden = m.groupby("golden_id")["person_id"].nunique()
    mixed = per_golden[per_golden > 1].index
    return {
        "precision": tp / pred_pairs if pred_pairs else 1.0,
        "recall": tp / true_pairs if true_pairs else 1.0,
        "true_pairs": true_pairs,
        "pred_pairs": pred_pairs,
        "tp": tp,
        "mixed": len(mixed),
        "mixed_rows": m[m["golden_id"].isin(mixed)],
        "m": m,
    }
