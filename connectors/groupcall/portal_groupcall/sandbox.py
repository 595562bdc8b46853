"""A Groupcall Xporter on Demand sandbox: a real HTTP server with XoD's quirks, fault injection and request counting.

It serves schools rendered from portal.sandbox.synthetic (see render.py) in XoD's wire format and
reproduces what the spec (../shared/specs/groupcall.md §15) says the real service does: tokens from
GetToken, `Authorization: Idaas`, fields left out when their scope is not granted, paging whose
NextPage points past the end, changedRows changesets with `{Set}_deleted`, and errors inside HTTP 200.
Nothing starts at import: call start() (tests) or serve() (the `flask portal sandbox` command).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, Response, g, request

from portal.sandbox.server import Fault as BaseFault
from portal.sandbox.server import SandboxServer

RELYING_PARTY = "portal.sandbox"
UK = ZoneInfo("Europe/London")
DENIED = "Authorization has been denied for this request."
NOT_FOUND = "Relying Party not found for estab or secret not correct"
PAUSED = (
    "Authorisation is currently paused while the school finalises the selection of people they wish to include "
    "in this feed."
)
SCOPE_DENIED = "Scope not authorised"

# Scopes a school grants by default: everything the connector reads.
DEFAULT_SCOPES = (
    "Student", "StudentExtended", "UPN", "StudentDemographic", "StudentFunding", "StudentFamily",
    "SEN", "SENTypes", "Attendance", "StudentExclusions", "AssessmentResults", "School", "Staff",
    "StaffEmployment",
)

# resource -> (scopes any one of which opens it, primary set, other sets)
ENDPOINTS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    # Leavers come in their own set with options=includeLeavers (set name assumed; see README).
    "students": (("Student", "StudentLite"), "Students", ("StudentSiblings", "Leavers")),
    "staff": (("Staff", "StaffLite"), "Staff", ()),
    "groups": (("School", "SchoolLite"), "Group", ("StaffMembers", "StudentMembers", "GroupTypes")),
    "timetablestructure": (("School",), "TTSubjects", ("TTDays", "TTSessions", "TTPeriods", "TTRooms")),
    "timetable": (("School",), "Lessons", ("LessonStaff", "LessonRooms")),
    "attendancefordaterange": (("Attendance",), "AttendMarks", ()),
    "studentexclusions": (("StudentExclusions",), "StudentExclusions", ()),
    "assessmentstructure": (("School",), "Aspects", ("ResultSets",)),
    "assessmentresults": (("AssessmentResults",), "AsmResults", ()),
    "sen": (("SEN", "SENTypes"), "StudentSENTypeHistory", ("StudentSENProvisionHistory", "StudentDisabilities")),
    "schoolinfo": (("School", "SchoolLite"), "SchoolInfo", ()),
}

# Fields released only by some scopes (any one of them); every other field comes with the endpoint.
FIELD_SCOPES: dict[str, dict[str, tuple[str, ...]]] = {
    "Students": {
        "AdmissionNo": ("Student",),
        "DateofBirth": ("StudentExtended",),
        "LegalForename": ("StudentExtended",),
        "LegalSurname": ("StudentExtended",),
        "MiddleName": ("StudentExtended",),
        "EntryDate": ("StudentExtended",),
        "LeavingDate": ("StudentExtended",),
        "EnrolmentStatus": ("StudentExtended",),
        "UPN": ("UPN",),
        "FormerUPN": ("UPN",),
        "SENProvision": ("SEN", "SENTypes"),
        "EAL": ("StudentDemographic", "StudentFunding"),
        "FirstLanguage": ("StudentDemographic",),
        "FirstLanguageCode": ("StudentDemographic",),
        "EthnicityCode": ("StudentDemographic", "StudentEthnicity"),
        "Ethnicity": ("StudentDemographic", "StudentEthnicity"),
        "FSMEligible": ("StudentFunding",),
        "FSMEver6": ("StudentFunding",),
        "PupilPremium": ("StudentFunding",),
        "InLeaCare": ("StudentFamily",),
        "EverInCare": ("StudentFamily",),
        "ServiceChild": ("StudentFamily",),
        "GroupIds": ("School",),
    },
    "Staff": {
        "EmploymentStart": ("StaffEmployment",),
        "EmploymentEnd": ("StaffEmployment",),
        "Roles": ("StaffEmployment",),
        "Gender": ("StaffExtended",),
        "LegalForename": ("StaffExtended",),
        "LegalSurname": ("StaffExtended",),
        "DateOfBirth": ("StaffExtended",),
    },
    "StudentSENTypeHistory": {"NeedTypeCode": ("SENTypes",), "NeedTypeDescription": ("SENTypes",)},
}

FIELD_SCOPES["Leavers"] = FIELD_SCOPES["Students"]

# http_403: the scope-refused envelope with HTTP 403 while the school's authorisation and scopes still
# stand (one endpoint refused); http_404: the endpoint is missing for this school; scope_error_in_200: the
# scope-refused envelope inside an HTTP 200 (spec §11: errors come back with 200 too).
FAULT_KINDS = (
    "http_500", "http_502", "http_503", "http_429", "http_401", "http_403", "http_404", "slow", "drop",
    "error_in_200", "scope_error_in_200", "malformed_json", "revoke",
)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def xod_expires(moment: datetime) -> str:
    """Format a token expiry the way GetToken does: UTC, 'Z', seven fractional digits."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def xod_timestamp(moment: datetime) -> str:
    """Format LastUpdated: naive UK time, with a variable number of fractional digits (spec §4.3)."""
    text = moment.astimezone(UK).replace(tzinfo=None).isoformat(timespec="milliseconds")
    return text.rstrip("0").rstrip(".")


