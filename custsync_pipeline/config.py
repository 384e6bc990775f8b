"""The sync config: one YAML file loaded into validated pydantic models.

It names the connectors (type, base URL, the env vars that hold their
credentials, their role in the flow and the aspects they give), the identity
rules, the survivorship flow and ownership, and the publish targets. A bad
file stops with a message naming the key and what is wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from custsync_pipeline.domain import plan as domain_plan
from custsync_pipeline.domain.aspects import ASPECTS, ENTRY_ASPECTS, VENDOR_ASPECTS
from custsync_pipeline.domain.canonical import GOLDEN_FIELDS
from custsync_pipeline.domain.plan import SyncPlan

DEFAULT_CONFIG_PATH = Path(__file__).with_name("sync_config.yaml")
CONFIG_ENV_VAR = "CUSTSYNC_CONFIG"


# What a source connector gives when neither it nor a flow step names its aspects.
DEFAULT_ASPECTS = ("name", "customer_contact_details")


class ConfigError(ValueError):
    """The sync config is unreadable or invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_region(code: str) -> bool:
    """Shaped like an ISO 3166-1 alpha-2 code (``SE``): what phonenumbers takes as a region."""
    return len(code) == 2 and code.isalpha() and code.isupper()


class QualityConfig(_Strict):
    """Data-quality thresholds of one connector's lane (``connectors.<name>.quality``).

    ``min_valid_rate`` and ``min_rows`` drive the blocking ``valid_row_rate``
    check: below them the lane keeps its last good source records. The
    region options say where a national phone number (no ``+``) is dialled
    when the record's country does not tell.
    """

    min_valid_rate: float = Field(
        default=0.95, ge=0.0, le=1.0, description="share of received rows that must be valid"
    )
    min_rows: int = Field(
        default=1,
        ge=0,
        description="fewer received rows fail the check (1: an API answering an empty list "
        "never wipes the stored records; 0 for a system that may truly be empty)",
    )
    max_duplicate_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="extra copies of a source id tolerated"
    )
    max_age_hours: float = Field(
        default=7 * 24.0, gt=0, description="newest updated_at older than this warns"
    )
    default_region: str | None = Field(
        default=None, description="ISO alpha-2 region for national phone numbers (e.g. SE)"
    )
    market_regions: dict[str, str] = Field(
        default_factory=dict,
        description="store_code (the record's market) -> ISO alpha-2 phone region",
    )

    @field_validator("default_region")
    @classmethod
    def _region_code(cls, value: str | None) -> str | None:
        if value is not None and not _is_region(value):
            raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 code such as 'SE'")
        return value

    @field_validator("market_regions")
    @classmethod
    def _market_codes(cls, value: dict[str, str]) -> dict[str, str]:
        for store, region in value.items():
            if not _is_region(region):
                raise ValueError(f"{store}: {region!r} is not an ISO 3166-1 alpha-2 code")
        return value


class ConnectorConfig(_Strict):
    """One system custsync reads from and/or writes to."""

    type: str = Field(
        description="connector module: salesforce, voucherify, voyado, exact, icomm, rest, file"
    )
    base_url: str = Field(default="", description="API root, e.g. http://127.0.0.1:8701")
    credentials: dict[str, str] = Field(
        default_factory=dict,
        description="credential name -> NAME of the env var holding it (never the secret itself)",
    )
    role: Literal["source", "enrichment", "target", "transactions"] = Field(
        default="enrichment",
        description="source / enrichment / target of customer records, or transactions (a "
        "web shop / POS order feed: no customer lane, read by the transactions section)",
    )
    aspects: list[str] | None = Field(
        default=None,
        description="aspects it gives (default: those its flow steps name; a source step "
        "without them: name and customer_contact_details)",
    )
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict, description="connector-specific settings")
    quality: QualityConfig = Field(
        default_factory=QualityConfig, description="valid-row, freshness and region settings"
    )

    @field_validator("aspects")
    @classmethod
    def _known_aspects(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(ASPECTS))
        if unknown:
            raise ValueError(f"unknown aspect(s) {unknown}; known: {list(ASPECTS)}")
        return value

    @field_validator("credentials")
    @classmethod
    def _env_var_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, env_name in value.items():
            if (
                not env_name
                or not env_name.replace("_", "").isalnum()
                or env_name != env_name.upper()
            ):
                raise ValueError(
                    f"credentials.{key} must name an environment variable (UPPER_CASE), "
                    "not hold a secret"
                )
        return value


