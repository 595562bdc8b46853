"""The connector contract: the Connector base class, canonical Record types and the ConnectorError family."""
from __future__ import annotations

import abc
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from portal.dfe import (
    normalise_bool,
    normalise_ethnicity,
    normalise_gender,
    normalise_language,
    normalise_sen_status,
    normalise_year_group,
)
from portal.errors import StartupError
from portal.http_session import ProviderSession

if TYPE_CHECKING:
    from flask import Blueprint

__all__ = [
    "CATEGORIES",
    "AccessStatus",
    "Contact",
    "DemoSchool",
    "Sandbox",
    "Setting",
    "SettingsError",
    "normalise_bool",
    "normalise_ethnicity",
    "normalise_gender",
    "normalise_language",
    "normalise_sen_status",
    "normalise_year_group",
    "AssessmentRecord",
    "AttendanceMarkRecord",
    "AccessRefused",
    "AuthorisationLost",
    "BadResponse",
    "CategoryOutcome",
    "Checkpoint",
    "Connector",
    "ConnectorError",
    "DemographicsRecord",
    "ExclusionRecord",
    "GroupRecord",
    "InvalidJson",
    "LessonRecord",
    "MembershipRecord",
    "NotFound",
    "ProviderSession",
    "ProviderUnavailable",
    "is_loopback_host",
    "PermissionMissing",
    "PupilRecord",
    "RateLimited",
    "Record",
    "StaffRecord",
    "StartupError",
    "SubjectRecord",
    "SyncState",
    "Tombstone",
]

# The six categories of the usage matrix, in extract order (pupils first: other records refer to them).
CATEGORIES = (
    "student_basic",
    "student_demographics",
    "student_timetable",
    "student_assessment",
    "student_attendance_exclusions",
    "staff_basic",
)


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Record:
    """A canonical, provider-neutral record. ``external_id`` is the provider's stable id for it."""

    kind: ClassVar[str]
    category: ClassVar[str]
    # Fields holding special-category data (R71); the store encrypts and withholds them.
    special_fields: ClassVar[frozenset[str]] = frozenset()

    external_id: str
    updated_at: datetime | None = None
    # Fields the provider did not send (their permission or scope is not granted): "absent" is not
    # "null", so the store leaves what it holds for them alone instead of writing NULL.
    absent: frozenset[str] = frozenset()

    def values(self) -> dict[str, Any]:
        """Return the record's fields as a dict (without the class-level tags)."""
        # The instance dict holds exactly the fields, in field order (the tags are class attributes):
        # one copy instead of a getattr per field, on the extract's hot path.
        return dict(self.__dict__)


@dataclass(frozen=True, kw_only=True)
class PupilRecord(Record):
    kind = "pupil"
    category = "student_basic"

    legal_forename: str | None = None
    legal_surname: str | None = None
    preferred_forename: str | None = None
    preferred_surname: str | None = None
    date_of_birth: date | None = None
    gender: str | None = None
    upn: str | None = None
    year_group: str | None = None  # national curriculum year, e.g. "7", "R", "N1"
    registration_group: str | None = None
    admission_date: date | None = None
    leaving_date: date | None = None


@dataclass(frozen=True, kw_only=True)
class DemographicsRecord(Record):
    """Census data for one pupil; ``external_id`` is the pupil's external id."""

    kind = "demographics"
    category = "student_demographics"
    special_fields = frozenset({"sen_status", "sen_need", "first_language", "eal", "ethnicity"})

    # None means "not supplied" (e.g. scope not granted), never "blank".
    fsm: bool | None = None
    fsm_ever6: bool | None = None
    pupil_premium: bool | None = None
    sen_status: str | None = None  # DfE SEN provision code: N, K, E
    sen_need: str | None = None
    first_language: str | None = None  # DfE language code
    eal: bool | None = None
    ethnicity: str | None = None  # DfE ethnicity code
    looked_after: bool | None = None
    ever_in_care: bool | None = None
    service_child: bool | None = None


@dataclass(frozen=True, kw_only=True)
class SubjectRecord(Record):
    kind = "subject"
    category = "student_timetable"

    code: str | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class GroupRecord(Record):
    """A class, registration group or other teaching group."""

    kind = "group"
    category = "student_timetable"

    name: str | None = None
    group_type: str | None = None  # "class", "registration", "year", "house", "other"
    subject_external_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class MembershipRecord(Record):
    """A pupil's membership of a group; ``external_id`` is "<group id>:<pupil id>" unless the provider has one."""

    kind = "membership"
    category = "student_timetable"

    group_external_id: str = ""
    pupil_external_id: str = ""


