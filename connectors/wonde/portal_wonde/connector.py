"""The Wonde connector: access requests, access status and page-by-page extracts with resumable checkpoints."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from portal.connectors import (
    CATEGORIES,
    AccessRefused,
    AccessStatus,
    AuthorisationLost,
    BadResponse,
    CategoryOutcome,
    Checkpoint,
    Connector,
    ConnectorError,
    Contact,
    MembershipRecord,
    Record,
    Setting,
    Tombstone,
)
from portal_wonde import demo, mapping, sandbox_spec, webhook
from portal_wonde.client import DEFAULT_BASE_URL, NotFound, Page, WondeClient, format_filter_datetime, read_key

__all__ = ["SchoolNotFound", "WondeConnector"]

# Wonde's answer state -> the portal's AccessStatus.state
STATES = {"approved": "approved", "audited": "approved", "pending": "pending", "revoked": "revoked",
          "declined": "declined"}


class SchoolNotFound(ConnectorError):
    """Wonde has no school with the portal school's URN or DfE number."""

    code = "school_not_found"
    kind = "school_action"


@dataclass(frozen=True)
class Step:
    """One list endpoint read for a category, with the mapper that turns each row into records.

    ``optional``: a secondary read; if Wonde does not have it (404) or refuses it while the school
    stays approved, the run records a warning and the category goes on without it. ``shared``: a
    read of the pupils student_basic and student_demographics share in an incremental run ("keep":
    asked with both categories' includes, its rows kept; "use": served from those rows when kept).
    """

    endpoint: str
    params: Mapping[str, Any]
    mapper: Callable[[Mapping[str, Any]], Iterable[Record]]
    optional: bool = False
    shared: str = ""


# Incremental reads that later categories of the same run repeat: the changed pupils (the timetable's
# departures) and the deletions feed (student_basic and student_demographics ask for the same entries).
KEPT_ENDPOINTS = frozenset({"students", "students-leaver", "deletions"})
# The includes of the two categories read from the students (and leavers) lists.
BASIC_INCLUDES = "education_details,registration,year"
DEMOGRAPHIC_INCLUDES = "extended_details,sen_needs"
# A read is kept only while it is small (a day's changes); a big one is simply asked for again.
KEEP_AT_MOST = 10_000
# Secondary reads: a category is still worth having without them.
OPTIONAL_ENDPOINTS = frozenset({"students-leaver", "attendance-codes"})
# Endpoint -> the names a Wonde permission for it may carry (identity prefix or name), most specific
# first; the spec's vocabulary is a placeholder ([INF] §5.3), so an unmatched one is "unknown".
PERMISSION_NAMES = {
    "students": ("students",), "students-leaver": ("students-leaver", "students_leaver", "leavers", "students"),
    "subjects": ("subjects",), "classes": ("classes",), "groups": ("groups",), "lessons": ("lessons", "timetable"),
    "assessment/results": ("assessment", "results"), "attendance/session": ("attendance",),
    "attendance-codes": ("attendance",), "exclusions": ("exclusions",), "employees": ("employees", "staff"),
    "deletions": ("deletions",),
}