class IdentifierRule(_Strict):
    """One identifier type used to link records (Segment Unify / Hightouch style)."""

    name: str
    columns: list[str] = Field(description="canonical column(s); several form one composite key")
    priority: int = Field(ge=1, description="1 = strongest")
    max_per_golden: int | None = Field(
        default=None, ge=1, description="limit of distinct values per golden record"
    )
    blocked_values: list[str] = Field(default_factory=list)
    blocked_patterns: list[str] = Field(
        default_factory=list, description="regexes, matched against the normalized value"
    )
    max_records_per_value: int | None = Field(
        default=None, ge=2, description="a value shared by more records than this is not a link"
    )

    @field_validator("columns")
    @classmethod
    def _canonical_columns(cls, value: list[str]) -> list[str]:
        # a misspelt column would read as missing in every record: the rule silently off
        from difflib import get_close_matches

        from custsync_pipeline.domain.canonical import CANONICAL_COLUMNS

        if not value:
            raise ValueError("name at least one canonical column")
        for col in value:
            if col not in CANONICAL_COLUMNS:
                near = get_close_matches(col, CANONICAL_COLUMNS, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"{col!r} is not a canonical column{hint}")
        return value

    @model_validator(mode="after")
    def _patterns_compile(self) -> IdentifierRule:
        # a broken regex must stop the config load, not the identity run hours later
        for i, pattern in enumerate(self.blocked_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"identity.identifiers[{self.name}].blocked_patterns[{i}] is not a valid "
                    f"regex ({exc}): {pattern!r}"
                ) from exc
        return self


class MatchingConfig(_Strict):
    """``identity.matching``: the probabilistic stage (docs/identity.md)."""

    enabled: bool = True
    link_threshold: float = Field(default=0.99, gt=0, lt=1)
    review_threshold: float = Field(default=0.90, gt=0, lt=1)
    comparisons: list[str] = Field(
        default_factory=lambda: list(domain_plan.MatchingPlan.comparisons)
    )
    blocking: list[list[str]] = Field(
        default_factory=lambda: [list(b) for b in domain_plan.MatchingPlan.blocking]
    )
    max_block_size: int = Field(default=30, ge=2)

    @model_validator(mode="after")
    def _known(self) -> MatchingConfig:
        from custsync_pipeline.domain.identity_match import BLOCKING_KEYS, COMPARISONS

        if self.review_threshold > self.link_threshold:
            raise ValueError("identity.matching.review_threshold is above link_threshold")
        for c in self.comparisons:
            if c not in COMPARISONS:
                raise ValueError(
                    f"identity.matching.comparisons: {c!r} is not one of {list(COMPARISONS)}"
                )
        for i, rule in enumerate(self.blocking):
            for key in rule:
                if key not in BLOCKING_KEYS:
                    raise ValueError(
                        f"identity.matching.blocking[{i}]: {key!r} is not one of {list(BLOCKING_KEYS)}"
                    )
        return self

    def to_plan(self) -> domain_plan.MatchingPlan:
        return domain_plan.MatchingPlan(
            enabled=self.enabled,
            link_threshold=self.link_threshold,
            review_threshold=self.review_threshold,
            comparisons=tuple(self.comparisons),
            blocking=tuple(tuple(b) for b in self.blocking),
            max_block_size=self.max_block_size,
        )


class IncrementalConfig(_Strict):
    """``identity.incremental``: resolve only the records a change can reach
    (docs/identity.md#incremental-resolution)."""

    enabled: bool = True
    max_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="above this share of the records in the change's scope, resolve all",
    )