def row_hash(row: Mapping[str, Any]) -> str:
    body = json.dumps({k: v for k, v in row.items() if k not in ("RowHash", "LastUpdated")}, sort_keys=True, default=str)
    return hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest().upper()


@dataclass(kw_only=True)
class Fault(BaseFault):
    """One injected misbehaviour of a FAULT_KINDS kind (see portal.sandbox.server.Fault for ``match``, ``skip``, ``times``)."""

    kind: str
    delay: float = 1.0
    # For http_* faults: the Retry-After header to send (429 sends "0" unless told otherwise).
    retry_after: str | None = None


@dataclass
class SandboxSchool:
    """One school as XoD holds it: its authorisation (secret, scopes, status) and its data sets."""

    estab: str
    name: str
    secret: str
    scopes: set[str]
    status: str = "Authorised"  # Authorised | Paused | Revoked
    sets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    email: str = "office@school.example"
    # A portal.sandbox.synthetic school rendered live, so its mutations show up like MIS edits.
    source: Any = None
    rendered: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Issued:
    estab: str
    relying_party: str
    secret: str
    expires: datetime


class GroupcallSandbox(SandboxServer):
    """A Groupcall XoD server for tests and the demo: start(), use .url, stop() (or use it as a context manager)."""

    fault_type = Fault
    thread_name = "groupcall-sandbox"

    def __init__(
        self,
        *,
        relying_party: str = RELYING_PARTY,
        token_lifetime: timedelta = timedelta(days=5),
        authorisation_url: str | None = None,
        revoked_tokens_keep_working: bool = False,
        auth_failure_status: int = 401,
        scope_failure_status: int = 403,
        past_end: str = "empty",
        max_page_size: int = 1000,
    ) -> None:
        super().__init__()
        self.relying_party = relying_party
        self.token_lifetime = token_lifetime
        self.authorisation_url = authorisation_url
        self.revoked_tokens_keep_working = revoked_tokens_keep_working
        self.auth_failure_status = auth_failure_status
        self.scope_failure_status = scope_failure_status
        self.past_end = past_end  # what a page past PageCount answers: "empty" (real behaviour unknown)
        self.max_page_size = max_page_size
        self.schools: dict[str, SandboxSchool] = {}
        self.id_maps: dict[str, dict[str, str]] = {}
        self.on_request: Callable[[str], None] | None = None
        self._now: datetime | None = None
        self._tokens: dict[str, _Issued] = {}
        self._snapshots: dict[tuple, dict[str, dict[str, str]]] = {}
        self._changesets: dict[tuple, dict[str, Any]] = {}
        # Per changeset token: the token asked for when it was given out (PreviousChangedRows of its follow-up).
        self._chain: dict[tuple, str] = {}
        # How an unknown (expired, forgotten) changedRows hash is answered besides "everything, no deletions":
        # RequestedChangedRows "*" (False) or the hash sent (True); how XoD does it is not known.
        self.restart_echoes_hash = False
        self.app = self._build_app()

    def wsgi_app(self) -> Flask:
        return self.app

    @property
    def url(self) -> str:
        """The base URL to configure the connector with."""
        return self.origin

    # ------------------------------------------------------------ control (Python API)

    def now(self) -> datetime:
        return self._now or now_utc()

    def set_clock(self, moment: datetime | None) -> None:
        self._now = moment

    def add_school(
        self,
        estab: str,
        sets: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        *,
        name: str = "Sandbox School",
        scopes: Iterable[str] = DEFAULT_SCOPES,
        secret: str | None = None,
        id_map: Mapping[str, str] | None = None,
    ) -> SandboxSchool:
        """Register an authorised school with its data sets (rows in XoD wire format)."""
        with self._lock:
            school = SandboxSchool(estab=str(estab), name=name, secret=secret or str(uuid.uuid4()), scopes=set(scopes))
            self.schools[school.estab] = school
            for set_name, rows in (sets or {}).items():
                for row in rows:
                    self._put(school, set_name, row)
            self.id_maps[school.estab] = dict(id_map or {})
            return school

    def load_synthetic(self, estab: str, synthetic_school: Any, **kwargs: Any) -> SandboxSchool:
        """Register a school rendered from a portal.sandbox.synthetic school."""
        school = self.add_school(estab, None, name=synthetic_school.name, **kwargs)
        school.source = synthetic_school
        with self._lock:
            self._render(school)
        return school

    def upsert(self, estab: str, set_name: str, row: Mapping[str, Any]) -> None:
        """Add or change a row; LastUpdated and RowHash move, as in XoD's cache."""
        with self._lock:
            self._put(self.schools[estab], set_name, row)

    def delete(self, estab: str, set_name: str, row_id: str) -> None:
        with self._lock:
            self.schools[estab].sets.get(set_name, {}).pop(str(row_id), None)

    def rows(self, estab: str, set_name: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.schools[estab].sets.get(set_name, {}).values()]

    def authorise(self, estab: str, *, scopes: Iterable[str] | None = None, paused: bool = False) -> str:
        """The school (re-)authorises the app: a new secret (the old one stops working), then the callback."""
        with self._lock:
            school = self.schools[estab]
            school.secret = str(uuid.uuid4())
            if scopes is not None:
                school.scopes = set(scopes)
            school.status = "Paused" if paused else "Authorised"
            self._forget_tokens(estab)
        if self.authorisation_url:
            import requests

            requests.post(self.authorisation_url, data=self.callback_form(estab), timeout=10)
        return school.secret

    def callback_form(self, estab: str) -> dict[str, str]:
        """The form-urlencoded authorisation callback XoD posts to the app (spec §3.1)."""
        school = self.schools[estab]
        return {
            "schoolSecret": school.secret,
            "schoolId": school.estab,
            "schoolEmail": school.email,
            "schoolName": school.name,
            "templateScopes": ",".join(DEFAULT_SCOPES),
            "scopes": ",".join(sorted(school.scopes)),
            "thirdParty": "XporterOnDemand",
            "partnerId": self.relying_party,
        }

    def revoke(self, estab: str) -> None:
        with self._lock:
            self.schools[estab].status = "Revoked"
            if not self.revoked_tokens_keep_working:
                self._forget_tokens(estab)

    def set_scopes(self, estab: str, scopes: Iterable[str]) -> None:
        """The school changes the scopes it grants, keeping its secret (takes effect on the next request)."""
        with self._lock:
            self.schools[estab].scopes = set(scopes)

    def pause(self, estab: str, paused: bool = True) -> None:
        with self._lock:
            self.schools[estab].status = "Paused" if paused else "Authorised"

    def add_fault(self, kind: str, match: str = "", **fields: Any) -> Fault:
        """Make the next matching requests misbehave (see FAULT_KINDS); ``retry_after`` adds that header to an http_* answer."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose one of {', '.join(FAULT_KINDS)}")
        return super().add_fault(kind=kind, match=match, **fields)

    # ------------------------------------------------------------ internals

    def forget_changesets(self) -> None:
        """Forget every changedRows snapshot given out (expired, or lost by XoD): a saved hash is then unknown."""
        self._snapshots.clear()
        self._changesets.clear()
        self._chain.clear()

    def _forget_tokens(self, estab: str) -> None:
        for token in [t for t, issued in self._tokens.items() if issued.estab == estab]:
            del self._tokens[token]

    def _put(self, school: SandboxSchool, set_name: str, row: Mapping[str, Any]) -> None:
        stored = dict(row)
        stored["Id"] = str(stored["Id"])
        stored.pop("RowHash", None)
        stored.pop("LastUpdated", None)
        old = school.sets.setdefault(set_name, {}).get(stored["Id"])
        digest = row_hash(stored)
        if old is not None and old["RowHash"] == digest:
            return
        stored["RowHash"] = digest
        stored["LastUpdated"] = xod_timestamp(self.now())
        school.sets[set_name][stored["Id"]] = stored

    def _build_app(self) -> Flask:
        app = Flask("portal_groupcall.sandbox")
        sandbox = self

        @app.before_request
        def log_and_misbehave():
            g.logged = sandbox.log_request(request)
            if sandbox.on_request:
                sandbox.on_request(request.path)
            if request.path.startswith("/__fake/"):
                return None
            fault = sandbox.take_fault(request.method, request.path)
            if fault is None:
                return None
            return sandbox._fault_response(fault)

        @app.after_request
        def note_status(response: Response) -> Response:
            g.logged.status = response.status_code
            return response

        @app.post("/api/oauth/GetToken")
        @app.post("/idaas/sts/STS/GetToken")
        def get_token():
            return sandbox._get_token()

        @app.get("/api/v1/TokenDetails")
        def token_details():
            issued, error = sandbox._authorise_request(None)
            if error:
                return error
            school = sandbox.schools[issued.estab]
            return _json({
                "Estab": school.estab, "Expires": xod_expires(issued.expires), "Name": "MIS connection portal",
                "RelyingParty": issued.relying_party, "Scopes": sorted(school.scopes), **_envelope(),
            })

        @app.get("/api/v1/School/<estab>/<resource>")
        @app.get("/api/v1/School/<estab>/<resource>/")
        @app.get("/api/v1/School/<estab>/<resource>/<item_id>")
        def school_data(estab: str, resource: str, item_id: str | None = None):
            return sandbox._school_data(estab, resource, item_id)

        @app.get("/__fake/schools")
        def fake_schools():
            return _json({"Schools": [
                {"Estab": s.estab, "SchoolName": s.name, "SchoolEmail": s.email, "Status": s.status,
                 "Scopes": sorted(s.scopes), "TemplateScopes": list(DEFAULT_SCOPES)}
                for s in sandbox.schools.values()
            ]})

        @app.post("/__fake/schools/<estab>/<action>")
        def fake_action(estab: str, action: str):
            if estab not in sandbox.schools:
                return _json({"error": "no such school"}, 404)
            body = request.get_json(silent=True) or {}
            if action == "authorise":
                sandbox.authorise(estab, scopes=body.get("scopes"), paused=bool(body.get("paused")))
            elif action == "revoke":
                sandbox.revoke(estab)
            elif action in ("pause", "unpause"):
                sandbox.pause(estab, action == "pause")
            else:
                return _json({"error": "unknown action"}, 404)
            return _json({"Estab": estab, "Status": sandbox.schools[estab].status})

        @app.post("/__fake/faults")
        def fake_fault():
            body = request.get_json(silent=True) or {}
            try:
                fault = sandbox.add_fault(str(body.get("kind")), str(body.get("path") or ""), times=int(body.get("times", 1)),
                                          skip=int(body.get("skip", 0)), retry_after=body.get("retry_after"))
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)
            return _json({"kind": fault.kind, "times": fault.times})

        @app.post("/__fake/token-lifetime")
        def fake_token_lifetime():
            seconds = (request.get_json(silent=True) or {}).get("seconds")
            sandbox.token_lifetime = timedelta(seconds=float(seconds)) if seconds else timedelta(days=5)
            return _json({"seconds": sandbox.token_lifetime.total_seconds()})

        @app.post("/__fake/clock")
        def fake_clock():
            value = (request.get_json(silent=True) or {}).get("now")
            sandbox.set_clock(datetime.fromisoformat(value) if value else None)
            return _json({"now": sandbox.now().isoformat()})

        return app

    def _fault_response(self, fault: Fault) -> Response | None:
        if fault.kind.startswith("http_"):
            status = int(fault.kind[5:])
            resp = _json({**_envelope(), "Message": "An error has occurred."}, status)
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = fault.retry_after
            elif status == 429:
                resp.headers["Retry-After"] = "0"
            if status == 401:
                resp = _json({**_envelope(DENIED), "Message": DENIED}, 401)
            if status == 403:
                resp = _json(_envelope(SCOPE_DENIED), 403)
            if status == 404:
                resp = _json(_envelope("No HTTP resource was found that matches the request URI."), 404)
            return resp
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return None
        if fault.kind == "drop":
            # The connection breaks mid-answer: fewer bytes than Content-Length promised.
            resp = Response(b'{"Students": [', status=200, mimetype="application/json")
            resp.headers["Content-Length"] = "4096"
            resp.headers["Connection"] = "close"
            return resp
        if fault.kind == "error_in_200":
            return _json(_envelope("Something went wrong"), 200)
        if fault.kind == "scope_error_in_200":
            return _json(_envelope(SCOPE_DENIED), 200)
        if fault.kind == "malformed_json":
            return Response('{"Students": [ {"Id": "1", ', status=200, mimetype="application/json")
        if fault.kind == "revoke":
            estab = request.path.split("/")[4] if request.path.startswith("/api/v1/School/") else None
            for school in self.schools.values():
                if estab in (None, school.estab):
                    self.revoke(school.estab)
            return None
        return None

    def _get_token(self) -> Response:
        body = request.get_json(silent=True)
        if body is None:
            body = request.form.to_dict()
        fields = {str(k).lower(): v for k, v in (body or {}).items()}
        estab, rp, password = str(fields.get("estab") or ""), fields.get("relyingparty"), fields.get("password")
        school = self.schools.get(estab)
        failure = {"token": None, "expires": "0001-01-01T00:00:00", **_envelope(NOT_FOUND)}
        if school is None or rp != self.relying_party or password != school.secret or school.status == "Revoked":
            return _json(failure, 200)
        if school.status == "Paused":
            return _json({**failure, "ExceptionMessage": PAUSED}, 200)
        token = base64.b64encode(secrets.token_bytes(640)).decode()
        expires = self.now() + self.token_lifetime
        with self._lock:
            self._tokens[token] = _Issued(estab, rp, password, expires)
        return _json({"token": token, "expires": xod_expires(expires), **_envelope()})

    def _authorise_request(self, estab: str | None) -> tuple[_Issued | None, Response | None]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        issued = self._tokens.get(token.strip()) if scheme == "Idaas" else None
        denied = _json({**_envelope(DENIED), "Message": DENIED}, self.auth_failure_status)
        if issued is None or issued.expires <= self.now():
            return None, denied
        school = self.schools.get(issued.estab)
        if school is None or (estab is not None and estab != issued.estab) or issued.secret != school.secret:
            return None, denied
        if school.status == "Revoked" and not self.revoked_tokens_keep_working:
            return None, denied
        return issued, None

    def _school_data(self, estab: str, resource: str, item_id: str | None) -> Response:
        issued, error = self._authorise_request(estab)
        if error:
            return error
        school = self.schools[estab]
        spec = ENDPOINTS.get(resource.lower())
        if spec is None:
            return _json(_envelope(f"No endpoint named {resource}"), 404)
        scopes, primary, others = spec
        if school.status == "Paused":
            return _json(_envelope(PAUSED), 200)
        if not school.scopes.intersection(scopes):
            return _json(_envelope(SCOPE_DENIED), self.scope_failure_status)
        params = {k.lower(): v for k, v in request.args.items()}
        options = {o.strip().lower() for o in params.get("options", "").split(",") if o.strip()}
        problem = _required_filters(resource.lower(), params)
        if problem:
            return _json(_envelope(problem), 200)
        with self._lock:
            cached = self._cached_changeset(school, resource.lower(), params)
            if cached is not None:
                body = cached
            else:
                body = {name: self._visible(school, name, resource.lower(), params, options, item_id)
                        for name in (primary, *others)}
                body["meta"] = [{"Id": 1, "MIS": "simsnet", "Version": "4", "DateTime": xod_timestamp(self.now())}]
                if "changedrows" in params:
                    body = self._changeset(school, resource.lower(), params, body, (primary, *others))
            if "page" in params or "pagesize" in params:
                body = self._paginate(body, primary, params)
        return _json(body)

    def _visible(self, school, set_name, resource, params, options, item_id) -> list[dict[str, Any]]:
        """The rows of a set this request may see, with fields of ungranted scopes left out (not nulled)."""
        if set_name == "StudentMembers" and "includestudentmembers" not in options:
            return []
        if set_name == "Leavers" and "includeleavers" not in options:
            return []
        if set_name in ("StaffMembers", "GroupTypes"):
            return []
        if resource == "timetable" and set_name == "Lessons" and "includelessons" not in options:
            return []
        if set_name == "StudentSENTypeHistory" and "SENTypes" not in school.scopes:
            return []
        rows = self._rows(school, set_name, params)
        if item_id is not None:
            rows = [r for r in rows if item_id in (r["Id"], r.get("StudentId"))]
        if set_name == "Staff" and "includeprevious" not in options:
            rows = [r for r in rows if r.get("StaffStatus", "Current") == "Current"]
        since = params.get("updatedsince")
        if since:
            after = _naive(since)
            rows = [r for r in rows if r.get("LastUpdated") and _naive(r["LastUpdated"]) > after]
        rows = _apply_filters(resource, set_name, rows, params)
        gated = FIELD_SCOPES.get(set_name, {})
        out = []
        for row in rows:
            shown = {k: v for k, v in row.items() if k not in gated or school.scopes.intersection(gated[k])}
            if set_name == "Group" and "includesubjects" not in options:
                for key in ("SubjectLocalId", "SubjectCode", "SubjectName"):
                    shown.pop(key, None)
            out.append(shown)
        return out

    def _render(self, school: SandboxSchool) -> dict[str, Any]:
        """The synthetic school's sets in wire format, re-rendered only when the school changed."""
        from portal_groupcall.render import render

        mark = _fingerprint(school.source)
        if school.rendered.get("fingerprint") != mark:
            rendered = render(school.source)
            school.rendered = {"fingerprint": mark, "sets": {k: _stamped(v) for k, v in rendered.sets.items()}, "marks": {}}
            self.id_maps.setdefault(school.estab, {}).update(rendered.id_map)
        return school.rendered

    def _rows(self, school: SandboxSchool, set_name: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        if school.source is None:
            return list(school.sets.get(set_name, {}).values())
        rendered = self._render(school)
        if set_name != "AttendMarks":
            return rendered["sets"].get(set_name, [])
        from portal_groupcall.render import marks_between

        window = (params["datefrom"], params["dateto"])
        if window not in rendered["marks"]:
            start, end = date.fromisoformat(window[0][:10]), date.fromisoformat(window[1][:10])
            rendered["marks"][window] = _stamped(marks_between(school.source, start, end))
        return rendered["marks"][window]

    @staticmethod
    def _changeset_key(school, resource, params) -> tuple:
        return (school.estab, resource, tuple(sorted((k, v) for k, v in params.items() if k not in ("changedrows", "page", "pagesize"))))

    def _cached_changeset(self, school, resource, params) -> dict[str, Any] | None:
        """Pages after the first of a changeset come from the changeset worked out for page 1."""
        if "changedrows" not in params or int(params.get("page") or 1) <= 1:
            return None
        return self._changesets.get((self._changeset_key(school, resource, params), params["changedrows"]))

    def _changeset(self, school, resource, params, body, set_names) -> dict[str, Any]:
        """changedRows: worked out before paging; `*` or an unknown hash gives everything (spec §6.1)."""
        requested = params["changedrows"]
        key = self._changeset_key(school, resource, params)
        previous = self._snapshots.get((key, requested)) if requested != "*" else None
        result = dict(body)
        snapshot: dict[str, dict[str, str]] = {}
        for name in set_names:
            rows = body[name]
            snapshot[name] = {r["Id"]: r.get("RowHash", "") for r in rows}
            if previous is None:
                result[f"{name}_deleted"] = []
                continue
            before = previous.get(name, {})
            result[name] = [r for r in rows if before.get(r["Id"]) != r.get("RowHash", "")]
            result[f"{name}_deleted"] = [{"Id": i} for i in before if i not in snapshot[name]]
        next_hash = uuid.uuid4().hex
        self._snapshots[(key, next_hash)] = snapshot
        # The token before the one asked for ("*" on a chain's second call, as observed); an answer to "*" or to
        # a hash this server does not know is a new start, shaped as the answer to "*" (spec §6.1 [PROPOSAL];
        # restart_echoes_hash: the other possibility, the hash sent echoed back).
        self._chain[(key, next_hash)] = requested if previous is not None else "*"
        echoed = requested if previous is not None or self.restart_echoes_hash else "*"
        result["__changedRows__"] = [{
            "SnapshotDate": xod_expires(self.now()) if previous is not None else None,
            "SnapshotRP": self.relying_party if previous is not None else None,
            "PreviousChangedRows": self._chain.get((key, requested)) if previous is not None else None,
            "RequestedChangedRows": echoed,
            "NextChangedRows": next_hash,
            "NextUrl": f"?changedRows={next_hash}&page=1&pageSize={params.get('pagesize', 25)}",
        }]
        # Answers are never changed after this (paging copies the dict), so the cache shares the rows.
        self._changesets[(key, requested)] = result
        return result

    def _paginate(self, body: dict[str, Any], primary: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Slice the primary set; reproduce the quirk: NextPage points past the end on the last page."""
        size = max(1, min(int(params.get("pagesize") or 25), self.max_page_size))
        number = max(1, int(params.get("page") or 1))
        rows = body[primary]
        count = max(1, -(-len(rows) // size))
        body = dict(body)
        body[primary] = rows[(number - 1) * size : number * size]
        if number > 1:
            # Assumption (spec §5 says unknown): secondary sets come whole with page 1 only.
            body["meta"] = []
            for name, value in body.items():
                if name != primary and not name.startswith("__") and isinstance(value, list) and not name.endswith("_deleted"):
                    body[name] = []
        info = {"PageSize": size, "PageNumber": number, "PageCount": count, "RowCount": len(rows),
                "NextPage": f"?page={number + 1}&pageSize={size}"}
        if number > count and self.past_end == "empty":
            info.pop("NextPage")
        body["__pagination__"] = [info]
        return body


def _naive(value: str) -> datetime:
    text = value.strip().rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{(frac + '000000')[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=None)


def _fingerprint(source: Any) -> tuple:
    stamps = [x.updated_at for coll in (source.pupils, source.staff, source.groups) for x in coll.values()]
    changes = [at for _, at in source._mark_changes.values()]
    return (
        len(source.pupils), len(source.staff), len(source.groups), len(source.results), len(source.exclusions),
        len(source.lessons), len(source.deletions), len(changes), max(stamps, default=None), max(changes, default=None),
    )


def _stamped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn rendered rows into wire rows: LastUpdated from the entity's stamp, RowHash from the content."""
    out = []
    for row in rows:
        wire = {k: v for k, v in row.items() if k != "_updated"}
        wire["RowHash"] = row_hash(wire)
        wire["LastUpdated"] = xod_timestamp(row["_updated"]) if row.get("_updated") else None
        out.append(wire)
    return out


def _required_filters(resource: str, params: Mapping[str, str]) -> str | None:
    if resource == "attendancefordaterange" and not (params.get("datefrom") and params.get("dateto")):
        return "DateFrom and DateTo are required"
    if resource == "assessmentresults" and not any(
        params.get(k) for k in ("students", "groups", "aspects", "resultsets", "templates", "columns", "marksheets")
    ):
        return "At least one of Students, Groups, Aspects, ResultSets, Templates, Columns or Marksheets is required"
    return None


def _apply_filters(resource: str, set_name: str, rows: list[dict[str, Any]], params: Mapping[str, str]) -> list[dict[str, Any]]:
    if resource == "groups" and set_name == "Group" and params.get("type"):
        rows = [r for r in rows if r.get("Type", "").lower() == params["type"].lower()]
    if resource == "attendancefordaterange":
        rows = [r for r in rows if params["datefrom"] <= r["Date"] <= params["dateto"]]
    if resource == "timetable" and set_name == "Lessons":
        start, end = params.get("datefrom"), params.get("dateto")
        if not (start and end):
            today = date.today()
            start, end = (today - timedelta(weeks=1)).isoformat(), (today + timedelta(weeks=2)).isoformat()
        rows = [r for r in rows if start <= r["StartDateTime"][:10] <= end]
    if resource == "assessmentresults":
        if params.get("resultsets"):
            wanted = set(params["resultsets"].split(","))
            rows = [r for r in rows if r.get("ResultSetId") in wanted]
        elif params.get("students"):
            wanted = set(params["students"].split(","))
            rows = [r for r in rows if r.get("StudentId") in wanted]
    return rows


def _envelope(exception_message: str | None = None) -> dict[str, Any]:
    return {"Message": None, "ExceptionType": None, "ExceptionMessage": exception_message, "InnerException": None}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json")


# The demo's Groupcall school: the portal demo's "Demo Village School" (LA 990, DfE 2002).
DEMO_LA, DEMO_ESTABLISHMENTS = "990", ("2002", "2003", "2004")


def demo_secret(estab: str) -> str:
    """The well-known school secret of a demo school (sandbox only; never a real credential)."""
    return f"sandbox-secret-{estab}"


def load_demo_schools(sandbox: GroupcallSandbox, schools: int = 1, pupils: int = 250, days: int = 190,
                      seed: int = 3) -> GroupcallSandbox:
    """Load the schools a standalone sandbox serves: first the portal demo's, then synthetic ones."""
    from portal.sandbox import synthetic

    for n in range(schools):
        number = DEMO_ESTABLISHMENTS[n] if n < len(DEMO_ESTABLISHMENTS) else f"{3000 + n:04d}"
        name = "Demo Village School" if n == 0 else None  # the portal demo's name for estab 9902002
        school = synthetic.generate_school(seed * 1000 + n, pupils=pupils, days=days, la_code=DEMO_LA,
                                           establishment_number=number, name=name)
        sandbox.load_synthetic(school.dfe_number, school, secret=demo_secret(school.dfe_number))
    return sandbox


def serve(*, port: int = 8762, schools: int = 1, pupils: int = 250, days: int = 190, seed: int = 3,
          authorisation_url: str | None = None, echo: Callable[[str], Any] = print) -> None:
    """Serve synthetic schools in the foreground until interrupted (`flask portal sandbox groupcall`)."""
    sandbox = load_demo_schools(GroupcallSandbox(authorisation_url=authorisation_url), schools, pupils, days, seed)
    sandbox.start(port=port)
    banner = [f"Groupcall sandbox at {sandbox.url} (relying party {sandbox.relying_party})"]
    banner += [f"  estab {estab}  secret {school.secret}  {school.name}" for estab, school in sandbox.schools.items()]
    sandbox.serve_until_interrupted(banner, echo)


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m portal_groupcall.sandbox --port P --schools N --pupils M --days D."""
    import argparse

    parser = argparse.ArgumentParser(description="Run a Groupcall Xporter on Demand sandbox with synthetic schools.")
    parser.add_argument("--port", type=int, default=8762)
    parser.add_argument("--schools", type=int, default=1)
    parser.add_argument("--pupils", type=int, default=250)
    parser.add_argument("--days", type=int, default=190)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--authorisation-url", default=None)
    args = parser.parse_args(argv)
    serve(port=args.port, schools=args.schools, pupils=args.pupils, days=args.days, seed=args.seed,
          authorisation_url=args.authorisation_url)


if __name__ == "__main__":
    main()
