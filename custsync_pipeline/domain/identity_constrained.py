"""The slow path of identity resolution: union-find with constraints.

Only the few clusters that the vectorized fast path flags (a limit broken,
differing first names, a guest between several accounts, a steward decision)
come here. Links are tried strongest first. A link is refused when it would
break the limit of an identifier at least as strong as itself; a limit on a
weaker identifier never refuses it: the weaker identifier's extra values are
dropped from the merged cluster instead (they link nothing more into it) and
reported as ``identifier_dropped``:

1. steward must-links (always applied);
2. system identifiers, by priority (limits and cannot-links checked);
3. contact keys (email, phone) between named clusters, by priority: also refused
   when the two sides' first names clearly differ (a family sharing an email),
   when their other contact point differs, or when their last names (company
   names, for two companies) differ and no second contact point is shared;
4. nameless records (a guest checkout: an email and nothing else) join the
   single named cluster that holds their contact key, or stay apart when
   several do; nameless records no named record shares a key with are
   linked among themselves.

Everything refused is returned as a conflict with both sides and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rapidfuzz.distance import OSA

from custsync_pipeline.domain.identity_keys import (
    companies_compatible,
    mask_name,
    surnames_compatible,
)
from custsync_pipeline.domain.identity_names import first_name_sets_agree


@dataclass
class KeyGroup:
    """The records (local indices) sharing one usable key value."""

    priority: int
    rule_order: int
    rule: str
    key_id: int
    contact: bool
    members: list[int]


@dataclass
class ConstrainedInput:
    n: int
    groups: list[KeyGroup]
    limits: dict[int, int]  # rule index -> max distinct values per cluster
    rule_names: dict[int, str]
    values: list[dict[int, set[int]]]  # per record: rule index -> key ids it holds
    names: list[str | None]
    must: list[tuple[int, int]] = field(default_factory=list)
    cannot: list[tuple[int, int]] = field(default_factory=list)
    contact_rules: list[int] = field(default_factory=list)  # values tracked in ``values`` too
    kinds: list[str | None] = field(default_factory=list)  # person / company per record
    priorities: dict[int, int] = field(default_factory=dict)  # rule index -> priority
    surnames: list[str | None] = field(default_factory=list)  # folded last name per record
    companies: list[str | None] = field(default_factory=list)  # folded company name per record
    births: list[str | None] = field(default_factory=list)  # birth date YYYYMMDD per record


@dataclass
class ConstrainedOutput:
    labels: list[int]
    links: list[tuple[int, int, str, int]]  # a, b, rule, key id (-1 for steward)
    conflicts: list[tuple[str, str, int, int, int, str]]  # kind, rule, key id, a, b, evidence


def _one_edit_apart(x: set[str], y: set[str]) -> bool:
    """Whole first names one typo apart with the first letter kept (``Eiar`` / ``Einar``):
    the same person when the two sides share e-mail *and* phone (names of four letters or
    more; ``Anna`` / ``Erik`` on one e-mail and phone are still a couple)."""
    return any(
        min(len(p), len(q)) >= 4 and p[0] == q[0] and OSA.distance(p, q, score_cutoff=1) <= 1
        for p in x
        for q in y
    )


class _Clusters:
    def __init__(self, inp: ConstrainedInput) -> None:
        self.inp = inp
        self.parent = list(range(inp.n))
        self.members: list[list[int]] = [[i] for i in range(inp.n)]
        self.values = [{r: set(v) for r, v in d.items()} for d in inp.values]
        self.names = [{nm} if nm else set() for nm in inp.names]
        kinds = inp.kinds or [None] * inp.n
        self.kinds = [{k} if k else set() for k in kinds]
        self.surnames = [{x} if x else set() for x in (inp.surnames or [None] * inp.n)]
        self.companies = [{x} if x else set() for x in (inp.companies or [None] * inp.n)]
        self.births = [{x} if x else set() for x in (inp.births or [None] * inp.n)]
        # key ids dropped from a cluster to keep a stronger link under a limit: they link
        # nothing more into that cluster
        self.dropped: list[set[int]] = [set() for _ in range(inp.n)]
        self.cannot: list[set[int]] = [set() for _ in range(inp.n)]
        for a, b in inp.cannot:
            self.cannot[a].add(b)
            self.cannot[b].add(a)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def refusal(self, ra: int, rb: int, check_names: bool, via: int = -1) -> tuple[str, str] | None:
        """Why clusters ``ra`` and ``rb`` must not merge, or None."""
        small, big = (ra, rb) if len(self.members[ra]) <= len(self.members[rb]) else (rb, ra)
        big_members = set(self.members[big])
        for m in self.members[small]:
            if self.cannot[m] & big_members:
                return "steward_cannot_link", "a steward decided these records are different people"
        via_priority = self.inp.priorities.get(via)
        for r_idx, limit in self.inp.limits.items():
            if via_priority is not None and self.inp.priorities.get(r_idx, 0) > via_priority:
                continue  # a weaker identifier gives way: its excess values are dropped instead
            va, vb = self.values[ra].get(r_idx), self.values[rb].get(r_idx)
            if va and vb:
                union = len(va | vb)
                if union > limit:
                    return (
                        "limit_exceeded",
                        f"merge would give {union} {self.inp.rule_names[r_idx]} values (limit {limit})",
                    )
        if (
            check_names
            and self.kinds[ra]
            and self.kinds[rb]
            and not (self.kinds[ra] & self.kinds[rb])
        ):
            # a company's switchboard or info address is not the person who works there
            return "kind_mismatch", "a company and a person share this contact point"
        if check_names and self.births[ra] and self.births[rb]:
            if not (self.births[ra] & self.births[rb]):
                # namesakes in one household (a father and son on the family e-mail)
                return (
                    "birth_date_mismatch",
                    "birth dates differ: a contact point shared by different people",
                )
        corroborated = False  # the two sides also share a second contact point
        if check_names:
            # a shared email between records whose phones differ (or the reverse) is a
            # family or a colleague more often than one person: the contact points disagree
            for r_idx in self.inp.contact_rules:
                if r_idx == via:
                    continue
                va, vb = self.values[ra].get(r_idx), self.values[rb].get(r_idx)
                if va and vb and not (va & vb):
                    return (
                        "contact_mismatch",
                        f"the two sides have different {self.inp.rule_names[r_idx]} values",
                    )
                corroborated |= bool(va and vb)
        if check_names and not corroborated:
            # other surnames or company names on one shared contact point are other holders;
            # with the same email AND phone it is one party renamed (a married name)
            if self.surnames[ra] and self.surnames[rb]:
                if not any(
                    surnames_compatible(x, y) for x in self.surnames[ra] for y in self.surnames[rb]
                ):
                    x, y = min(self.surnames[ra]), min(self.surnames[rb])
                    return (
                        "name_mismatch",
                        f"last names differ ({mask_name(x)} vs {mask_name(y)}): "
                        "a contact point shared by different people",
                    )
            if (
                self.companies[ra]
                and self.companies[rb]
                and self.kinds[ra] <= {"company"}
                and self.kinds[rb] <= {"company"}
                and not any(
                    companies_compatible(x, y)
                    for x in self.companies[ra]
                    for y in self.companies[rb]
                )
            ):
                x, y = min(self.companies[ra]), min(self.companies[rb])
                return (
                    "company_mismatch",
                    f"company names differ ({mask_name(x)} vs {mask_name(y)}): "
                    "a role address or switchboard shared by different companies",
                )
        if check_names and self.names[ra] and self.names[rb]:
            # any agreeing pair will do: a cluster may rightly hold a nickname or a
            # steward-merged second name; two families never share a first name here
            if not first_name_sets_agree(self.names[ra], self.names[rb]) and not (
                corroborated and _one_edit_apart(self.names[ra], self.names[rb])
            ):
                x, y = min(self.names[ra]), min(self.names[rb])
                return (
                    "name_mismatch",
                    f"first names differ ({mask_name(x)} vs {mask_name(y)}): "
                    "a contact point shared by different people",
                )
        return None

    def corroborated(self, ra: int, rb: int, via: int) -> bool:
        """Do both sides hold a second contact point, and share it?"""
        for r_idx in self.inp.contact_rules:
            if r_idx == via:
                continue
            va, vb = self.values[ra].get(r_idx), self.values[rb].get(r_idx)
            if va and vb and (va & vb):
                return True
        return False

    def union(self, ra: int, rb: int) -> int:
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members[rb])
        self.members[rb] = []
        for r_idx, vals in self.values[rb].items():
            self.values[ra].setdefault(r_idx, set()).update(vals)
        self.values[rb] = {}
        self.names[ra] |= self.names[rb]
        self.kinds[ra] |= self.kinds[rb]
        self.surnames[ra] |= self.surnames[rb]
        self.companies[ra] |= self.companies[rb]
        self.births[ra] |= self.births[rb]
        self.dropped[ra] |= self.dropped[rb]
        return ra

    def drop_excess(self, ra: int, rb: int) -> list[tuple[int, int, str]]:
        """Values of weaker identifiers over their limit if ``ra`` and ``rb`` merge.

        The side with more members keeps its values; the other side's extra
        values (lowest key id first out) are dropped. Returns (rule index,
        key id, evidence) per dropped value; call before ``union``.
        """
        keep_side, give_side = (
            (ra, rb) if len(self.members[ra]) >= len(self.members[rb]) else (rb, ra)
        )
        out: list[tuple[int, int, str]] = []
        for r_idx, limit in self.inp.limits.items():
            kept = self.values[keep_side].get(r_idx, set())
            given = self.values[give_side].get(r_idx, set())
            extra = sorted(given - kept)
            room = limit - len(kept)
            if len(extra) <= max(room, 0):
                continue
            drop = extra[max(room, 0) :]
            total = len(kept | given)
            for k in drop:
                given.discard(k)
                self.dropped[give_side].add(k)
                out.append(
                    (
                        r_idx,
                        k,
                        f"kept the stronger link; dropped this {self.inp.rule_names[r_idx]}: "
                        f"the golden record would hold {total} "
                        f"{self.inp.rule_names[r_idx]} values (limit {limit})",
                    )
                )
        return out


def resolve_constrained(inp: ConstrainedInput) -> ConstrainedOutput:
    cl = _Clusters(inp)
    links: list[tuple[int, int, str, int]] = []
    conflicts: list[tuple[str, str, int, int, int, str]] = []

    def try_link(a: int, b: int, group: KeyGroup, check_names: bool) -> bool:
        ra, rb = cl.find(a), cl.find(b)
        if ra == rb:
            return True
        if group.key_id in cl.dropped[ra] or group.key_id in cl.dropped[rb]:
            # this value was dropped from one side to respect a limit: it links nothing there
            conflicts.append(
                (
                    "identifier_dropped",
                    group.rule,
                    group.key_id,
                    a,
                    b,
                    f"this {group.rule} was dropped from a golden record (limit per golden "
                    "record) and no longer links to it",
                )
            )
            return False
        why = cl.refusal(ra, rb, check_names, group.rule_order)
        if why is not None:
            if why[0] != "steward_cannot_link":  # a decided pair needs no review
                conflicts.append((why[0], group.rule, group.key_id, a, b, why[1]))
            return False
        for r_idx, k, evidence in cl.drop_excess(ra, rb):
            holder = next(
                (m for m in cl.members[ra] + cl.members[rb] if k in inp.values[m].get(r_idx, ())),
                a,
            )
            other = b if holder == a else a
            conflicts.append(
                ("identifier_dropped", inp.rule_names[r_idx], k, holder, other, evidence)
            )
        cl.union(ra, rb)
        links.append((a, b, group.rule, group.key_id))
        return True

    def link_group(members: list[int], group: KeyGroup, check_names: bool) -> None:
        # each member joins the first earlier cluster it may join; at most a few tries,
        # and a pair of clusters refused once is not tried again through another member
        # (one refusal = one conflict row)
        refused: set[tuple[int, int]] = set()
        for i in range(1, len(members)):
            tried: set[int] = set()
            for j in range(i):
                if len(tried) >= 8:
                    break
                root = cl.find(members[j])
                if root in tried:
                    continue
                tried.add(root)
                mine = cl.find(members[i])
                pair = (min(mine, root), max(mine, root))
                if pair in refused:
                    continue
                if try_link(members[i], members[j], group, check_names):
                    break
                refused.add(pair)

    def link_contact_group(members: list[int], group: KeyGroup) -> None:
        # holders of one contact key: link those that agree, but a holder that could
        # join two sides which refuse each other (a family where two share a first
        # name) is ambiguous and stays apart
        reps: dict[int, int] = {}
        for m in members:
            reps.setdefault(cl.find(m), m)
        roots = list(reps)
        if len(roots) < 2:
            return
        if len(roots) > 12:  # no per-value limit on this rule: plain sequential linking
            link_group(members, group, check_names=True)
            return
        # holders sharing every contact point (same email AND phone) that nothing refuses
        # are one party first (a married name): the ambiguity check then sees them as one
        merged_any = False
        for i in range(len(roots)):
            for j in range(i + 1, len(roots)):
                ri, rj = cl.find(roots[i]), cl.find(roots[j])
                if ri != rj and cl.corroborated(ri, rj, group.rule_order):
                    if cl.refusal(ri, rj, True, group.rule_order) is None:
                        merged_any |= try_link(reps[roots[i]], reps[roots[j]], group, True)
        if merged_any:
            reps = {}
            for m in members:
                reps.setdefault(cl.find(m), m)
            roots = list(reps)
            if len(roots) < 2:
                return
        why = {
            (i, j): cl.refusal(roots[i], roots[j], True, group.rule_order)
            for i in range(len(roots))
            for j in range(i + 1, len(roots))
        }

        def refused(i: int, j: int) -> tuple[str, str] | None:
            return why[(i, j)] if i < j else why[(j, i)]

        ambiguous: set[int] = set()
        for i in range(len(roots)):
            friends = [j for j in range(len(roots)) if j != i and refused(i, j) is None]
            for x in range(len(friends)):
                for y in range(x + 1, len(friends)):
                    if refused(friends[x], friends[y]) is not None:
                        ambiguous.add(i)
        for (i, j), reason in why.items():
            if reason is not None and reason[0] != "steward_cannot_link":
                conflicts.append(
                    (reason[0], group.rule, group.key_id, reps[roots[i]], reps[roots[j]], reason[1])
                )
        for i in sorted(ambiguous):
            conflicts.append(
                (
                    "ambiguous_link",
                    group.rule,
                    group.key_id,
                    reps[roots[i]],
                    reps[roots[next(j for j in range(len(roots)) if j != i)]],
                    f"this {group.rule} is shared by people who differ, and this record fits "
                    "more than one of them: left apart",
                )
            )
        for (i, j), reason in why.items():
            if reason is None and i not in ambiguous and j not in ambiguous:
                try_link(reps[roots[i]], reps[roots[j]], group, check_names=True)

    for a, b in inp.must:
        ra, rb = cl.find(a), cl.find(b)
        if ra != rb:
            cl.union(ra, rb)
            links.append((a, b, "steward", -1))

    ordered = sorted(inp.groups, key=lambda g: (g.contact, g.priority, g.rule_order, g.key_id))
    for g in ordered:
        if not g.contact:
            link_group(g.members, g, check_names=False)

    def named(m: int) -> bool:
        return bool(cl.names[cl.find(m)])

    # contact keys between clusters that carry a name (the evidence a family check needs)
    contact_groups = [g for g in ordered if g.contact]
    for g in contact_groups:
        link_contact_group([m for m in g.members if named(m)], g)

    # nameless clusters (guest checkouts: an email and nothing else) join the one named
    # cluster that every contact key they hold points to (the family e-mail's holders
    # narrowed by the phone); several candidates left: they stay apart. Nameless records
    # that no named record shares a key with are linked among themselves (the
    # contact-point, surname and company checks still apply). Both steps repeat until
    # nothing changes, so a record whose partner joined late follows it.
    def guest_pass() -> None:
        per_guest: dict[int, dict[int, tuple[KeyGroup, dict[int, tuple[int, int]]]]] = {}
        for g in contact_groups:
            holders = [m for m in g.members if named(m)]
            if not holders:
                continue
            for gm in g.members:
                if named(gm):
                    continue
                slot = per_guest.setdefault(cl.find(gm), {}).setdefault(g.key_id, (g, {}))[1]
                for am in holders:
                    slot.setdefault(cl.find(am), (gm, am))
        for rg in sorted(per_guest):
            by_key = per_guest[rg]
            candidates: set[int] | None = None
            for _g, slot in by_key.values():
                candidates = set(slot) if candidates is None else candidates & set(slot)
            if candidates is not None and len(candidates) == 1:
                target = next(iter(candidates))
                g, slot = next((g, slot) for g, slot in by_key.values() if target in slot)
                try_link(*slot[target], g, check_names=True)
                continue
            for g, slot in by_key.values():
                if len(slot) < 2 and candidates:
                    continue
                for gm, am in slot.values():
                    conflicts.append(
                        (
                            "ambiguous_guest",
                            g.rule,
                            g.key_id,
                            gm,
                            am,
                            f"record without a name shares this {g.rule} with "
                            f"{len(slot)} different people"
                            + ("" if len(slot) > 1 else ", its other keys with others")
                            + ": left apart",
                        )
                    )

    def nameless_pass() -> None:
        for g in contact_groups:
            if any(named(m) for m in g.members):
                continue
            link_group(g.members, g, check_names=True)

    for _ in range(20):  # a fixed point; a handful of passes at most in practice
        before = len(links)
        guest_pass()
        nameless_pass()
        if len(links) == before:
            break

    labels = [cl.find(i) for i in range(inp.n)]
    return ConstrainedOutput(labels=labels, links=links, conflicts=conflicts)
