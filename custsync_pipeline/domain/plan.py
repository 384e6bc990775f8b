"""The sync plan: what the domain needs to know of a sync config, as plain frozen values.

The YAML file is parsed and validated once (``custsync_pipeline.config``) into
a :class:`SyncPlan`; identity resolution, survivorship and delta computation
read only this plan, never the file, the way Splink keeps its settings apart
from its engine. ``domain/`` never imports ``config.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from custsync_pipeline.domain.aspects import ASPECT_FIELDS, ENTRY_ASPECTS

CURRENT_DATA = "current_data"


@dataclass(frozen=True)
class IdentifierRule:
    """One identifier type used to link records (``identity.identifiers[]``)."""

    name: str
    columns: tuple[str, ...]
    priority: int
    max_per_golden: int | None = None
    blocked_values: tuple[str, ...] = ()
    blocked_patterns: tuple[str, ...] = ()
    max_records_per_value: int | None = None


@dataclass(frozen=True)
class MatchingPlan:
    """The probabilistic stage of identity resolution (``identity.matching``).

    Thresholds are match probabilities of a Fellegi–Sunter model with m and u
    estimated from the data (``domain.identity_match``).
    """

    enabled: bool = True
    link_threshold: float = 0.99
    review_threshold: float = 0.90
    comparisons: tuple[str, ...] = (
        "first_name",
        "last_name",
        "birth_date",
        "street",
        "postal_code",
        "city",
        "email",
        "phone",
    )
    blocking: tuple[tuple[str, ...], ...] = (
        ("last_name_phonetic", "postal_code"),
        ("last_name_phonetic", "city"),
        ("birth_date",),
        ("first_name_phonetic", "postal_code"),
        ("street", "postal_code"),
        ("first_name_phonetic", "last_name_phonetic"),
    )
    max_block_size: int = 30


@dataclass(frozen=True)
class FlowStep:
    """One step of the flow: a connector and the aspects it contributes."""

    connector: str
    aspects: tuple[str, ...]


@dataclass(frozen=True)
class PublishPolicy:
    """One publish target: the golden fields and aspects it takes, and what it refuses."""

    connector: str
    fields: tuple[str, ...]
    aspects: tuple[str, ...] = ()
    # (field, overwrite | review): what a target-side change to a field becomes
    conflicts: tuple[tuple[str, str], ...] = ()
    batch_size: int | None = None
    kinds: tuple[str, ...] | None = None
    required_fields: tuple[str, ...] = ()
    delete_mode: str = "none"  # delete | archive | none: a customer gone from the source
    archive_payload: tuple[tuple[str, object], ...] = ()  # (wire field, value) pairs
    # golden field the target keys its records by, unique there (Voyado: email): a create
    # whose value another of its records holds, or several creates share, is held back
    key_field: str | None = None


@dataclass(frozen=True)
class ConsentRule:
    """One consent in a market: whether it applies there, and its value when nobody set it."""

    field: str  # email_consent | sms_consent
    applies: bool = True
    default: str | None = None  # yes | no | None (stays unknown)


@dataclass(frozen=True)
class MarketPlan:
    """One market (seed 004: sync "by store, market and language", ``markets.<name>``).

    A customer belongs to the first market whose ``store_codes`` hold its store code,
    else to the first whose ``countries`` hold its country (``domain.markets``).
    """

    name: str
    countries: tuple[str, ...] = ()
    store_codes: tuple[str, ...] = ()
    language: str | None = None  # filled in when a customer has none
    phone_region: str | None = None  # region of national numbers at the market's stores
    consents: tuple[ConsentRule, ...] = ()
    targets: tuple[str, ...] | None = None  # publish targets that receive it (None: all)


@dataclass(frozen=True)
class QualityGate:
    """A lane's data-quality thresholds and phone regions (``connectors.<c>.quality``)."""

    min_valid_rate: float = 0.95
    min_rows: int = 1
    max_duplicate_rate: float = 0.0
    max_age_hours: float = 168.0
    default_region: str | None = None
    market_regions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectorPlan:
    """What the pipeline needs to know of one enabled connector."""

    name: str
    type: str
    role: str
    aspects: tuple[str, ...]
    quality: QualityGate = field(default_factory=QualityGate)
    declared: bool = True  # aspects listed in its config entry (else taken from its steps)