@dataclass(frozen=True, kw_only=True)
class LessonRecord(Record):
    """One timetabled lesson of a group in a period."""

    kind = "lesson"
    category = "student_timetable"

    group_external_id: str | None = None
    period_name: str | None = None
    day_of_week: int | None = None  # 1 = Monday
    starts_at: str | None = None  # "09:00"
    ends_at: str | None = None
    lesson_date: date | None = None


@dataclass(frozen=True, kw_only=True)
class AssessmentRecord(Record):
    kind = "assessment_result"
    category = "student_assessment"

    pupil_external_id: str = ""
    stage: str | None = None  # EYFS, KS1, KS2, KS4, KS5, or a current-assessment stage
    statutory: bool = False
    aspect: str | None = None  # e.g. "KS2 Reading scaled score"
    template: str | None = None
    result: str | None = None
    result_date: date | None = None


@dataclass(frozen=True, kw_only=True)
class AttendanceMarkRecord(Record):
    """One mark per pupil per session; ``external_id`` is "<pupil id>:<date>:<AM|PM>" unless the provider has one."""

    kind = "attendance_mark"
    category = "student_attendance_exclusions"

    pupil_external_id: str = ""
    session_date: date | None = None
    session: str = "AM"  # AM or PM
    code: str = ""  # DfE attendance code


@dataclass(frozen=True, kw_only=True)
class ExclusionRecord(Record):
    kind = "exclusion"
    category = "student_attendance_exclusions"

    pupil_external_id: str = ""
    exclusion_type: str | None = None  # "fixed" (suspension) or "permanent"
    start_date: date | None = None
    end_date: date | None = None
    sessions: int | None = None


@dataclass(frozen=True, kw_only=True)
class StaffRecord(Record):
    kind = "staff"
    category = "staff_basic"

    title: str | None = None
    forename: str | None = None
    surname: str | None = None
    email: str | None = None
    roles: tuple[str, ...] = ()
    currently_employed: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Tombstone(Record):
    """A record deleted at the provider; ``record_kind`` names what kind of record it removes."""

    kind = "tombstone"
    category = ""

    record_kind: str
    record_category: str
    deleted_at: datetime | None = None


RECORD_TYPES: Mapping[str, type[Record]] = {
    cls.kind: cls
    for cls in (
        PupilRecord,
        DemographicsRecord,
        SubjectRecord,
        GroupRecord,
        MembershipRecord,
        LessonRecord,
        AssessmentRecord,
        AttendanceMarkRecord,
        ExclusionRecord,
        StaffRecord,
    )
}


@dataclass(frozen=True)
class Checkpoint:
    """Where an interrupted extract resumes: a category and the provider's cursor within it (opaque)."""

    category: str
    cursor: str | None = None


@dataclass(frozen=True)
class SyncState:
    """A connector's own position at the provider (e.g. Groupcall's NextChangedRows) for one read of a connection.

    The engine stores it with the page that yielded it, in the same transaction, and hands the
    stored values back as ``Connector.sync_state`` on the next run; a full run starts without them.
    ``value`` None forgets the key.
    """

    key: str
    value: str | None


@dataclass(frozen=True)
class CategoryOutcome:
    """What the provider answered for one category, when it was not simply its data (yielded by extract).

    ``code`` is one of OUTCOME_CODES. ``withheld``: the category's data was not (fully) read, so it
    must not be reconciled (no row is removed because it was not seen). ``confirmed``: the provider
    itself said the permission is not granted (not just one refused request), which makes it a
    tracked withdrawal. ``fields``: for "fields_withheld", the store columns the provider left out.
    Messages are plain English for the school and support staff, with no personal data.
    """

    category: str
    code: str
    message: str
    withheld: bool = False
    confirmed: bool = False
    endpoint: str | None = None
    fields: tuple[str, ...] = ()


# permission_missing: the provider confirms the school has not granted the permission for this data.
# access_refused: one read was refused but the provider still shows the school approved and the
#   permission granted (or the check itself failed): nothing changes, the next run asks again.
# fields_withheld: the provider left some fields out (a field permission or scope not granted).
# optional_read_skipped: a secondary read (e.g. leavers) was missing or refused; the category went on.
# changes_restarted: asked for the changes since a saved position (SyncState), the provider sent
#   everything again without the deletions in between (it no longer knew the position): the data was
#   read in full, and the engine queues a full run to reconcile what was deleted meanwhile.
CHANGES_RESTARTED = "changes_restarted"
OUTCOME_CODES = ("permission_missing", "access_refused", "fields_withheld", "optional_read_skipped", CHANGES_RESTARTED)


