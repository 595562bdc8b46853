"""GroupcallConnector: the six categories from Xporter on Demand as canonical records, pages and checkpoints."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from portal.connectors import (
    CATEGORIES,
    CHANGES_RESTARTED,
    AccessRefused,
    AccessStatus,
    AuthorisationLost,
    CategoryOutcome,
    Checkpoint,
    Connector,
    ConnectorError,
    Contact,
    NotFound,
    Record,
    Setting,
    SyncState,
    Tombstone,
)
from portal_groupcall import callback, demo, mapping, sandbox_spec
from portal_groupcall.client import TOKENS, AuthorisationPaused, GroupcallClient, Page


@dataclass(frozen=True)
class Step:
    """One paged XoD resource read for a category, and how its sets become records."""

    resource: str
    primary: str
    params: tuple[tuple[str, str], ...] = ()
    # Whether XoD's changedRows works for it (all data endpoints take the common parameters).
    changesets: bool = True


# What the school and support read when a changeset was started again (CHANGES_RESTARTED; no personal data).
RESTARTED_MESSAGE = ("Groupcall no longer knew where the last run had got to, so it sent this data in full without "
                     "what was deleted in between; a full run follows to find and remove it.")
# XoD scopes that open each category (any one is enough); a category with none granted yields nothing.
CATEGORY_SCOPES = {
    "student_basic": ("Student", "StudentLite"),
    "student_demographics": ("Student", "StudentLite"),
    "student_timetable": ("School",),
    "student_assessment": ("AssessmentResults",),
    "student_attendance_exclusions": ("Attendance", "StudentExclusions"),
    "staff_basic": ("Staff", "StaffLite"),
}


# XoD scopes that open each resource (any one is enough), as TokenDetails names them (spec §8).
RESOURCE_SCOPES = {
    "Students": ("Student", "StudentLite"), "Staff": ("Staff", "StaffLite"), "Groups": ("School", "SchoolLite"),
    "TimetableStructure": ("School",), "Timetable": ("School",), "AttendanceForDateRange": ("Attendance",),
    "StudentExclusions": ("StudentExclusions",), "assessmentstructure": ("School",),
    "assessmentresults": ("AssessmentResults",), "SEN": ("SEN", "SENTypes"),
}
# Field scopes: without any of the scopes, XoD leaves these canonical fields out of the category's
# records (spec §3.3); the store keeps what it holds for them (absent is not null).
FIELD_SCOPES = (
    (("StudentExtended",), "student_basic", ("legal_forename", "legal_surname", "date_of_birth", "admission_date",
                                             "leaving_date")),
    (("UPN",), "student_basic", ("upn",)),
    (("StudentFunding",), "student_demographics", ("fsm", "fsm_ever6", "pupil_premium")),
    (("StudentFamily",), "student_demographics", ("looked_after", "ever_in_care", "service_child")),
    (("StudentDemographic",), "student_demographics", ("first_language",)),
    (("StudentDemographic", "StudentEthnicity"), "student_demographics", ("ethnicity",)),
    (("SEN", "SENTypes"), "student_demographics", ("sen_status",)),
    (("SENTypes",), "student_demographics", ("sen_need",)),
    (("StaffEmployment",), "staff_basic", ("roles",)),
)


def academic_year(today: date) -> tuple[date, date]:
    """1 September to 31 August around ``today``: a fixed window keeps changesets stable all year."""
    start_year = today.year if today.month >= 9 else today.year - 1
    return date(start_year, 9, 1), date(start_year + 1, 8, 31)


class GroupcallConnector(Connector):
    """Groupcall Xporter on Demand: a school authorises the portal in Groupcall's portal; a per-school secret gives a token."""

    name = "groupcall"
    title = "Groupcall Xporter on Demand"
    settings_schema = {
        "base_url": Setting(str, "https://xporter.groupcall.com", title="XoD base URL"),
        "token_url": Setting(str, title="GetToken URL, when not under the base URL"),
        "relying_party": Setting(str, required=True, per_connection=True, title="The portal's application id at Groupcall"),
        "school_secret": Setting(str, secret=True, per_connection=True, title="Set by the authorisation callback"),
        "estab": Setting(str, per_connection=True, title="LA + DfE number; defaults to the school's"),
        "callback_secret": Setting(str, secret=True, title="Shared secret in the authorisation URL"),
        "page_size": Setting(int, 1000, title="Rows per page"),
        "retries": Setting(int, 3, title="Retries of a request that failed for a temporary reason"),
        "retry_backoff": Setting(float, 0.5, title="First wait between retries, in seconds"),
        "timeout": Setting(float, title="Seconds to wait for an answer (default: 10 to connect, 120 to read)"),
        "date_from": Setting(str, per_connection=True, title="First day of attendance read (ISO date)"),
        "date_to": Setting(str, per_connection=True, title="Last day of attendance read (ISO date)"),
        "allow_insecure_http": Setting(bool, False, title="Allow plain HTTP to a local sandbox (tests)"),
        "allowed_hosts": Setting(list, [], title="Hosts besides Groupcall's own the school secret may be sent to"),
    }
    categories = CATEGORIES
    schedule = {"trigger": "cron", "hour": 4}  # after XoD's overnight cache refresh (~03:00, spec §7)
    blueprint = callback.bp
    sandbox = sandbox_spec.SANDBOX
    # Retries wait through this; tests replace it so they never wait.
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    # `flask portal demo` connects the demo schools the sandbox serves.
    demo_connections = staticmethod(demo.demo_connections)

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        # The client and its granted scopes per connection: TokenDetails once per run, not per category.
        self._opened: dict[Any, tuple[GroupcallClient, frozenset[str]]] = {}

    # ------------------------------------------------------------ plumbing

    def _estab(self, school: Any = None, connection: Any = None) -> str:
        estab = self.settings.get("estab") or getattr(connection, "provider_school_id", None)
        if not estab:
            school = school or getattr(connection, "school", None)
            estab = getattr(school, "dfe_number", None)
        if not estab:
            raise ConnectorError("The school has no LA/DfE number, so Groupcall cannot find it.")
        return str(estab)

    def client(self, school: Any = None, connection: Any = None) -> GroupcallClient:
        secret = self.settings.get("school_secret")
        if not secret:
            raise AuthorisationLost(
                "The school has not authorised the portal in Groupcall yet (no school secret has arrived)."
            )
        if not self.settings.get("relying_party"):
            raise ConnectorError("The portal's Groupcall application id (relying_party) is not configured.")
        client = GroupcallClient(
            base_url=self.settings.get("base_url") or "https://xporter.groupcall.com",
            token_url=self.settings.get("token_url"),
            relying_party=self.settings["relying_party"],
            estab=self._estab(school, connection),
            school_secret=secret,
            page_size=self.settings["page_size"],
            retries=self.settings["retries"],
            backoff=self.settings["retry_backoff"],
            timeout=self.settings["timeout"] or (10.0, 120.0),
            allow_insecure_http=self.settings["allow_insecure_http"],
            allowed_hosts=self.settings["allowed_hosts"],
            sleep=lambda seconds: type(self).sleep(seconds),
            tokens=TOKENS,
            counters=self.stats,
            before_request=self.before_request,
        )
        return client

    def _window(self) -> tuple[date, date]:
        start, end = academic_year(datetime.now(timezone.utc).date())
        if self.settings.get("date_from"):
            start = date.fromisoformat(str(self.settings["date_from"]))
        if self.settings.get("date_to"):
            end = date.fromisoformat(str(self.settings["date_to"]))
        return start, end

    # ------------------------------------------------------------ access

    def check_connection(self) -> None:
        if self.settings.get("school_secret"):
            self.client().token_details()
            return
        # Without a school, only the deployment settings can be checked.
        GroupcallClient(
            base_url=self.settings.get("base_url") or "https://xporter.groupcall.com",
            token_url=self.settings.get("token_url"),
            relying_party=self.settings.get("relying_party") or "",
            estab="",
            school_secret="",
            allow_insecure_http=self.settings["allow_insecure_http"],
            allowed_hosts=self.settings["allowed_hosts"],
        )
        if not self.settings.get("relying_party"):
            raise ConnectorError("The portal's Groupcall application id (relying_party) is not configured.")

    def request_access(self, school: Any, contacts: Sequence[Contact] = ()) -> AccessStatus:
        """Groupcall has no request API for a school secret: the school authorises in Groupcall's portal, then the callback arrives."""
        if self.settings.get("school_secret"):
            return self.access_status(school)
        return AccessStatus("pending", provider_school_id=self._estab(school), detail={"how": "authorise_in_groupcall"})

    def revoke_access(self, school: Any) -> None:
        """XoD has no partner-side revoke: forget the token so nothing more is read; the school revokes in Groupcall."""
        if self.settings.get("school_secret"):
            try:
                key = self.client(school)._cache_key
            except ConnectorError:
                return
            with TOKENS.lock:
                TOKENS.tokens.pop(key, None)

    def access_status(self, school: Any) -> AccessStatus:
        estab = self._estab(school)
        if not self.settings.get("school_secret"):
            return AccessStatus("pending", provider_school_id=estab)
        try:
            client = self.client(school)
            client.token(refresh=True)  # GetToken is where Groupcall says "paused" or "not found" (spec §2.3)
            details = client.token_details()
        except AuthorisationPaused:
            return AccessStatus("pending", provider_school_id=estab, detail={"paused": True})
        except AuthorisationLost:
            return AccessStatus("revoked", provider_school_id=estab)
        return AccessStatus("approved", provider_school_id=estab, detail={"scopes": sorted(details.get("Scopes") or [])})

    # ------------------------------------------------------------ extract

    def extract(
        self,
        connection: Any,
        categories: Iterable[str],
        since: datetime | None,
        checkpoint: Checkpoint | None,
    ) -> Iterator[Record | Checkpoint]:
        # TokenDetails first: it proves the authorisation still stands and says which scopes it has. Once
        # per run, not per category (the engine asks one category at a time): a scope withdrawn mid-run
        # shows as a refused read, which classify() checks with Groupcall again.
        key = getattr(connection, "id", None) or id(connection)
        if key not in self._opened:
            client = self.client(connection=connection)
            self._opened[key] = (client, client.granted_scopes())
        client, scopes = self._opened[key]
        wanted = [c for c in CATEGORIES if c in set(categories)]
        resume = _Cursor.parse(checkpoint)
        for category in wanted:
            if resume and CATEGORIES.index(category) < CATEGORIES.index(resume.category):
                continue
            if not scopes.intersection(CATEGORY_SCOPES[category]):
                # TokenDetails is Groupcall's own word: the school has not granted this category (confirmed).
                yield CategoryOutcome(
                    category, "permission_missing",
                    f"Groupcall: your school has not granted the portal the {' or '.join(CATEGORY_SCOPES[category])} "
                    "scope. Grant it in the Groupcall portal, or the data the portal holds for it will be deleted "
                    "under the normal rules.", withheld=True, confirmed=True)
                yield Checkpoint(category, None)
                continue
            for needed, owner, fields in FIELD_SCOPES:
                if owner == category and not scopes.intersection(needed):
                    yield CategoryOutcome(
                        category, "fields_withheld",
                        f"Groupcall: your school has not granted the {' or '.join(needed)} scope, so "
                        f"{', '.join(fields)} were not read; the values the portal holds were left as they are.",
                        confirmed=True, fields=fields)
            reader = _CategoryReader(self, client, connection, category, scopes, incremental=since is not None)
            try:
                yield from reader.run(resume if resume and resume.category == category else None)
            except (AccessRefused, NotFound) as exc:
                yield self.classify(client, category, exc)
                # The category is incomplete: not reconciled; its change tokens are not advanced.
                yield Checkpoint(category, None)

    def classify(self, client: GroupcallClient, category: str, exc: AccessRefused | NotFound) -> CategoryOutcome:
        """Say what a refused or missing read means, asking Groupcall first (GetToken, then TokenDetails).

        GetToken refusing the stored secret raises AuthorisationLost (or AuthorisationPaused): that
        is Groupcall's own answer. Otherwise TokenDetails says whether the read's scope is granted.
        """
        resource = exc.endpoint or "?"
        if isinstance(exc, NotFound):
            raise exc
        try:
            client.token(refresh=True)
            scopes = client.granted_scopes()
        except AuthorisationLost:
            raise
        except ConnectorError as check:
            if check.code == "authorisation_paused":
                raise
            scopes = None  # the check failed: nothing is decided on it
        needed = RESOURCE_SCOPES.get(resource, ())
        if scopes is not None and needed and not scopes.intersection(needed):
            return CategoryOutcome(
                category, "permission_missing",
                f"Groupcall: your school has not granted the portal the {' or '.join(needed)} scope. Grant it in the "
                "Groupcall portal, or the data the portal holds for it will be deleted under the normal rules.",
                withheld=True, confirmed=True, endpoint=resource)
        return CategoryOutcome(
            category, "access_refused",
            f"Groupcall refused the portal's request for {resource} although the school's authorisation and scopes "
            "still stand; nothing was changed and the next run will ask again.", withheld=True, endpoint=resource)


