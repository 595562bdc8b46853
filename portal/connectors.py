"""The connector contract: the Connector base class, canonical Record types and the ConnectorError family."""
from __future__ import annotations

import abc
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar

from portal.errors import StartupError

__all__ = [
    "CATEGORIES",
    "AccessStatus",
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
    "ProviderUnavailable",
    "hosts_setting",
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
OUTCOME_CODES = ("permission_missing", "access_refused", "fields_withheld", "optional_read_skipped")


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


def hosts_setting(value: Any) -> list[str]:
    """Read an ``allowed_hosts`` setting: a list, or comma-separated text from the environment."""
    if not value:
        return []
    if isinstance(value, str):
        return [h.strip() for h in value.split(",") if h.strip()]
    return [str(h) for h in value]


# ---------------------------------------------------------------- connector


class Connector(abc.ABC):
    """One MIS data provider. Subclass once per provider; never write to the database.

    The engine builds one instance per use with the merged settings (deployment settings from
    ``CONNECTORS[name]`` overlaid with the connection's own decrypted settings).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    # JSON-Schema-like description of settings; keys listed in "secret" are masked in the UI.
    settings_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {}, "secret": []}
    categories: ClassVar[tuple[str, ...]] = CATEGORIES
    schedule: ClassVar[Mapping[str, Any]] = {"trigger": "cron", "hour": 2}

    # Set by the engine to the provider's shared requests-per-second limit (portal.jobs.limits):
    # a callable that blocks until one request may be sent. None: no limit.
    request_gate: Callable[[], None] | None = None
    # Set by the engine before extract(): the SyncState values this connection stored, by key
    # (empty on a full run, so a full run starts every changeset again). Connectors that keep none ignore it.
    sync_state: Mapping[str, str] = {}

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        # HTTP requests made and retried by this instance; the engine copies them into the run's stats.
        self.stats: dict[str, int] = {"requests": 0, "retries": 0}

    def before_request(self) -> None:
        """Wait for the provider's rate limit, if any; a connector's HTTP client calls this before every request."""
        gate = self.request_gate
        if gate is not None:
            gate()

    @abc.abstractmethod
    def check_connection(self) -> None:
        """Raise ConnectorError with a message staff can act on if the provider is unusable."""

    @abc.abstractmethod
    def request_access(self, school: Any) -> AccessStatus:
        """Ask the provider for access to the school's MIS; return the resulting status."""

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