class IdentityConfig(_Strict):
    identifiers: list[IdentifierRule]
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    incremental: IncrementalConfig = Field(default_factory=IncrementalConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> IdentityConfig:
        names = [r.name for r in self.identifiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"identifier name(s) repeated: {dupes}")
        return self


class FlowStep(_Strict):
    connector: str
    aspects: list[str] = Field(default_factory=list)


class FlowConfig(_Strict):
    """Seed 001: a source (``current_data`` or a connector) then ordered enrichment steps."""

    source: str
    enrichments: list[FlowStep] = Field(default_factory=list)
    ownership: dict[str, str] = Field(
        default_factory=dict, description="golden field -> the only connector allowed to set it"
    )


class PublishTarget(_Strict):
    connector: str
    fields: list[str] = Field(description="golden fields this target subscribes to")
    conflicts: dict[str, Literal["overwrite", "review"]] = Field(
        default_factory=dict,
        description="field -> what a target-side change to it becomes: overwrite (default: "
        "the golden value is sent back) or review (left alone, withheld from writes, and "
        "queued for a person in `custsync conflicts`)",
    )

    @model_validator(mode="after")
    def _conflicts_name_sent_fields(self) -> PublishTarget:
        unknown = sorted(set(self.conflicts) - set(self.fields))
        if unknown:
            raise ValueError(
                f"conflicts: {unknown} are not fields this target takes (its fields: {self.fields})"
            )
        return self

    aspects: list[str] = Field(
        default_factory=list,
        description="multi-valued aspects this target takes (addresses, customer_attributes …)",
    )
    batch_size: int | None = Field(default=None, ge=1)
    kinds: list[Literal["person", "company"]] | None = Field(
        default=None, description="golden kinds the target takes (default: all)"
    )
    required_fields: list[str] = Field(
        default_factory=list,
        description="golden fields the target cannot do without; records lacking one are held back",
    )
    delete_mode: Literal["delete", "archive", "none"] = Field(
        default="none",
        description="what a customer gone from the source of truth becomes in this target, "
        "after deletes.grace_runs: deleted, archived (archive_payload sent), or left alone",
    )
    archive_payload: dict[str, Any] = Field(
        default_factory=dict,
        description="the target's own fields that mark a record archived (delete_mode archive)",
    )
    key_field: str | None = Field(
        default=None,
        description="golden field the target keys its records by, unique there (Voyado: "
        "email): a create whose value another of its records holds, or that several creates "
        "share, is held back instead of failing or overwriting someone else's record",
    )

    @model_validator(mode="after")
    def _archive_needs_payload(self) -> PublishTarget:
        if self.delete_mode == "archive" and not self.archive_payload:
            raise ValueError("archive_payload: required when delete_mode is archive")
        return self


# connector types that cannot be publish targets, and why (the config refuses them)
REFUSED_TARGETS: dict[str, str] = {
    "exact": "Exact Online's API has no upsert and no idempotency key (a replayed POST "
    "creates a second Account), every Account needs a Name and Contacts exist only under "
    "their Account, and it allows 60 calls a minute / 5,000 a day, one record a call; "
    "custsync reads Exact as an enrichment source but does not write to it",
}

CONSENT_FIELDS = ("email_consent", "sms_consent")


class ConsentRuleConfig(_Strict):
    """``markets.<m>.consents.<consent>``: whether it applies in the market, its default."""

    applies: bool = Field(
        default=True, description="false: the consent is not used in this market (never sent)"
    )
    default: Literal["yes", "no"] | None = Field(
        default=None, description="value sent when nobody set the consent (default: none)"
    )


class MarketConfig(_Strict):
    """``markets.<name>``: one market (seed 004: sync by store, market and language)."""

    countries: list[str] = Field(
        default_factory=list, description="ISO alpha-2 countries of its customers"
    )
    store_codes: list[str] = Field(
        default_factory=list, description="its stores; a store code decides before a country"
    )
    language: str | None = Field(
        default=None, description="ISO 639-1 language given to its customers who have none"
    )
    phone_region: str | None = Field(
        default=None, description="ISO alpha-2 region of national phone numbers at its stores"
    )
    consents: dict[str, ConsentRuleConfig] = Field(
        default_factory=dict, description="consent field -> applies / default"
    )
    targets: list[str] | None = Field(
        default=None, description="publish targets that receive its customers (default: all)"
    )

    @field_validator("countries", "phone_region", mode="before")
    @classmethod
    def _norway(cls, value: Any) -> Any:
        if value is False or (isinstance(value, list) and False in value):
            raise ValueError("a bare NO is read by YAML as false: write the code in quotes, 'NO'")
        return value

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        for code in value:
            if not _is_region(code):
                raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 code such as 'NO'")
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not _is_region(value):
            raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 code such as 'NO'")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and not (len(value) == 2 and value.isalpha() and value.islower()):
            raise ValueError(f"{value!r} is not an ISO 639-1 code such as 'nb'")
        return value

    @field_validator("consents")
    @classmethod
    def _consent_fields(cls, value: dict[str, ConsentRuleConfig]) -> dict[str, ConsentRuleConfig]:
        unknown = sorted(set(value) - set(CONSENT_FIELDS))
        if unknown:
            raise ValueError(f"{unknown} are not consents; known: {list(CONSENT_FIELDS)}")
        return value

    def to_plan(self, name: str) -> domain_plan.MarketPlan:
        return domain_plan.MarketPlan(
            name=name,
            countries=tuple(self.countries),
            store_codes=tuple(self.store_codes),
            language=self.language,
            phone_region=self.phone_region,
            consents=tuple(
                domain_plan.ConsentRule(field=f, applies=r.applies, default=r.default)
                for f, r in self.consents.items()
            ),
            targets=tuple(self.targets) if self.targets is not None else None,
        )


class DeletesConfig(_Strict):
    """Deletes from the source of truth (``deletes``)."""

    grace_runs: int = Field(
        default=2,
        ge=1,
        description="runs a customer must stay gone from the source of truth before its "
        "delete reaches the targets; reappearing in between cancels it",
    )


class RunsConfig(_Strict):
    """One writer at a time, and what counts as a dead run (``runs``)."""

    lease_ttl_s: int = Field(
        default=120,
        ge=5,
        description="a state lease not renewed for this long is free (its holder died); "
        "holders renew it every third of this",
    )
    lease_wait_s: int = Field(
        default=600,
        ge=0,
        description="how long a run (or `custsync run`) waits for another sync's state "
        "lease before it gives up with a message naming the holder",
    )
    stale_run_s: int = Field(
        default=1800,
        ge=1,
        description="an in-flight run with no event for this long, and no live state "
        "lease, is dead to the outbox sensor, which then publishes anyway",
    )
    extract_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="times an extraction step is run again after 429/5xx/timeouts outlived "
        "the HTTP retries (connection refused and auth errors are never retried)",
    )
    extract_retry_delay_s: float = Field(
        default=10.0,
        ge=0,
        description="seconds before the first step retry; each next waits twice as long",
    )