@dataclass(frozen=True)
class SyncPlan:
    """Identifier rules, flow steps with their aspects, ownership and publish policies."""

    connectors: Mapping[str, ConnectorPlan]
    identifiers: tuple[IdentifierRule, ...]
    source: str
    steps: tuple[FlowStep, ...]
    ownership: Mapping[str, str] = field(default_factory=dict)
    publish: tuple[PublishPolicy, ...] = ()
    state_db_url: str = "sqlite:///.custsync/state.sqlite"
    matching: MatchingPlan = field(default_factory=MatchingPlan)
    # resolve only what a change reaches, unless its scope is above this share of records
    incremental_identity: bool = True
    identity_scope_max_share: float = 0.25
    delete_grace_runs: int = 2  # runs gone from the source of truth before targets delete
    extract_retries: int = 2  # step retries of an extraction after transient API failures
    extract_retry_delay_s: float = 10.0  # before the first; doubling
    markets: tuple[MarketPlan, ...] = ()

    @property
    def uses_current_data(self) -> bool:
        """Seed 001's ``current data`` source: the stored golden state is the first step."""
        return self.source == CURRENT_DATA

    def flow_order(self) -> list[str]:
        """Connectors in flow order: the source first, then enrichments (later wins)."""
        order: list[str] = []
        for step in self.steps:
            if step.connector not in order:
                order.append(step.connector)
        return order

    def target(self, connector: str) -> PublishPolicy:
        for policy in self.publish:
            if policy.connector == connector:
                return policy
        raise KeyError(f"{connector!r} is not a publish target")

    def target_fields(self, connector: str) -> list[str]:
        """The target's fields, less any field another connector owns... or the target itself.

        A field owned by the target is its to set: pushing it back would overwrite
        the owner with a copy of its own (possibly stale) value. The primary fields of an
        aspect the target takes as entries (``city`` when it takes ``addresses``) are left
        to the entries.
        """
        policy = self.target(connector)
        owned = {f for f, owner in self.ownership.items() if owner == connector}
        # a target that takes an aspect's entries gets them in its address blocks (or
        # contact fields): the aspect's flat primary fields would write the same slots
        superseded = {f for a in policy.aspects for f in ASPECT_FIELDS.get(a, ())}
        return [f for f in policy.fields if f not in owned and f not in superseded]

    def stored_aspects(self, connector: str) -> tuple[str, ...]:
        """Aspects a lane keeps entries of: those it gives, and those it takes as a publish
        target (its own copy is what deltas compare the golden entries with)."""
        taken = [a for p in self.publish if p.connector == connector for a in p.aspects]
        return tuple(dict.fromkeys([*self.connectors[connector].aspects, *taken]))


def check_plan(plan: SyncPlan, capabilities: Mapping[str, frozenset[str]]) -> list[str]:
    """Cross-reference errors of ``plan`` (empty when it holds together).

    ``capabilities``: connector type -> aspects its module can give (a type not in
    it, such as the generic ``rest`` and ``file`` connectors, can give any).
    """
    errors: list[str] = []
    for i, step in enumerate(plan.steps):
        where = "flow.source" if i == 0 and not plan.uses_current_data else "flow.enrichments"
        conn = plan.connectors.get(step.connector)
        if conn is None:
            continue  # reported by the config's own reference check
        can = capabilities.get(conn.type)
        for aspect in step.aspects:
            if conn.declared and aspect not in conn.aspects:
                errors.append(
                    f"{where}: aspect {aspect!r} of step {step.connector!r} is not among "
                    f"connectors.{step.connector}.aspects {list(conn.aspects)}"
                )
            elif can is not None and aspect not in can:
                errors.append(
                    f"connectors.{step.connector}.aspects: a {conn.type!r} connector cannot "
                    f"give aspect {aspect!r} (it gives {sorted(can)})"
                )
    given = {a for s in plan.steps for a in s.aspects}
    field_aspect = {f: a for a, fields in ASPECT_FIELDS.items() for f in fields}
    for i, policy in enumerate(plan.publish):
        for fld in (*policy.fields, *policy.required_fields):
            aspect = field_aspect.get(fld)
            if aspect is not None and aspect not in given and fld not in plan.ownership:
                errors.append(
                    f"publish[{i}].fields: {fld!r} of target {policy.connector!r} is carried "
                    f"by aspect {aspect!r}, which no flow step gives"
                )
        for aspect in policy.aspects:
            if aspect not in ENTRY_ASPECTS:
                errors.append(
                    f"publish[{i}].aspects: {aspect!r} of target {policy.connector!r} is not a "
                    f"multi-valued aspect; known: {list(ENTRY_ASPECTS)}"
                )
            elif aspect not in given:
                errors.append(
                    f"publish[{i}].aspects: aspect {aspect!r} of target {policy.connector!r} "
                    "is given by no flow step"
                )
    for fld in plan.ownership:
        if fld not in field_aspect:
            errors.append(f"flow.ownership.{fld}: not a golden field owned through an aspect")
    return errors