@dataclass
class _Cursor:
    category: str
    step: int
    page: int
    changed_rows: str | None

    @classmethod
    def parse(cls, checkpoint: Checkpoint | None) -> _Cursor | None:
        if checkpoint is None or not checkpoint.cursor:
            return None
        data = json.loads(checkpoint.cursor)
        return cls(checkpoint.category, int(data["step"]), int(data["page"]), data.get("changed_rows"))

    def checkpoint(self) -> Checkpoint:
        body = {"step": self.step, "page": self.page, "changed_rows": self.changed_rows}
        return Checkpoint(self.category, json.dumps(body, sort_keys=True))


class _CategoryReader:
    """Reads one category's resources page by page, yielding records, tombstones and a checkpoint per page."""

    def __init__(self, connector: GroupcallConnector, client: GroupcallClient, connection: Any, category: str,
                 scopes: frozenset[str], *, incremental: bool) -> None:
        self.connector = connector
        self.client = client
        self.connection = connection
        self.category = category
        self.scopes = scopes
        self.incremental = incremental
        self.start, self.end = connector._window()

    def steps(self) -> list[Step]:
        window = (("DateFrom", self.start.isoformat()), ("DateTo", self.end.isoformat()))
        if self.category in ("student_basic", "student_demographics"):
            return [Step("Students", "Students", (("options", "includeLeavers"),))]
        if self.category == "student_timetable":
            return [
                Step("Groups", "Group", (("options", "includeStudentMembers,includeSubjects"),)),
                # Read whole every run: a row is one occurrence of a lesson, but a changeset's Lessons_deleted
                # names only the lesson Id, which all its occurrences share. Removed lessons are reconciled
                # by the periodic full run.
                Step("Timetable", "Lessons", (("options", "includeLessons"), *window), changesets=False),
            ]
        if self.category == "student_assessment":
            return [Step("assessmentresults", "AsmResults", (("ResultSets", ",".join(sorted(self.result_sets))),))]
        if self.category == "student_attendance_exclusions":
            steps = []
            if "Attendance" in self.scopes:
                steps.append(Step("AttendanceForDateRange", "AttendMarks", window))
            if "StudentExclusions" in self.scopes:
                steps.append(Step("StudentExclusions", "StudentExclusions", (("options", "includeLeavers"),)))
            return steps
        if self.category == "staff_basic":
            return [Step("Staff", "Staff", (("options", "includePrevious"),))]
        return []

    # -- reference data read whole before the paged steps (small, unpaged)

    def prepare(self) -> None:
        self.subjects: dict[str, str] = {}
        self.sen_needs: Any = mapping.MISSING
        self.aspects: dict[str, dict] = {}
        self.result_sets: dict[str, dict] = {}
        if self.category == "student_timetable":
            body = self.client.fetch("TimetableStructure")
            self.subject_rows = body.get("TTSubjects") or []
            self.subjects = {str(r.get("Code")): str(r["Id"]) for r in self.subject_rows if r.get("Code")}
        if self.category == "student_demographics" and "SENTypes" in self.scopes:
            needs: dict[str, tuple[int, str]] = {}
            try:
                for page in self.client.pages("SEN", {"Active": "1"}):
                    for row in page.rows("StudentSENTypeHistory"):
                        pupil, rank = str(row.get("StudentMis_Id")), row.get("Rank") or 99
                        code = mapping.text(row, "NeedTypeCode")
                        if code and (pupil not in needs or rank < needs[pupil][0]):
                            needs[pupil] = (rank, code)
                self.sen_needs = needs
            except (AccessRefused, NotFound) as exc:
                # A secondary read: the category goes on; SEN needs stay as stored (absent, not null).
                self.skipped.append(CategoryOutcome(
                    self.category, "optional_read_skipped",
                    "Groupcall did not answer the SEN needs read (HTTP "
                    f"{getattr(exc, 'status', None) or 404}); the rest of the category was read and SEN needs were "
                    "left as they are.", endpoint="SEN"))
        if self.category == "student_assessment":
            body = self.client.fetch("assessmentstructure")
            self.aspects = {str(r["Id"]): r for r in body.get("Aspects") or []}
            self.result_sets = {str(r["Id"]): r for r in body.get("ResultSets") or []}

    def run(self, resume: _Cursor | None) -> Iterator[Record | Checkpoint | CategoryOutcome]:
        self.skipped: list[CategoryOutcome] = []
        self.prepare()
        yield from self.skipped
        if self.category == "student_timetable" and (resume is None or resume.step == 0):
            # Subjects have no endpoint of their own: TimetableStructure's TTSubjects, read whole.
            for row in self.subject_rows:
                yield mapping.subject(row)
        steps = self.steps()
        if self.category == "student_assessment" and not self.result_sets:
            steps = []  # assessmentresults refuses a request without a filter
        for index, step in enumerate(steps):
            if resume and index < resume.step:
                continue
            yield from self.read(index, step, resume if resume and resume.step == index else None)
        yield Checkpoint(self.category, None)

    def token_key(self, step: Step) -> str:
        """The stored-state key of a read: same school, category, endpoint and parameters (spec §6.1: never change them)."""
        c = self.client
        params = json.dumps(step.params)
        key = f"changedRows:{c.relying_party}:{c.estab}:{self.category}:{step.resource}:{params}"
        # Long parameter lists are hashed: the key column holds 255 characters.
        return key if len(key) <= 255 else f"changedRows:{hashlib.sha256(key.encode()).hexdigest()}"

    def read(self, index: int, step: Step, resume: _Cursor | None) -> Iterator[Record | Checkpoint | SyncState]:
        params = dict(step.params)
        key = self.token_key(step)
        if resume is not None:
            requested, start = resume.changed_rows, resume.page + 1
        else:
            # The engine hands over what the last successful run stored (nothing on a full run).
            known = self.connector.sync_state.get(key) if self.incremental else None
            requested, start = known or "*", 1
        if step.changesets and requested:
            params["changedRows"] = requested
        next_token = None
        kept: set[tuple[str, str]] = set()
        deleted: list[Tombstone] = []
        last_page = start
        restarted = False
        for page in self.client.pages(step.resource, params, start_page=start):
            block = page.changed_rows
            if block is not None:
                next_token = block.get("NextChangedRows")
                restarted = restarted or (step.changesets and requested != "*" and _started_again(block))
            for record in self.records(step, page):
                kept.add((record.kind, record.external_id))
                yield record
            deleted.extend(self.tombstones(step, page))
            last_page = page.number
            yield _Cursor(self.category, index, page.number, requested).checkpoint()
        # Tombstones last: a pupil who moved from Students to Leavers is "deleted" from one set only.
        done: set[tuple[str, str]] = set()
        for tombstone in deleted:
            key_ = (tombstone.record_kind, tombstone.external_id)
            if key_ not in kept and key_ not in done:
                done.add(key_)
                yield tombstone
        if restarted:
            # Every row came, but none of the deletions since the last run: the engine queues a full run.
            yield CategoryOutcome(self.category, CHANGES_RESTARTED, RESTARTED_MESSAGE, endpoint=step.resource)
        if next_token and step.changesets:
            # After every record and deletion of the changeset: stored with them, used once the run succeeds.
            yield SyncState(key, next_token)
        if deleted or next_token:
            yield _Cursor(self.category, index, last_page, requested).checkpoint()

    def records(self, step: Step, page: Page) -> Iterator[Record]:
        category = self.category
        if step.resource == "Students":
            for row in page.rows("Students") + page.rows("Leavers"):
                if category == "student_basic":
                    yield mapping.pupil(row)
                else:
                    need = self.sen_needs
                    if need is not mapping.MISSING:
                        found = need.get(str(row["Id"]))
                        need = found[1] if found else None
                    yield mapping.demographics(row, need)
        elif step.resource == "Groups":
            for row in page.rows("Group"):
                yield mapping.group(row, self.subjects)
            for row in page.rows("StudentMembers"):
                yield mapping.membership(row)
        elif step.resource == "Timetable":
            for row in page.rows("Lessons"):
                yield mapping.lesson(row)
        elif step.resource == "assessmentresults":
            for row in page.rows("AsmResults"):
                yield mapping.assessment(row, self.aspects, self.result_sets)
        elif step.resource == "AttendanceForDateRange":
            for row in page.rows("AttendMarks"):
                if (row.get("Type") or "S") == "S":
                    yield mapping.attendance_mark(row)
        elif step.resource == "StudentExclusions":
            for row in page.rows("StudentExclusions"):
                yield mapping.exclusion(row)
        elif step.resource == "Staff":
            for row in page.rows("Staff"):
                yield mapping.staff(row)

    def tombstones(self, step: Step, page: Page) -> Iterator[Tombstone]:
        """{Set}_deleted lists (delta answers only) become tombstones of the records they removed."""
        kinds = {
            "Students": [("Students", self._pupil_kind()), ("Leavers", self._pupil_kind())],
            "Groups": [("Group", ("group", "student_timetable")), ("StudentMembers", ("membership", "student_timetable"))],
            "Timetable": [("Lessons", ("lesson", "student_timetable"))],
            "assessmentresults": [("AsmResults", ("assessment_result", "student_assessment"))],
            "AttendanceForDateRange": [("AttendMarks", ("attendance_mark", "student_attendance_exclusions"))],
            "StudentExclusions": [("StudentExclusions", ("exclusion", "student_attendance_exclusions"))],
            "Staff": [("Staff", ("staff", "staff_basic"))],
        }[step.resource]
        now = datetime.now(timezone.utc)
        for set_name, (kind, category) in kinds:
            for entry in page.rows(f"{set_name}_deleted"):
                xod_id = str(entry.get("Id") or "")
                external_id = xod_id
                if kind == "attendance_mark":
                    external_id = mapping.mark_id_from_xod(xod_id)
                elif kind == "membership":
                    external_id = mapping.membership_id_from_xod(xod_id) or xod_id
                if external_id:
                    yield Tombstone(external_id=external_id, record_kind=kind, record_category=category, deleted_at=now)

    def _pupil_kind(self) -> tuple[str, str]:
        return ("pupil", "student_basic") if self.category == "student_basic" else ("demographics", "student_demographics")


def _started_again(block: Mapping[str, Any]) -> bool:
    """Whether a changeset answer to a saved ``changedRows`` hash is a new start (everything, no deletions).

    How XoD answers a hash it no longer knows (expired, or its snapshots lost) is not documented
    (spec §6.1, [UNKNOWN]); its answer to ``*`` shows ``PreviousChangedRows`` and ``SnapshotDate`` null,
    and a normal follow-up shows both set (``PreviousChangedRows`` is then the token before the one sent,
    "*" on the second call, so "*" there is no sign of a restart). Taken as a restart: an answer that
    says it answered ``*``, or that carries both fields null. Fields left out say nothing (absent is not null).
    """
    if block.get("RequestedChangedRows") == "*":
        return True
    return all(name in block and block[name] is None for name in ("PreviousChangedRows", "SnapshotDate"))