class TransactionTargetConfig(_Strict):
    """``transactions.publish[i]``: a target of the linked transactions."""

    connector: str = Field(
        description="a voyado (receipts), salesforce (Purchase__c) or voucherify (orders) connector"
    )
    concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description="requests in flight at once for one-record-a-request APIs (Voyado "
        "receipts, Voucherify orders); the connector's rate limit still applies",
    )


class TransactionsConfig(_Strict):
    """``transactions``: web shop / POS orders, linked to golden records and published."""

    sources: list[str] = Field(
        default_factory=list, description="connectors with role: transactions to read"
    )
    publish: list[TransactionTargetConfig] = Field(
        default_factory=list, description="targets of the linked transactions"
    )


TRANSACTION_TARGET_TYPES = ("voyado", "salesforce", "voucherify")
OTHER_CONNECTOR_TYPES = ("exact", "icomm", "rest", "file", "shop")


class SyncConfig(_Strict):
    state_db_url: str = Field(
        default="sqlite:///.custsync/state.sqlite",
        description="SQLAlchemy URL of the state DB; env CUSTSYNC_STATE_DB_URL overrides",
    )
    connectors: dict[str, ConnectorConfig]
    identity: IdentityConfig = Field(
        default_factory=lambda: default_identity(),
        description="identifier rules (default: the packaged ones)",
    )
    flow: FlowConfig = Field(
        description="source and enrichment steps (default: the connector whose role is "
        "source, then every enrichment connector in file order)"
    )
    publish: list[PublishTarget] = Field(default_factory=list)
    deletes: DeletesConfig = Field(
        default_factory=DeletesConfig, description="grace period of source deletes"
    )
    runs: RunsConfig = Field(
        default_factory=RunsConfig, description="state lease and dead-run detection"
    )
    transactions: TransactionsConfig = Field(
        default_factory=TransactionsConfig,
        description="transaction sources (role: transactions) and their targets",
    )
    markets: dict[str, MarketConfig] = Field(
        default_factory=dict,
        description="market name -> its countries, stores, language, phone region, consent "
        "rules and targets",
    )

    @field_validator("markets", mode="before")
    @classmethod
    def _market_names(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(isinstance(k, bool) for k in value):
            raise ValueError("a bare NO is read by YAML as false: write the market in quotes, 'NO'")
        return value

    @model_validator(mode="after")
    def _transaction_refs(self) -> SyncConfig:
        for i, name in enumerate(self.transactions.sources):
            conn = self.connectors.get(name)
            if conn is None or conn.role != "transactions":
                raise ValueError(
                    f"transactions.sources[{i}]: {name!r} is not a configured connector "
                    "with role: transactions"
                )
        for i, target in enumerate(self.transactions.publish):
            conn = self.connectors.get(target.connector)
            # a misspelt type is reported by the connector check, naming the type
            if conn is None or conn.type in OTHER_CONNECTOR_TYPES:
                raise ValueError(
                    f"transactions.publish[{i}].connector: {target.connector!r} is not a "
                    f"configured connector of type {', '.join(TRANSACTION_TARGET_TYPES)}"
                )
        for name, conn in self.connectors.items():
            if conn.role == "transactions" and (
                self.flow.source == name or any(s.connector == name for s in self.flow.enrichments)
            ):
                raise ValueError(
                    f"connectors.{name}: role transactions gives no customers; take it out of flow"
                )
        return self

    @model_validator(mode="after")
    def _references(self) -> SyncConfig:
        names = set(self.connectors)
        if self.flow.source != "current_data" and self.flow.source not in names:
            raise ValueError(f"flow.source: {self.flow.source!r} is not a configured connector")
        for i, step in enumerate(self.flow.enrichments):
            if step.connector not in names:
                raise ValueError(
                    f"flow.enrichments[{i}].connector: {step.connector!r} is not a configured connector"
                )
        for fld, owner in self.flow.ownership.items():
            if owner not in names:
                raise ValueError(f"flow.ownership.{fld}: {owner!r} is not a configured connector")
        for i, target in enumerate(self.publish):
            if target.connector not in names:
                raise ValueError(
                    f"publish[{i}].connector: {target.connector!r} is not a configured connector"
                )
            unknown_aspects = sorted(set(target.aspects) - set(ENTRY_ASPECTS))
            if unknown_aspects:
                raise ValueError(
                    f"publish[{i}].aspects: {unknown_aspects} are not multi-valued aspects; "
                    f"known: {list(ENTRY_ASPECTS)}"
                )
            for key in ("fields", "required_fields"):
                unknown = sorted(set(getattr(target, key)) - set(GOLDEN_FIELDS))
                if unknown:
                    raise ValueError(
                        f"publish[{i}].{key}: {unknown} are not golden fields; "
                        f"known: {list(GOLDEN_FIELDS)}"
                    )
            if target.key_field is not None and target.key_field not in GOLDEN_FIELDS:
                raise ValueError(
                    f"publish[{i}].key_field: {target.key_field!r} is not a golden field; "
                    f"known: {list(GOLDEN_FIELDS)}"
                )
            refused = REFUSED_TARGETS.get(self.connectors[target.connector].type)
            if refused:
                raise ValueError(
                    f"publish[{i}].connector: {target.connector!r} (type "
                    f"{self.connectors[target.connector].type!r}) cannot be a publish target: "
                    f"{refused}"
                )
        targets = {t.connector for t in self.publish}
        for name, market in self.markets.items():
            for j, t in enumerate(market.targets or []):
                if t not in targets:
                    raise ValueError(
                        f"markets.{name}.targets[{j}]: {t!r} is not a publish target; "
                        f"known: {sorted(targets)}"
                    )
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_flow(cls, data: Any) -> Any:
        """No ``flow``: the one connector whose role is ``source`` is the source step, every
        ``enrichment`` connector follows in file order, giving the aspects it lists."""
        if not isinstance(data, dict) or data.get("flow") is not None:
            return data
        conns = data.get("connectors")
        if not isinstance(conns, dict):
            return data
        live = {n: c for n, c in conns.items() if isinstance(c, dict) and c.get("enabled", True)}
        sources = [n for n, c in live.items() if c.get("role") == "source"]
        if len(sources) != 1:
            raise ValueError(
                "flow: missing, and it can be left out only when exactly one enabled connector "
                f"has role: source (found {sources or 'none'})"
            )
        steps = [
            {"connector": n} for n, c in live.items() if c.get("role", "enrichment") == "enrichment"
        ]
        return {**data, "flow": {"source": sources[0], "enrichments": steps}}

    @model_validator(mode="after")
    def _plan_holds(self) -> SyncConfig:
        errors = domain_plan.check_plan(self.plan(), VENDOR_ASPECTS)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def plan(self) -> SyncPlan:
        """The domain's sync plan: what identity, survivorship and deltas read."""
        enabled = self.enabled_connectors()
        steps: list[domain_plan.FlowStep] = []
        if self.flow.source != domain_plan.CURRENT_DATA:
            src = self.connectors[self.flow.source]
            aspects = src.aspects if src.aspects is not None else DEFAULT_ASPECTS
            steps.append(domain_plan.FlowStep(self.flow.source, tuple(aspects)))
        for step in self.flow.enrichments:
            declared = self.connectors[step.connector].aspects
            aspects = step.aspects or declared or DEFAULT_ASPECTS
            steps.append(domain_plan.FlowStep(step.connector, tuple(aspects)))
        # a market's stores dial national numbers in its phone region (a lane's own
        # quality.market_regions entry wins)
        store_regions = {
            code: m.phone_region
            for m in self.markets.values()
            if m.phone_region
            for code in m.store_codes
        }
        connectors = {}
        for name, c in enabled.items():
            if c.role == "transactions":  # no customer lane: the transactions section reads it
                continue
            named = [a for s in steps if s.connector == name for a in s.aspects]
            aspects = c.aspects if c.aspects is not None else named or DEFAULT_ASPECTS
            connectors[name] = domain_plan.ConnectorPlan(
                name=name,
                type=c.type,
                role=c.role,
                aspects=tuple(dict.fromkeys(aspects)),
                quality=domain_plan.QualityGate(
                    **{
                        **c.quality.model_dump(),
                        "market_regions": {**store_regions, **c.quality.market_regions},
                    }
                ),
                declared=c.aspects is not None,
            )
        rules = tuple(
            domain_plan.IdentifierRule(
                name=r.name,
                columns=tuple(r.columns),
                priority=r.priority,
                max_per_golden=r.max_per_golden,
                blocked_values=tuple(r.blocked_values),
                blocked_patterns=tuple(r.blocked_patterns),
                max_records_per_value=r.max_records_per_value,
            )
            for r in self.identity.identifiers
        )
        publish = tuple(
            domain_plan.PublishPolicy(
                connector=t.connector,
                fields=tuple(t.fields),
                aspects=tuple(t.aspects),
                conflicts=tuple(sorted(t.conflicts.items())),
                batch_size=t.batch_size,
                kinds=tuple(t.kinds) if t.kinds is not None else None,
                required_fields=tuple(t.required_fields),
                delete_mode=t.delete_mode,
                archive_payload=tuple(sorted(t.archive_payload.items())),
                key_field=t.key_field,
            )
            for t in self.publish
        )
        return SyncPlan(
            connectors=connectors,
            identifiers=rules,
            source=self.flow.source,
            steps=tuple(s for s in steps if s.connector in enabled),
            ownership=dict(self.flow.ownership),
            publish=tuple(p for p in publish if p.connector in enabled),
            state_db_url=self.state_db_url,
            matching=self.identity.matching.to_plan(),
            incremental_identity=self.identity.incremental.enabled,
            identity_scope_max_share=self.identity.incremental.max_share,
            delete_grace_runs=self.deletes.grace_runs,
            extract_retries=self.runs.extract_retries,
            extract_retry_delay_s=self.runs.extract_retry_delay_s,
            markets=tuple(m.to_plan(n) for n, m in self.markets.items()),
        )

    def enabled_connectors(self) -> dict[str, ConnectorConfig]:
        return {n: c for n, c in self.connectors.items() if c.enabled}


def _format_error(err: ValidationError, path: Path) -> str:
    """One line per mistake naming the key; a misspelt key gets the closest valid one."""
    from custsync_pipeline.connectors.checks import validation_lines

    return "\n".join(
        [
            f"invalid sync config {path}:",
            *("  " + line for line in validation_lines(err, SyncConfig)),
        ]
    )


def base_url_env_var(connector: str) -> str:
    """``CUSTSYNC_<NAME>_BASE_URL``: points a connector elsewhere without copying the file."""
    return f"CUSTSYNC_{re.sub(r'[^A-Za-z0-9]', '_', connector).upper()}_BASE_URL"


def default_identity() -> IdentityConfig:
    """The packaged identifier rules: what a config without ``identity`` resolves with."""
    packaged = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    return IdentityConfig.model_validate(packaged["identity"])


_loaded: dict[tuple[str, str, int], SyncConfig] = {}


def current_config(path: str | Path | None = None) -> SyncConfig:
    """The sync config of this process, parsed once (per path and state-DB override):
    the asset graph and the run's behaviour come from the same reading."""
    cfg_path = str(Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH))
    try:
        mtime = Path(cfg_path).stat().st_mtime_ns
    except OSError:
        mtime = 0  # load_sync_config names the missing file
    key = (cfg_path, os.environ.get("CUSTSYNC_STATE_DB_URL", ""), mtime)
    if key not in _loaded:
        _loaded[key] = load_sync_config(cfg_path)
    return _loaded[key]


