"""The Example MIS connector: access, access status and resumable page-by-page extracts of the six categories."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from portal.connectors import (
    CATEGORIES,
    AccessRefused,
    AccessStatus,
    AssessmentRecord,
    AttendanceMarkRecord,
    AuthorisationLost,
    BadResponse,
    CategoryOutcome,
    Checkpoint,
    Connector,
    ConnectorError,
    Contact,
    DemographicsRecord,
    ExclusionRecord,
    GroupRecord,
    LessonRecord,
    MembershipRecord,
    NotFound,
    PupilRecord,
    Record,
    Setting,
    StaffRecord,
    SubjectRecord,
    Tombstone,
)
from portal_example import demo, sandbox_spec
from portal_example.client import DEFAULT_BASE_URL, ExampleClient, format_since

__all__ = ["ExampleConnector"]

# Each category's scope at the Example MIS.
CATEGORY_SCOPES = {"student_basic": "pupils", "student_demographics": "census", "student_timetable": "timetable",
                   "student_assessment": "assessment", "student_attendance_exclusions": "attendance",
                   "staff_basic": "staff"}
# Deletion entry types -> (record kind, category) of the tombstones they make.
DELETIONS = {"pupil": (("pupil", "student_basic"), ("demographics", "student_demographics")),
             "staff": (("staff", "staff_basic"),), "membership": (("membership", "student_timetable"),)}
ACCESS = {"approved": "approved", "pending": "pending", "revoked": "revoked", "none": "not_connected"}


def _when(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def _day(text: Any) -> date | None:
    return date.fromisoformat(str(text)) if text else None


# ---------------------------------------------------------------- rows -> canonical records


def pupil(row: Mapping[str, Any]) -> Iterator[Record]:
    preferred = row.get("known_as") or [None, None]
    yield PupilRecord(external_id=str(row["id"]), updated_at=_when(row["updated_at"]),
                      legal_forename=row["first_name"], legal_surname=row["last_name"],
                      preferred_forename=preferred[0], preferred_surname=preferred[1], date_of_birth=_day(row["born"]),
                      gender={"female": "F", "male": "M"}.get(row.get("sex") or ""), upn=row.get("upn"),
                      year_group=row.get("year"), registration_group=row.get("form"),
                      admission_date=_day(row.get("joined")), leaving_date=_day(row.get("left")))


def census(row: Mapping[str, Any]) -> Iterator[Record]:
    sen = row.get("sen") or {}
    yield DemographicsRecord(external_id=str(row["pupil_id"]), updated_at=_when(row["updated_at"]), fsm=row["fsm"],
                             fsm_ever6=row["fsm_ever6"], pupil_premium=row["pupil_premium"],
                             sen_status=sen.get("provision"), sen_need=sen.get("need"),
                             first_language=row["language"], eal=row["eal"], ethnicity=row["ethnicity"],
                             looked_after=row["looked_after"], ever_in_care=row["ever_in_care"],
                             service_child=row["service_child"])


def subject(row: Mapping[str, Any]) -> Iterator[Record]:
    yield SubjectRecord(external_id=str(row["id"]), updated_at=_when(row["updated_at"]), code=row["code"],
                        name=row["name"])


def group(row: Mapping[str, Any]) -> Iterator[Record]:
    yield GroupRecord(external_id=str(row["id"]), updated_at=_when(row["updated_at"]), name=row["name"],
                      group_type=row["kind"], subject_external_id=row.get("subject_id"))


def membership(row: Mapping[str, Any]) -> Iterator[Record]:
    yield MembershipRecord(external_id=f"{row['group_id']}:{row['pupil_id']}", updated_at=_when(row["updated_at"]),
                           group_external_id=str(row["group_id"]), pupil_external_id=str(row["pupil_id"]))


def lesson(row: Mapping[str, Any]) -> Iterator[Record]:
    on = _day(row["date"])
    yield LessonRecord(external_id=str(row["id"]), updated_at=_when(row["updated_at"]),
                       group_external_id=str(row["group_id"]), period_name=row["period"], day_of_week=on.isoweekday(),
                       starts_at=row["from"], ends_at=row["to"], lesson_date=on)


def result(row: Mapping[str, Any]) -> Iterator[Record]:
    yield AssessmentRecord(external_id=str(row["id"]), updated_at=_when(row["updated_at"]),
                           pupil_external_id=str(row["pupil_id"]), stage=row["stage"], statutory=bool(row["statutory"]),
                           aspect=row["aspect"], template=row["template"], result=row["value"],
                           result_date=_day(row["on"]))


def mark(row: Mapping[str, Any]) -> Iterator[Record]:
    session = str(row["session"]).upper()
    yield AttendanceMarkRecord(external_id=f"{row['pupil_id']}:{row['date']}:{session}",
                               updated_at=_when(row["updated_at"]), pupil_external_id=str(row["pupil_id"]),
                               session_date=_day(row["date"]), session=session, code=row["code"])


def exclusion(row: Mapping[str, Any]) -> Iterator[Record]:
    # The reason code and the free-text note stay at the MIS (R77).
    yield ExclusionRecord(external_id=str(row["id"]), updated_at=_when(row["updated_at"]),
                          pupil_external_id=str(row["pupil_id"]),
                          exclusion_type="permanent" if row["permanent"] else "fixed",
                          start_date=_day(row["from"]), end_date=_day(row["to"]), sessions=row.get("sessions"))


def staff(row: Mapping[str, Any]) -> Iterator[Record]:
    # Special-category fields the MIS holds about staff (ethnicity) are not read (R76).
    yield StaffRecord(external_id=str(row["id"]), updated_at=_when(row["updated_at"]), title=row.get("title"),
                      forename=row["first_name"], surname=row["last_name"], email=row.get("email"),
                      roles=tuple(row.get("roles") or ()), currently_employed=row.get("employed"))


def deletion(category: str) -> Callable[[Mapping[str, Any]], Iterator[Record]]:
    def tombstones(row: Mapping[str, Any]) -> Iterator[Record]:
        for kind, of in DELETIONS.get(str(row.get("type")), ()):
            if of == category:
                at = _when(row["deleted_at"])
                yield Tombstone(external_id=str(row["id"]), updated_at=at, record_kind=kind, record_category=of,
                                deleted_at=at)
    return tombstones


@dataclass(frozen=True)
class Step:
    """One list read for a category; ``optional``: a secondary read the category can do without."""

    path: str
    mapper: Callable[[Mapping[str, Any]], Iterator[Record]]
    optional: bool = False
    types: str | None = None  # the deletions list's type filter


STEPS: dict[str, tuple[Step, ...]] = {
    "student_basic": (Step("pupils", pupil), Step("leavers", pupil, optional=True)),
    "student_demographics": (Step("census", census),),
    "student_timetable": (Step("subjects", subject), Step("groups", group), Step("memberships", membership),
                          Step("lessons", lesson)),
    "student_assessment": (Step("results", result),),
    "student_attendance_exclusions": (Step("attendance", mark), Step("exclusions", exclusion)),
    "staff_basic": (Step("staff", staff),),
}


class ExampleConnector(Connector):
    """Reads the six categories from the Example MIS API, list by list and page by page."""

    name = "example"
    title = "Example MIS"
    settings_schema = {
        "base_url": Setting(str, DEFAULT_BASE_URL, title="API base URL"),
        "token": Setting(str, required=True, secret=True, per_connection=True, title="The school's API token"),
        "page_size": Setting(int, 200, title="Rows per page"),
        "read_timeout": Setting(float, 30.0, title="Seconds to wait for an answer"),
        "max_retries": Setting(int, 4, title="Retries of a request that failed for a temporary reason"),
        "backoff_base": Setting(float, 0.5, title="First wait between retries, in seconds"),
        "backoff_cap": Setting(float, 20.0, title="Longest wait between retries, in seconds"),
        "allow_insecure_http": Setting(bool, False, title="Allow plain HTTP to a local sandbox (tests)"),
        "allowed_hosts": Setting(list, [], title="Hosts besides the provider's the token may be sent to"),
    }
    categories = CATEGORIES
    sandbox = sandbox_spec.SANDBOX

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)  # coerced to settings_schema's types, defaults filled in
        s = self.settings
        self.client = ExampleClient(
            s["base_url"], s["token"] or "", allow_insecure_http=s["allow_insecure_http"],
            allowed_hosts=s["allowed_hosts"], page_size=s["page_size"], read_timeout=s["read_timeout"],
            max_retries=s["max_retries"], backoff_base=s["backoff_base"], backoff_cap=s["backoff_cap"],
            stats=self.stats, before_request=self.before_request)

    demo_connections = staticmethod(demo.demo_connections)

    # -- schools and access

    def check_connection(self) -> None:
        self.client.request("GET", "", endpoint="root")

    def _school_id(self, target: Any) -> str:
        stored = _attr(target, "provider_school_id")
        if stored:
            return str(stored)
        school = _attr(target, "school") or target
        urn = _attr(school, "urn")
        found = self.client.request("GET", "schools", endpoint="schools", params={"urn": urn}).get("items") if urn else []
        if not found or len(found) != 1:
            raise ConnectorError(f"The Example MIS has no school with URN {urn or '-'}.", endpoint="schools")
        return str(found[0]["id"])

    def request_access(self, school: Any, contacts: Sequence[Contact] = ()) -> AccessStatus:
        school_id = self._school_id(school)
        answer = self.client.request("POST", f"schools/{school_id}/access", endpoint="access")
        return AccessStatus(ACCESS.get(answer.get("access"), "pending"), school_id)

    def revoke_access(self, school: Any) -> None:
        try:
            self.client.request("DELETE", f"schools/{self._school_id(school)}/access", endpoint="access")
        except (AccessRefused, NotFound):
            return  # already gone at the provider

    def access_status(self, school: Any) -> AccessStatus:
        school_id = self._school_id(school)
        answer = self.client.request("GET", f"schools/{school_id}", endpoint="school")
        return AccessStatus(ACCESS.get(answer.get("access"), "not_connected"), school_id)

    # -- extract

    def extract(self, connection: Any, categories: Iterable[str], since: datetime | None,
                checkpoint: Checkpoint | None) -> Iterator[Record | Checkpoint | CategoryOutcome]:
        """Yield each category's records list by list; a Checkpoint after every page.

        The cursor is JSON ``{"step": i, "cursor": c}``: resume step i at the provider's cursor c.
        """
        school_id = self._school_id(connection)
        wanted = [c for c in CATEGORIES if c in set(categories)]
        for category in wanted:
            cursor = checkpoint.cursor if checkpoint is not None and checkpoint.category == category else None
            if checkpoint is not None and checkpoint.category in wanted and wanted.index(category) < wanted.index(
                    checkpoint.category):
                continue
            yield from self._category(school_id, category, since, cursor)

    def _category(self, school_id: str, category: str, since: datetime | None,
                  cursor: str | None) -> Iterator[Record | Checkpoint | CategoryOutcome]:
        steps = list(STEPS[category])
        types = ",".join(t for t, made in DELETIONS.items() if any(c == category for _, c in made))
        if since is not None and types:
            steps.append(Step("deletions", deletion(category), types=types))
        try:
            saved = json.loads(cursor) if cursor else {}
            first, at = int(saved.get("step", 0)), saved.get("cursor")
        except (ValueError, TypeError, AttributeError):
            raise BadResponse(f"The saved checkpoint for {category} cannot be read; run a full extract.") from None
        params = {"updated_since": format_since(since)} if since is not None else {}
        for number in range(first, len(steps)):
            step = steps[number]
            query = {**params, **({"type": step.types} if step.types else {})}
            pages = self.client.pages(f"schools/{school_id}/{step.path}", endpoint=step.path, params=query,
                                      cursor=at if number == first else None)
            try:
                for items, following in pages:
                    for row in items:
                        try:
                            yield from step.mapper(row)
                        except (KeyError, TypeError, ValueError, AttributeError):
                            raise BadResponse(f"The Example MIS sent a {step.path} row of an unexpected shape.",
                                              endpoint=step.path) from None
                    where = {"step": number, "cursor": following} if following else {"step": number + 1}
                    yield Checkpoint(category, json.dumps(where))
            except (AccessRefused, NotFound) as exc:
                yield self._outcome(school_id, category, step, exc)
                if not step.optional:
                    # The category is incomplete: its other reads are skipped and it is not reconciled.
                    yield Checkpoint(category, json.dumps({"step": len(steps)}))
                    return
                yield Checkpoint(category, json.dumps({"step": number + 1}))

    def _outcome(self, school_id: str, category: str, step: Step, exc: AccessRefused | NotFound) -> CategoryOutcome:
        """Say what a refused or missing read means, asking the provider first (R5: never inferred from one answer)."""
        if isinstance(exc, NotFound):
            if not step.optional:
                raise exc
            return CategoryOutcome(category, "optional_read_skipped", f"The Example MIS has no '{step.path}' list; "
                                   "the rest of the category was read.", withheld=True, endpoint=step.path)
        try:
            school = self.client.request("GET", f"schools/{school_id}", endpoint="school")
        except AccessRefused as again:
            if again.status == 401:
                raise ConnectorError("The Example MIS refused the portal's token (HTTP 401): check the connector's "
                                     "token setting. No connection was changed.", endpoint=step.path) from None
            school = {}
        except ConnectorError:
            school = {}  # the check failed: nothing is decided on it
        if school.get("access") in ("revoked", "none"):
            raise AuthorisationLost("The Example MIS shows the school no longer grants this portal access.",
                                    endpoint=step.path) from None
        scope = CATEGORY_SCOPES[category]
        if school.get("access") == "approved" and (school.get("scopes") or {}).get(scope) is False:
            if step.optional:
                return CategoryOutcome(category, "optional_read_skipped", f"The Example MIS: the school has not "
                                       f"granted '{scope}'; the rest of the category was read.", withheld=True,
                                       endpoint=step.path)
            return CategoryOutcome(category, "permission_missing", f"The Example MIS: the school has not granted the "
                                   f"'{scope}' scope to this portal. Grant it again, or the data held for it will be "
                                   "deleted under the normal rules.", withheld=True, confirmed=True, endpoint=step.path)
        return CategoryOutcome(category, "optional_read_skipped" if step.optional else "access_refused",
                               f"The Example MIS refused '{step.path}' although it shows the school approved; nothing "
                               "was changed and the next run will ask again.", withheld=True, endpoint=step.path)


def _attr(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