@dataclass(frozen=True)
class AccessStatus:
    """The provider's view of a school's authorisation."""

    state: str  # "approved", "pending", "revoked", "declined", "not_connected"
    provider_school_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- errors


class ConnectorError(Exception):
    """A connector could not do its work. ``message`` is plain English for staff, with no personal data.

    ``kind`` says who must act: "school_action", "provider_problem" or "temporary".
    """

    code = "connector_error"
    kind = "provider_problem"
    retryable = False

    def __init__(self, message: str, *, endpoint: str | None = None, page: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.page = page


class AuthorisationLost(ConnectorError):
    """The school revoked or never granted access at the provider (R5): stop, do not retry."""

    code = "authorisation_lost"
    kind = "school_action"


class AccessRefused(ConnectorError):
    """A provider refused one request (HTTP 401/403). Not a revocation by itself: the connector must
    confirm with the provider (school status, permissions) before anything changes (R5)."""

    code = "access_refused"
    kind = "school_action"

    def __init__(self, message: str, *, status: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status


class PermissionMissing(ConnectorError):
    """The provider confirms the school has not granted the permission one read needs (not a revocation)."""

    code = "permission_missing"
    kind = "school_action"


class ProviderUnavailable(ConnectorError):
    """The provider did not answer or answered 5xx after retries."""

    code = "provider_unavailable"
    kind = "temporary"
    retryable = True


class RateLimited(ConnectorError):
    """The provider kept answering 429 after the retries allowed."""

    code = "rate_limited"
    kind = "temporary"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class BadResponse(ConnectorError):
    """The provider answered with something that is not what its API promises (invalid JSON, wrong shape)."""

    code = "bad_response"
    kind = "provider_problem"


class InvalidJson(BadResponse):
    """The provider's answer was not valid JSON, twice in a row (a hiccup is asked again once)."""

    code = "invalid_json"


class NotFound(BadResponse):
    """The provider answered 404: it has no such endpoint or object (for this school).

    On a secondary read the category goes on without it; on a main read it fails the run as a bad response.
    """

    code = "bad_response"


# ---------------------------------------------------------------- transport helpers (R61)


def is_loopback_host(host: str | None) -> bool:
    """Whether a host is this machine (the only place plain HTTP may go: a local test sandbox)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- settings

SettingType = type[str] | type[int] | type[float] | type[bool] | type[list] | type[dict]
_TYPE_WORDS = {str: "text", int: "a whole number", float: "a number", bool: "true or false",
               list: "a list (or comma-separated text)", dict: "a mapping"}


class SettingsError(ValueError):
    """A connector setting is missing or of the wrong type; the message names the key, never the value."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"setting {key} {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Setting:
    """One setting of a connector: its type, its default, whether it must be set and whether it is a secret.

    ``per_connection``: the value may (or, for a required setting, must) come from each connection's
    own settings rather than the deployment's, so start-up does not require it. Secrets are masked
    wherever settings are shown and never appear in a log or an error.
    """

    type: SettingType = str
    default: Any = None
    required: bool = False
    secret: bool = False
    per_connection: bool = False
    title: str = ""

    def coerce(self, key: str, value: Any) -> Any:
        """Return the value as this setting's type (text from PORTAL_CONNECTORS__* variables is read); SettingsError if it cannot be."""
        kind = self.type
        if value is None:
            # A fresh copy of a list or mapping default, so no instance can change another's.
            return kind(self.default) if kind in (list, dict) and self.default is not None else self.default
        if kind is bool:
            # Environment text may also say on/off.
            flag = {"on": True, "off": False}.get(value.strip().lower()) if isinstance(value, str) else None
            flag = normalise_bool(value) if flag is None else flag
            if flag is None:
                raise SettingsError(key, f"is invalid: it must be {_TYPE_WORDS[bool]}")
            return flag
        if kind is list:
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, (list, tuple)):
                return list(value)
        elif kind is dict:
            if isinstance(value, Mapping):
                return dict(value)
        elif kind in (int, float):
            if isinstance(value, bool):
                raise SettingsError(key, f"is invalid: it must be {_TYPE_WORDS[kind]}")
            try:
                number = kind(value)
            except (TypeError, ValueError):
                raise SettingsError(key, f"is invalid: it must be {_TYPE_WORDS[kind]}") from None
            if kind is int and isinstance(value, float) and value != number:
                raise SettingsError(key, f"is invalid: it must be {_TYPE_WORDS[int]}")
            return number
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise SettingsError(key, f"is invalid: it must be {_TYPE_WORDS.get(kind, kind.__name__)}")


def apply_settings(schema: Mapping[str, Setting], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the values coerced to their settings' types with defaults filled in; keys the schema lacks pass through."""
    out = dict(values)
    for key, setting in schema.items():
        out[key] = setting.coerce(key, values.get(key))
    return out


def check_deployment_settings(name: str, schema: Mapping[str, Setting], values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``CONNECTORS[name]`` at start-up: known keys, right types, required deployment settings present.

    Returns the values set, coerced (defaults are filled in when a connector is built, so what the
    deployment set stays visible); raises StartupError naming the connector and the key, never the value.
    """
    env = f"PORTAL_CONNECTORS__{name}__"
    for key in values:
        if key not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise StartupError(f"connector {name}: setting {env}{key} is not one of its settings (they are: {known})")
    try:
        out = {key: schema[key].coerce(key, value) for key, value in values.items()}
    except SettingsError as exc:
        raise StartupError(f"connector {name}: setting {env}{exc.key} {exc.problem}") from None
    for key, setting in schema.items():
        if setting.required and not setting.per_connection and out.get(key, setting.default) in (None, ""):
            raise StartupError(f"connector {name}: setting {env}{key} is missing ({setting.title or 'required'})")
    return out


def masked_settings(schema: Mapping[str, Setting], values: Mapping[str, Any], mask: str = "••••••") -> dict[str, Any]:
    """Return the values with every secret (and every key the schema does not know) replaced by ``mask``."""
    return {key: value if key in schema and not schema[key].secret else mask for key, value in values.items()}


# ---------------------------------------------------------------- demo and sandbox


class Contact(TypedDict):
    """A person at the school the provider may contact about an access request (provider-neutral)."""

    name: str
    email: str


@dataclass(frozen=True)
class DemoSchool:
    """A school a connector's sandbox serves for `flask portal demo`; the demo creates it and its users.

    ``key`` names it in the demo (users are ``admin.<key>@demo.example``); ``trust``: it belongs to
    the demo trust; ``via_local_authority``: it subscribes through the demo local authority.
    """

    key: str
    name: str
    urn: str
    la_code: str
    establishment_number: str
    phase: str  # GIAS phase: "Primary", "Secondary", ...
    statutory_high_age: int
    trust: bool = False
    via_local_authority: bool = False

    @property
    def dfe_number(self) -> str:
        return f"{self.la_code}{self.establishment_number}"


@dataclass(frozen=True)
class Sandbox:
    """A connector package's sandbox: a real HTTP server speaking the provider's API over synthetic schools.

    ``serve(port=, schools=, pupils=, days=, seed=, echo=, **extra)`` runs it in the foreground
    (`flask portal sandbox <name>`, `make run`); ``dev_port`` is the fixed local port `make run` and
    `make workers` give it. ``demo_schools`` are the schools it serves for the demo; ``demo()`` starts
    them on a free local port and yields the connector settings that point at it, for as long as
    the context lasts (`flask portal demo` without a configured ``base_url``). ``settings_for(url)``
    returns the connector settings for a sandbox already listening at ``url``.
    """

    serve: Callable[..., None] | None = None
    dev_port: int | None = None
    demo_schools: tuple[DemoSchool, ...] = ()
    demo: Callable[[], AbstractContextManager[Mapping[str, Any]]] | None = None
    settings_for: Callable[[str], Mapping[str, Any]] = lambda url: {"base_url": url, "allow_insecure_http": True}


# ---------------------------------------------------------------- connector


class Connector(abc.ABC):
    """One MIS data provider. Subclass once per provider; never write to the database.

    The engine builds one instance per use with the merged settings (deployment settings from
    ``CONNECTORS[name]`` overlaid with the connection's own decrypted settings), coerced to the
    types of ``settings_schema`` with its defaults filled in.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    # Every setting the connector reads, by key; the core validates CONNECTORS[name] against it at
    # start-up, coerces the merged settings before __init__ sees them, and masks the secrets.
    settings_schema: ClassVar[Mapping[str, Setting]] = {}
    categories: ClassVar[tuple[str, ...]] = CATEGORIES
    schedule: ClassVar[Mapping[str, Any]] = {"trigger": "cron", "hour": 2}
    # Routes the provider calls (webhooks, authorisation callbacks): create_app mounts the blueprint
    # of every enabled connector, CSRF-exempt (each route checks its own shared secret).
    blueprint: ClassVar[Blueprint | None] = None
    # The package's sandbox (for the demo, `make run`, `make workers`); None: it has none.
    sandbox: ClassVar[Sandbox | None] = None

    # Set by the engine to the provider's shared requests-per-second limit (portal.jobs.limits):
    # a callable that blocks until one request may be sent. None: no limit.
    request_gate: Callable[[], None] | None = None
    # Set by the engine before extract(): the SyncState values this connection stored, by key
    # (empty on a full run, so a full run starts every changeset again). Connectors that keep none ignore it.
    sync_state: Mapping[str, str] = {}
    # Set by the engine before extract(): every category this run reads, in order (it asks for them one
    # at a time). A connector may serve several from one request (a shared deletions feed); empty: unknown.
    run_categories: Sequence[str] = ()
    # Set by the engine before extract(): each of those categories' changed-since time (None: read in full),
    # so a connector may ask for a later category's first pages early (it is asked with the same time).
    run_since: Mapping[str, datetime | None] = {}
    # HTTP requests made and retried by this instance; the engine copies them into the run's stats.
    stats: dict[str, int]
    # The provider's clock minus ours, as a lower bound measured from the Date header of its answers
    # (None: not known). The engine moves a category's watermark to when the run started asking for it
    # by the provider's clock (portal.extract.plan.read_to); without it, ours less a skew margin.
    clock_offset: timedelta | None = None

    def __init__(self, settings: Mapping[str, Any]) -> None:
        try:
            self.settings = apply_settings(self.settings_schema, settings)
        except SettingsError as exc:
            raise ConnectorError(f"The {self.title} {exc}; fix it in the portal's settings for this connector.") from None
        self.stats = {"requests": 0, "retries": 0}

    @classmethod
    def check_settings(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the deployment's ``CONNECTORS[name]`` at start-up; StartupError names the key, never the value."""
        return check_deployment_settings(cls.name, cls.settings_schema, values)

    @classmethod
    def secret_settings(cls) -> frozenset[str]:
        """Return the keys of the settings that are secrets (masked in pages and logs, encrypted at rest)."""
        return frozenset(key for key, setting in cls.settings_schema.items() if setting.secret)

    @classmethod
    def masked(cls, values: Mapping[str, Any], mask: str = "••••••") -> dict[str, Any]:
        """Return settings safe to show: secrets (and keys the schema does not know) replaced by ``mask``."""
        return masked_settings(cls.settings_schema, values, mask)

    @staticmethod
    def demo_connections(schools: list[Any]) -> list[Any]:
        """Connect the demo schools this package's sandbox serves (through ``portal.plugins.api``, idempotently).

        Called by `flask portal demo` with every demo school; return the connections made or found.
        A connector that takes no part in the demo keeps this default.
        """
        return []

    @classmethod
    def in_demo(cls) -> bool:
        """Whether the connector takes part in `flask portal demo` (it overrides demo_connections)."""
        return cls.demo_connections is not Connector.demo_connections

    def before_request(self) -> None:
        """Wait for the provider's rate limit, if any; a connector's HTTP client calls this before every request."""
        gate = self.request_gate
        if gate is not None:
            gate()

    @abc.abstractmethod
    def check_connection(self) -> None:
        """Raise ConnectorError with a message staff can act on if the provider is unusable."""

    @abc.abstractmethod
    def request_access(self, school: Any, contacts: Sequence[Contact] = ()) -> AccessStatus:
        """Ask the provider for access to the school's MIS; return the resulting status.

        ``contacts``: the school admin who asked, for providers that tell the school (may be ignored).
        """

    @abc.abstractmethod
    def revoke_access(self, school: Any) -> None:
        """Tell the provider the school's access is revoked."""

    @abc.abstractmethod
    def access_status(self, school: Any) -> AccessStatus:
        """Return the provider's current view of the school's authorisation."""

    @abc.abstractmethod
    def extract(
        self,
        connection: Any,
        categories: Iterable[str],
        since: datetime | None,
        checkpoint: Checkpoint | None,
    ) -> Iterator[Record | Checkpoint]:
        """Yield records of the given categories changed since ``since`` (all when None).

        Yield a Checkpoint after each page: the engine commits what it received before it and
        stores it, and passes it back to resume an interrupted run.
        """