def current_plan(path: str | Path | None = None) -> SyncPlan:
    """The domain's sync plan of :func:`current_config`."""
    return current_config(path).plan()


def load_sync_config(path: str | Path | None = None) -> SyncConfig:
    """Load and validate the sync config (``$CUSTSYNC_CONFIG`` or the packaged default)."""
    cfg_path = Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    try:
        data = yaml.safe_load(cfg_path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"sync config not found: {cfg_path}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"sync config {cfg_path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sync config {cfg_path}: top level must be a mapping")
    if os.environ.get("CUSTSYNC_STATE_DB_URL"):
        data["state_db_url"] = os.environ["CUSTSYNC_STATE_DB_URL"]
    connectors = data.get("connectors")
    for name, conn in connectors.items() if isinstance(connectors, dict) else []:
        url = os.environ.get(base_url_env_var(str(name)))
        if url and isinstance(conn, dict):
            conn["base_url"] = url
    try:
        cfg = SyncConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, cfg_path)) from None
    # every connector built once, offline: a wrong type, a misspelt option or a missing
    # base_url stops the load here, not its lane at run time
    from custsync_pipeline.connectors.checks import connector_config_errors

    errors = connector_config_errors(cfg)
    if errors:
        raise ConfigError(
            "\n".join([f"invalid sync config {cfg_path}:", *("  " + e for e in errors)])
        )
    return cfg