class WondeConnector(Connector):
    """Reads the six categories from Wonde's API, page by page."""

    name = "wonde"
    title = "Wonde"
    settings_schema = {
        "base_url": Setting(str, DEFAULT_BASE_URL, title="API base URL"),
        "token": Setting(str, required=True, secret=True, per_connection=True, title="Application access token"),
        "school_token": Setting(str, secret=True, per_connection=True,
                                title="The school's own token, sent by Wonde's schoolApproved event"),
        "per_page": Setting(int, 200, title="Rows per page"),
        "page_sizes": Setting(dict, {"attendance/session": 1000, "classes": 50, "groups": 10},
                              title="Rows per page asked for by endpoint (the server may send fewer)"),
        "prefetch": Setting(bool, True, title="Fetch the next page while storing this one"),
        # Wonde documents no rate limit; the spec's advice is one request at a time per school by default.
        "ask_ahead": Setting(int, 1, title="Requests an incremental run sends ahead at once (0: none)"),
        "connect_timeout": Setting(float, 5.0, title="Seconds to wait for a connection"),
        "read_timeout": Setting(float, 60.0, title="Seconds to wait for an answer"),
        "max_retries": Setting(int, 5, title="Retries of a request that failed for a temporary reason"),
        "backoff_base": Setting(float, 0.5, title="First wait between retries, in seconds"),
        "backoff_cap": Setting(float, 30.0, title="Longest wait between retries, in seconds"),
        "retry_after_cap": Setting(float, 120.0, title="Longest Retry-After honoured, in seconds"),
        "allow_insecure_http": Setting(bool, False, title="Allow plain HTTP to a local sandbox (tests)"),
        "allowed_hosts": Setting(list, [], title="Hosts besides api.wonde.com the token may be sent to"),
        "webhook_secret": Setting(str, secret=True, title="The secret in the events URL given to Wonde"),
        "webhook_signing_key": Setting(str, secret=True, title="HMAC key of signed events, when Wonde signs them"),
    }
    categories = CATEGORIES
    blueprint = webhook.bp
    sandbox = sandbox_spec.SANDBOX
    # `flask portal demo` connects the demo schools the sandbox serves.
    demo_connections = staticmethod(demo.demo_connections)

    def __init__(self, settings: Mapping[str, Any], *, sleep: Callable[[float], None] | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        extra = {"sleep": sleep} if sleep else {}
        self.client = WondeClient(
            s["base_url"] or DEFAULT_BASE_URL,
            s["token"] or "",
            per_page=s["per_page"],
            connect_timeout=s["connect_timeout"],
            read_timeout=s["read_timeout"],
            max_retries=s["max_retries"],
            backoff_base=s["backoff_base"],
            backoff_cap=s["backoff_cap"],
            retry_after_cap=s["retry_after_cap"],
            allow_insecure_http=s["allow_insecure_http"],
            allowed_hosts=s["allowed_hosts"],
            stats=self.stats,
            before_request=self.before_request,
            page_sizes={str(endpoint): int(size) for endpoint, size in s["page_sizes"].items()},
            prefetch=s["prefetch"],
            **extra,
        )
        # Stats the engine may copy into the run row.
        self.pages_read = 0
        self._school_ids: dict[Any, str] = {}
        # Reads of this run kept for later categories (incremental runs only, ids and deletion entries):
        # (endpoint, params) -> rows, filled only when a read went from its first page to its last.
        self._kept: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        # The day's pupils student_basic read with student_demographics' includes too, whole rows by endpoint
        # (incremental runs only, read in full and small), for student_demographics (Step.shared).
        self._shared: dict[str, list[Mapping[str, Any]]] = {}
        # First pages of this run's incremental reads, asked for together at its start (see _ask_ahead).
        self._ahead: dict[tuple[str, str, str], Future] | None = None

    @property
    def clock_offset(self):  # noqa: D401 - the contract's attribute, measured by the client
        """Wonde's clock minus ours (a lower bound from the Date headers), or None before any answer."""
        return self.client.clock_offset

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    @property
    def retries(self) -> int:
        return self.client.retries

    # -- schools and access

    def check_connection(self) -> None:
        self.client.ping()

    def find_school(self, school: Any) -> dict[str, Any] | None:
        """Return Wonde's school object for a portal school: by URN, else by LA code + establishment number."""
        urn = _attr(school, "urn")
        if urn:
            found = self.client.find_schools("all", urn=str(urn))
            if len(found) == 1:
                self.client.check_region(found[0])  # R64: refused at connect, before any data request
                return found[0]
        dfe = _attr(school, "dfe_number")
        if dfe and len(str(dfe)) == 7:
            found = self.client.find_schools("all", la_code=str(dfe)[:3], establishment_number=str(dfe)[3:])
            if len(found) == 1:
                self.client.check_region(found[0])
                return found[0]
        return None

    def _school_id(self, target: Any) -> str:
        """Return the Wonde school id for a connection (its stored id) or a portal school (matched)."""
        stored = _attr(target, "provider_school_id")
        if stored:
            return str(stored)
        school = _attr(target, "school") or target
        found = self.find_school(school)
        if not found:
            raise SchoolNotFound(
                f"Wonde has no school with URN {_attr(school, 'urn') or '-'} or DfE number "
                f"{_attr(school, 'dfe_number') or '-'}: check the school's numbers, or ask it to join Wonde.")
        return str(found["id"])

    def request_access(self, school: Any, contacts: Sequence[Contact] = ()) -> AccessStatus:
        """Ask Wonde for access; contacts are {"name", "email"} (or Wonde's own keys) of people at the school."""
        school_id = self._school_id(school)
        answer = self.client.request_access(school_id, [_wonde_contact(c) for c in contacts or ()])
        state = STATES.get(str(answer.get("state") or "").lower(), "pending" if answer.get("success") else "not_connected")
        return AccessStatus(state, school_id, {"message": answer.get("message")})

    def revoke_access(self, school: Any) -> None:
        school_id = self._school_id(school)
        try:
            self.client.revoke_access(school_id)
        except (AccessRefused, NotFound):
            return  # access is already gone at Wonde; nothing left to withdraw

    def access_status(self, school: Any) -> AccessStatus:
        school_id = self._school_id(school)
        for listing in ("approved", "pending", "revoked", "declined"):
            if any(str(s.get("id")) == school_id for s in self.client.find_schools(listing)):
                return AccessStatus(STATES[listing], school_id)
        return AccessStatus("not_connected", school_id)

    # -- extract

    def steps(self, category: str, since: datetime | None) -> list[Step]:
        """Return the list endpoints read for a category, in order (deletions last on incremental runs)."""
        changed = {"updated_after": format_filter_datetime(since)} if since else {}
        steps: list[Step] = []
        if category == "student_basic":
            # An incremental run reading both categories from the same time asks once, with both includes,
            # and keeps the day's rows for student_demographics (two requests fewer). A school may withhold
            # the special-category fields and Wonde might then refuse the whole read (spec: 403 per object,
            # unconfirmed): such a refusal is not student_basic's, so it is read again alone (_read_step).
            shared = "keep" if self._students_shared(since) else ""
            include = f"{BASIC_INCLUDES},{DEMOGRAPHIC_INCLUDES}" if shared else BASIC_INCLUDES
            params = {"include": include, **changed}
            steps = [Step("students", params, lambda row: [mapping.map_pupil(row)], shared=shared),
                     Step("students-leaver", params, lambda row: [mapping.map_pupil(row, leaving=True)], True,
                          shared=shared)]
        elif category == "student_demographics":
            shared = "use" if self._students_shared(since) else ""
            params = {"include": DEMOGRAPHIC_INCLUDES, **changed}
            steps = [Step("students", params, lambda row: [mapping.map_demographics(row)], shared=shared),
                     Step("students-leaver", params, lambda row: [mapping.map_demographics(row)], True, shared=shared)]
        elif category == "student_timetable":
            steps = [Step("subjects", dict(changed), lambda row: [mapping.map_subject(row)]),
                     Step("classes", {"include": "subject,students", **changed}, self._with_departures(mapping.map_class)),
                     Step("groups", {"include": "students", **changed}, self._with_departures(mapping.map_group)),
                     Step("lessons", {"include": "period,class", **changed}, lambda row: [mapping.map_lesson(row)])]
        elif category == "student_assessment":
            steps = [Step("assessment/results", {"include": "aspect,template,resultset", **changed},
                          lambda row: [mapping.map_result(row)])]
        elif category == "student_attendance_exclusions":
            steps = [Step("attendance/session", {"include": "attendance_code", **changed},
                          lambda row: [mapping.map_mark(row, self._codes)]),
                     Step("exclusions", dict(changed), lambda row: [mapping.map_exclusion(row)])]
        elif category == "staff_basic":
            steps = [Step("employees", {"include": "employment_details,contact_details,roles", **changed},
                          lambda row: [mapping.map_employee(row)])]
        if since is not None:
            types = _deletion_types(category, self.run_categories)
            if types:
                steps.append(Step("deletions", {"type": types, **changed},
                                  lambda row, c=category: [t] if (t := mapping.map_deletion(row, c)) else []))
        return steps

    def _students_shared(self, since: datetime | None) -> bool:
        """Whether this run reads student_basic and student_demographics incrementally from the same time."""
        run, at = self.run_categories, self.run_since
        return (since is not None and "student_basic" in run and "student_demographics" in run
                and at.get("student_basic") == at.get("student_demographics") == since)

    def _with_departures(self, mapper: Callable[[Mapping[str, Any]], Iterable[Record]]):
        """Wrap a class/group mapper so an incremental run also removes memberships of pupils who moved on.

        Wonde sends no deletion entries for memberships, and an updated class lists only its current
        students. So for each class or group that changed, the pupils who changed, left or were deleted
        in the same window and are not listed any more get a membership tombstone (tombstones of
        memberships that never existed change nothing). Anything else is reconciled by a full run.
        """

        def mapped(row: Mapping[str, Any]) -> Iterator[Record]:
            current: set[str] = set()
            group = None
            for record in mapper(row):
                if isinstance(record, MembershipRecord):
                    current.add(record.pupil_external_id)
                else:
                    group = record
                yield record
            if group is not None and self._departures:
                for pupil_id in sorted(self._departures - current):
                    yield Tombstone(external_id=f"{group.external_id}:{pupil_id}", updated_at=group.updated_at,
                                    record_kind="membership", record_category="student_timetable",
                                    deleted_at=group.updated_at)

        return mapped

    def _load_departures(self, base: str, since: datetime) -> None:
        """Collect the pupils changed, left or deleted since ``since`` (ids only)."""
        changed = {"updated_after": format_filter_datetime(since)}
        ids: set[str] = set()
        for endpoint, params in (("students", changed), ("students-leaver", changed),
                                 ("deletions", {"type": "student", **changed})):
            kept = self._kept.get(_kept_key(endpoint, params))
            if kept is None and endpoint == "deletions":
                kept = self._kept_deletions("student", changed["updated_after"])
            if kept is not None:
                # The same rows (whatever their includes) were read in full for student_basic in this run.
                ids.update(str(row["id"]) for row in kept if row.get("id"))
                continue
            try:
                for page in self.client.pages(f"{base}/{endpoint}", endpoint=endpoint, params=params):
                    ids.update(str(row["id"]) for row in page.items if isinstance(row, Mapping) and row.get("id"))
            except (AccessRefused, NotFound):
                # Without them, memberships of pupils who moved on wait for the next full run.
                continue
        self._departures = ids

    def extract(
        self,
        connection: Any,
        categories: Iterable[str],
        since: datetime | None,
        checkpoint: Checkpoint | None,
    ) -> Iterator[Record | Checkpoint]:
        """Yield records page by page, then Checkpoint(category, cursor) after each page.

        The cursor is JSON: ``{"step": i, "next": url}`` (resume at that page) or ``{"step": i}``
        (start step i). A checkpoint for a later category means earlier ones are done.
        """
        wanted = [c for c in CATEGORIES if c in set(categories)]
        # The engine asks one category at a time: the school is matched once per run (not once per category).
        key = getattr(connection, "id", None) or id(connection)
        school_id = self._school_ids.get(key)
        if school_id is None:
            school_id = self._school_ids[key] = self._school_id(connection)
        self._school = school_id
        try:
            base = self.client.school_base(school_id)
        except AccessRefused as exc:
            self.confirm_access(school_id, exc)  # raises AuthorisationLost when Wonde confirms it
            raise AccessRefused(
                "Wonde refused to show the school's record although it still lists the school as approved for "
                "the portal; nothing was changed and the next run will ask again.", status=exc.status,
                endpoint="school") from None
        # The school's code list is read only if a mark comes with a code id instead of the code
        # (servers that do not expand the include): marks that carry their code need no list.
        self._codes: Mapping[str, str] = _CodeList(lambda: self._read_codes(base))
        self._codes_outcome: CategoryOutcome | None = None
        resume_at = wanted.index(checkpoint.category) if checkpoint and checkpoint.category in wanted else 0
        if self._ahead is None and wanted[resume_at:]:
            self._ahead = self._ask_ahead(base, wanted[resume_at], since, resumed=checkpoint is not None)
        try:
            for index, category in enumerate(wanted):
                if index < resume_at:
                    continue
                cursor = checkpoint.cursor if checkpoint and index == resume_at else None
                yield from self._extract_category(base, category, since, cursor)
        except BaseException:
            # The run stopped (an error, or the engine stopped reading): answers not yet asked for are not sent.
            for future in (self._ahead or {}).values():
                future.cancel()
            self._ahead = {}
            raise

    def _ask_ahead(self, base: str, first: str, since: datetime | None, *, resumed: bool) -> dict[tuple[str, str, str], Future]:
        """Ask at once for the first page of every incremental read this run will make, from ``first`` on.

        A quiet day's incremental run is a dozen one-page reads; asked one after another, each waiting
        for the run to store the one before, their round trips were most of its time against a distant
        provider (issue 19). ``ask_ahead`` helper threads send them in order (one: still one request at
        a time, without the waits in between). Each answer waits until its read is reached and is used
        there as if asked for then: errors (a 403 confirmed with Wonde first, R5) surface at that point,
        the pages and checkpoints are the same, and the run's watermark is its start, so an answer asked
        early is never newer than the watermark says. The same request is asked once (the deletions read
        the run's categories share). Not asked ahead: reads in full (no changed-since time), the
        category a resumed run restarts in, and the timetable's departures (served from earlier reads).
        """
        workers = self.settings["ask_ahead"]
        run = list(self.run_categories)
        if workers <= 0 or first not in run:
            return {}
        reads: dict[tuple[str, str, str], tuple[str, str, Mapping[str, Any]]] = {}
        for category in run[run.index(first):]:
            changed = since if category == first else self.run_since.get(category)
            if changed is None or (resumed and category == first):
                continue
            for step in self.steps(category, changed):
                if step.shared == "use":
                    continue  # served from student_basic's read
                url = f"{base}/{step.endpoint}"
                reads.setdefault(read_key(url, step.endpoint, step.params), (url, step.endpoint, step.params))
        return self.client.ask_ahead(reads.values(), workers) if reads else {}

    def _extract_category(self, base: str, category: str, since: datetime | None,
                          cursor: str | None) -> Iterator[Record | Checkpoint]:
        steps = self.steps(category, since)
        self._departures: set[str] = set()
        if category == "student_timetable" and since is not None:
            self._load_departures(base, since)
        start_step, next_url = 0, None
        if cursor:
            try:
                saved = json.loads(cursor)
                start_step, next_url = int(saved.get("step", 0)), saved.get("next")
            except (ValueError, TypeError, AttributeError):
                raise BadResponse(f"The saved checkpoint for {category} cannot be read; run a full extract.") from None
        for number in range(start_step, len(steps)):
            step = steps[number]
            try:
                yield from self._read_step(base, category, steps, number, next_url if number == start_step else None)
            except (AccessRefused, NotFound) as exc:
                outcome = self.classify(category, step, exc)
                yield outcome
                if not step.optional:
                    # The category is incomplete: its other reads are skipped, and it is not reconciled.
                    yield Checkpoint(category, json.dumps({"step": len(steps)}))
                    return
                yield Checkpoint(category, json.dumps({"step": number + 1}))

    def classify(self, category: str, step: Step, exc: AccessRefused | NotFound) -> CategoryOutcome:
        """Say what a refused or missing read means, asking Wonde first; raise AuthorisationLost only when confirmed."""
        endpoint = step.endpoint
        if isinstance(exc, NotFound):
            if not step.optional:
                raise exc
            return CategoryOutcome(category, "optional_read_skipped",
                                   f"Wonde: the school's data has no '{endpoint}' list; the rest of the category was read.",
                                   withheld=True, endpoint=endpoint)
        state = self.confirm_access(self._school, exc, endpoint)
        if state == "permission_missing":
            if step.optional:
                return CategoryOutcome(category, "optional_read_skipped",
                                       f"Wonde: your school has not approved '{endpoint}' for this portal; the rest "
                                       "of the category was read.", withheld=True, endpoint=endpoint)
            return CategoryOutcome(category, "permission_missing",
                                   f"Wonde: your school has not approved '{endpoint}' for this portal. Approve it in "
                                   "the Wonde school portal, or the data the portal holds for it will be deleted "
                                   "under the normal rules.", withheld=True, confirmed=True, endpoint=endpoint)
        return CategoryOutcome(category, "optional_read_skipped" if step.optional else "access_refused",
                               f"Wonde refused the portal's request for '{endpoint}' although it shows the school "
                               "approved; nothing was changed and the next run will ask again.",
                               withheld=True, endpoint=endpoint)

    def confirm_access(self, school_id: str, exc: AccessRefused, endpoint: str | None = None) -> str:
        """Ask Wonde whether access really ended after a refused request (never inferred from one answer, R5).

        Raises AuthorisationLost when Wonde's school status says the application is no longer approved.
        Returns "permission_missing" when the school is approved but Wonde lists the endpoint's
        permission as not approved, else "unconfirmed" (approved, permission granted or unknown, or
        the check itself failed).
        """
        try:
            meta = self.client.school_meta(school_id)
        except AccessRefused as again:
            if again.status == 401:
                raise ConnectorError("Wonde refused the portal's access token (HTTP 401): check the connector's "
                                     "token setting. No connection was changed.", endpoint=endpoint) from None
            self._raise_if_listed_revoked(school_id, endpoint)
            return "unconfirmed"
        except ConnectorError:
            return "unconfirmed"  # the check failed: nothing is decided on it
        approved = mapping.normalise_bool(meta.get("approved"))
        if approved is False:
            raise AuthorisationLost(
                "Wonde shows the school no longer approves this portal: the school revoked access in the Wonde "
                "school portal.", endpoint=endpoint or exc.endpoint, page=exc.page) from None
        if approved is not True or endpoint is None:
            return "unconfirmed"
        try:
            permissions = self.client.school_permissions(school_id)
        except ConnectorError:
            return "unconfirmed"
        for name in PERMISSION_NAMES.get(endpoint, (endpoint,)):
            matching = [p for p in permissions if _permission_key(p) == name]
            if matching:
                denied = all(mapping.normalise_bool(p.get("approved")) is False for p in matching)
                return "permission_missing" if denied else "unconfirmed"
        return "unconfirmed"

    def _raise_if_listed_revoked(self, school_id: str, endpoint: str | None) -> None:
        """Raise AuthorisationLost if Wonde lists the school as revoked or declined for this portal."""
        for listing in ("revoked", "declined"):
            try:
                listed = any(str(s.get("id")) == school_id for s in self.client.find_schools(listing))
            except ConnectorError:
                return
            if listed:
                raise AuthorisationLost(f"Wonde lists the school as {listing} for this portal.", endpoint=endpoint)

    def _read_step(self, base: str, category: str, steps: list[Step], number: int,
                   next_url: str | None) -> Iterator[Record | Checkpoint]:
        step = steps[number]
        key = _kept_key(step.endpoint, step.params)
        # The same deletions read (same types, same window) may have been read in full earlier in this run, and
        # student_demographics' pupils by student_basic; else (refused, too many, a resumed run) they are asked for.
        kept = self._kept.get(key) if step.endpoint == "deletions" and not next_url else None
        if step.shared == "use" and not next_url:
            kept = self._shared.pop(step.endpoint, None)
        if kept is not None:
            for row in kept:
                try:
                    yield from step.mapper(row)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    raise BadResponse(f"Wonde's answer for {step.endpoint} holds a row of an unexpected shape "
                                      f"({type(exc).__name__}).", endpoint=step.endpoint) from None
            yield Checkpoint(category, json.dumps({"step": number + 1}))
            return
        # Incremental reads later categories repeat (changed pupils, deletions) are kept, ids and entries only.
        keep: list[Mapping[str, Any]] | None = (
            [] if not next_url and "updated_after" in step.params and step.endpoint in KEPT_ENDPOINTS else None)
        share: list[Mapping[str, Any]] | None = [] if step.shared == "keep" and not next_url else None
        alone: list[bool] = []
        if next_url:
            self.client._check_host(next_url, step.endpoint)
            pages = self.client.pages(next_url, endpoint=step.endpoint, params=None)
        else:
            url = f"{base}/{step.endpoint}"
            asked = self._ahead.pop(read_key(url, step.endpoint, step.params), None) if self._ahead else None
            pages = self.client.pages(url, endpoint=step.endpoint, params=step.params, asked=asked)
            if share is not None:
                pages = self._alone_if_refused(pages, url, step, alone)
        for page in pages:
            self.pages_read += 1
            if keep is not None:
                keep.extend({"id": row.get("id")} if step.endpoint != "deletions" else row
                            for row in page.items if isinstance(row, Mapping))
                if len(keep) > KEEP_AT_MOST:
                    keep = None
            if share is not None:
                share.extend(page.items)
                if len(share) > KEEP_AT_MOST:
                    share = None
            for row in page.items:
                # type() first: decoded JSON rows are plain dicts, and the ABC check costs more per row.
                if type(row) is not dict and not isinstance(row, Mapping):
                    raise BadResponse(f"Wonde's answer for {step.endpoint} (page {page.number}) holds a row that "
                                      "is not an object.", endpoint=step.endpoint, page=page.number)
                try:
                    yield from step.mapper(row)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    raise BadResponse(f"Wonde's answer for {step.endpoint} (page {page.number}) holds a row "
                                      f"of an unexpected shape ({type(exc).__name__}).",
                                      endpoint=step.endpoint, page=page.number) from None
            if self._codes_outcome is not None:
                yield self._codes_outcome
                self._codes_outcome = None
            if keep is not None and not page.next_url:
                self._kept[key] = keep
            if share is not None and not alone and not page.next_url:
                self._shared[step.endpoint] = share
            position = {"step": number, "next": page.next_url} if page.next_url else {"step": number + 1}
            yield Checkpoint(category, json.dumps(position))

    def _alone_if_refused(self, pages: Iterator[Page], url: str, step: Step, alone: list[bool]) -> Iterator[Page]:
        """A shared read's pages; should Wonde refuse its first page, the read again with student_basic's includes only.

        The refusal may be of student_demographics' fields (not student_basic's to answer for): the read
        is asked again alone, and it decides (a refusal of that goes to classify, R5). ``alone`` gets an
        entry then, and student_demographics asks for its own pupils.
        """
        try:
            first = next(pages)
        except StopIteration:
            return
        except AccessRefused:
            alone.append(True)
            yield from self.client.pages(url, endpoint=step.endpoint, params={**step.params, "include": BASIC_INCLUDES})
            return
        yield first
        yield from pages

    def _kept_deletions(self, type_: str, updated_after: str) -> list[Mapping[str, Any]] | None:
        """A deletions read of this run, in this window, that asked for ``type_`` (with others): its entries of that type."""
        for (endpoint, params), rows in self._kept.items():
            if endpoint != "deletions":
                continue
            saved = json.loads(params)
            if saved.get("updated_after") == updated_after and type_ in str(saved.get("type") or "").split(","):
                return [row for row in rows if str(row.get("type") or "").strip().lower() == type_]
        return None

    def _read_codes(self, base: str) -> dict[str, str]:
        """Read the school's attendance codes (id -> code), the first time a mark needs them."""
        codes: dict[str, str] = {}
        try:
            for page in self.client.pages(f"{base}/attendance-codes", endpoint="attendance-codes", params={}):
                for row in page.items:
                    if isinstance(row, Mapping) and row.get("id") is not None and row.get("code"):
                        codes[str(row["id"])] = str(row["code"])
        except (AccessRefused, NotFound) as exc:
            # Yielded after the page that needed the list (see _read_step); those marks keep an empty code.
            status = getattr(exc, "status", None) or 404
            self._codes_outcome = CategoryOutcome(
                "student_attendance_exclusions", "optional_read_skipped",
                f"Wonde did not answer the attendance codes list (HTTP {status}); marks were read with the "
                "codes they carry.", endpoint="attendance-codes")
            return {}
        return codes


class _CodeList(Mapping):
    """A school's attendance codes, read (once) when a mark first looks one up."""

    def __init__(self, read: Callable[[], dict[str, str]]) -> None:
        self._read = read
        self._codes: dict[str, str] | None = None

    def _loaded(self) -> dict[str, str]:
        if self._codes is None:
            self._codes = self._read()
        return self._codes

    def __getitem__(self, key: str) -> str:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __bool__(self) -> bool:  # truthy without reading: map_mark asks ``codes or {}``
        return True


def _kept_key(endpoint: str, params: Mapping[str, Any]) -> tuple[str, str]:
    """A kept read's key: its endpoint, filter window and deletion types (includes do not change which rows come)."""
    return endpoint, json.dumps({k: v for k, v in params.items() if k in ("updated_after", "type")}, sort_keys=True)


def _deletion_types(category: str, run_categories: Iterable[str]) -> str:
    """The deletion types an incremental read of a category asks for: with the run's other categories' when it has
    any, so one deletions read serves every category of the run (each keeps only its own entries)."""
    wanted = {category} | (set(run_categories) if category in run_categories else set())
    if not any(c == category for kinds in mapping.DELETION_KINDS.values() for _, c in kinds):
        return ""
    return ",".join(t for t, kinds in mapping.DELETION_KINDS.items() if any(c in wanted for _, c in kinds))


def _wonde_contact(contact: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a provider-neutral {"name", "email"} contact into Wonde's request-access contact shape."""
    if "first_name" in contact or "email_address" in contact:
        return dict(contact)
    first, _, last = str(contact.get("name") or "").strip().partition(" ")
    return {"first_name": first, "last_name": last, "email_address": contact.get("email") or None,
            "phone_number": contact.get("phone") or None, "notes": "Requested through the MIS connection portal"}


def _permission_key(permission: Mapping[str, Any]) -> str:
    """The resource a Wonde permission is about: its identity before the dot ("students.read"), else its name."""
    identity = str(permission.get("identity") or "").strip().lower()
    if identity:
        return identity.split(".", 1)[0]
    return str(permission.get("name") or "").strip().lower()



def _attr(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)
