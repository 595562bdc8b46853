"""A Wonde sandbox: a real HTTP server speaking the subset of the Wonde API we use, over synthetic schools."""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from time import sleep
from typing import Any
from urllib.parse import urlencode

from werkzeug.http import http_date
from werkzeug.wrappers import Request, Response

from portal.sandbox.server import Fault as BaseFault
from portal.sandbox.server import LoggedRequest, SandboxServer
from portal.sandbox.synthetic import Group, Mark, Pupil, Staff, SyntheticSchool, generate_school, generate_schools

__all__ = ["Fault", "LoggedRequest", "WondeSandbox", "main", "serve"]

DEFAULT_TOKEN = "sandbox-token-0123456789abcdef0123456789ab"
DEFAULT_PAGE_SIZE = 50
# Per the spec the maximum per_page is set per endpoint and undocumented; 200 is what production code uses.
DEFAULT_MAX_PER_PAGE = 200
# The portal demo's Wonde schools (portal/demo.py): URN, LA code, establishment number, phase, name.
DEMO_SCHOOLS = (
    ("990001", "990", "2001", "primary", "Demo Primary School"),
    ("990002", "990", "4001", "secondary", "Demo Academy"),
)
SCHOOL_STATES = ("approved", "pending", "declined", "revoked", "none")
GROUP_TYPES = {"registration": "REGISTRATION", "year": "YEAR", "house": "HOUSE"}
SEN_LABELS = {"N": "No Special Educational Need", "K": "SEN Support", "E": "Education, Health and Care Plan"}


def wonde_datetime(value: datetime | date, zone: str = "UTC") -> dict[str, Any]:
    """Render a datetime (or a date, at midnight) the way Wonde does: a PHP DateTime object."""
    return dict(_wonde_datetime(value, zone))


@functools.lru_cache(maxsize=4096)
def _wonde_datetime(value: datetime | date, zone: str) -> tuple[tuple[str, Any], ...]:
    # Marks share a handful of dates and times; rendering each once keeps the sandbox fast enough to benchmark.
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0))
    elif zone == "UTC" and value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return (("date", value.strftime("%Y-%m-%d %H:%M:%S.000000")), ("timezone_type", 3), ("timezone", zone))


def _parse_filter_datetime(text: str) -> datetime:
    """Parse an updated_after value: "YYYY-MM-DD HH:MM:SS" or "YYYY-MM-DD", taken as UTC."""
    text = text.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError(text)


@dataclass(kw_only=True)
class Fault(BaseFault):
    """A fault on matching requests (see portal.sandbox.server.Fault for ``match``, ``skip``, ``times``).

    ``status`` answers with that HTTP status (``retry_after`` adds the header); ``body`` "invalid_json"
    or "bad_shape" answers 200 with a broken body; ``action`` "revoke" revokes the school's access before
    the request is served; ``delay`` holds the answer back that many seconds (to trip the client's read timeout).
    """

    status: int | None = None
    retry_after: str | None = None
    body: str | None = None
    action: str | None = None
    delay: float | None = None


class WondeSandbox(SandboxServer):
    """Serve synthetic schools over HTTP in Wonde's wire format, with fault injection and a request log.

    Nothing starts until ``start()`` (or ``with WondeSandbox(...) as sandbox``).
    """

    fault_type = Fault
    thread_name = "wonde-sandbox"

    def __init__(
        self,
        schools: Sequence[SyntheticSchool] | None = None,
        *,
        school_count: int = 1,
        pupils: int = 60,
        days: int = 10,
        seed: int = 1,
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        max_per_page: int | Mapping[str, int] = DEFAULT_MAX_PER_PAGE,
        state: str = "approved",
        dob_as_string: bool = False,
        pagination_always: bool = False,
        clock: Callable[[], datetime] | None = None,
        webhook_url: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.school_list = list(schools) if schools is not None else generate_schools(school_count, seed, pupils=pupils, days=days)
        self.token = token
        self.max_per_page = max_per_page
        self.dob_as_string = dob_as_string
        self.pagination_always = pagination_always
        self.clock = clock or (lambda: datetime.now(timezone.utc).replace(microsecond=0))
        self._ids: dict[tuple[int, str], str] = {}
        self._keys: dict[str, str] = {}
        self.schools: dict[str, SyntheticSchool] = {}
        self.states: dict[str, str] = {}
        self.access_requests: dict[str, list[dict[str, Any]]] = {}
        for school in self.school_list:
            sid = self._id(school.seed, "school")
            self.schools[sid] = school
            self.states[sid] = state
        # Where schoolApproved / accessRevoked / accessDeclined events are POSTed (Wonde's flat payloads).
        self.webhook_url = webhook_url
        self.webhooks_sent: list[dict[str, Any]] = []
        self._outbox: list[dict[str, Any]] = []
        # Per school: permissions (resource names, e.g. "exclusions") the school has not approved. Wonde
        # answers 403 for them while the school stays approved, and lists them as not approved in
        # /meta/schools/{id}/permissions (spec §5.3, §16).
        self.withheld: dict[str, set[str]] = {sid: set() for sid in self.schools}
        # Per school: extended_details keys (field permissions) the school has not approved: left out.
        self.withheld_fields: dict[str, set[str]] = {sid: set() for sid in self.schools}
        # Resources this server does not have at all (404), e.g. "students-leaver".
        self.missing: set[str] = set()
        # Per school: a region object replacing the UK one (e.g. {"code": "AUS", "domain": "api-ap-southeast-2.wonde.com"}).
        self.regions: dict[str, dict[str, Any]] = {}
        # Whether /meta/schools/{id}/permissions exists here (the spec marks it [SPEC] only).
        self.permissions_endpoint = True
        # Includes this server does not expand (it sends the bare id), e.g. {"attendance_code"}: a
        # Wonde-compatible server may not implement every include the connector asks for.
        self.unexpanded: set[str] = set()
        # When True, answers' Date header is the sandbox's clock (a provider whose clock differs from ours).
        self.date_from_clock = False
        # Includes whose request this server refuses whole (403) instead of leaving the fields out: the spec's
        # "403 per object" for data the school withheld is unconfirmed (§16), so both are served.
        self.refused_includes: set[str] = set()

    def wsgi_app(self) -> Callable:
        return self.wsgi

    def date_header(self) -> str | None:
        """The answers' Date header when ``date_from_clock`` is set (None: the real time)."""
        return http_date(self.clock()) if self.date_from_clock else None

    @property
    def url(self) -> str:
        """The base URL to configure the connector with (``.../v1.0``)."""
        return f"{self.origin}/v1.0"

    @property
    def settings(self) -> dict[str, Any]:
        """Connector settings that point the Wonde connector at this sandbox."""
        return {"base_url": self.url, "token": self.token, "allow_insecure_http": True}

    # -- ids

    def _id(self, seed: int, key: str) -> str:
        cached = self._ids.get((seed, key))
        if cached is None:
            digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
            cached = self._ids[(seed, key)] = "A" + str(1_000_000_000 + int.from_bytes(digest, "big") % 9_000_000_000)
            self._keys[cached] = key
        return cached

    @staticmethod
    def _mark_id(school: SyntheticSchool, position: int) -> str:
        # Not cached: a large school has about a million marks.
        digest = hashlib.blake2b(f"{school.seed}:M{position}".encode(), digest_size=8).digest()
        return "A" + str(1_000_000_000 + int.from_bytes(digest, "big") % 9_000_000_000)

    def wonde_id(self, school: SyntheticSchool, key: str) -> str:
        """Return the Wonde id the sandbox gives a synthetic entity (key "school" for the school itself)."""
        return self._id(school.seed, key)

    def synthetic_key(self, wonde_id: str) -> str | None:
        """Return the synthetic key behind a Wonde id the sandbox handed out (None if unknown)."""
        return self._keys.get(wonde_id)

    def school_id(self, school: SyntheticSchool | int = 0) -> str:
        """Return the Wonde id of a school (or of the n-th school)."""
        if isinstance(school, int):
            school = self.school_list[school]
        return self._id(school.seed, "school")

    # -- control from tests (faults and the request log: SandboxServer's add_fault, requests, count, clear_*)

    def set_state(self, school_id: str, state: str) -> None:
        """Move a school to approved, pending, declined, revoked or none (sending the matching webhook)."""
        if state not in SCHOOL_STATES:
            raise ValueError(f"unknown state {state!r}")
        with self._lock:
            self._change_state(school_id, state)
        self._send_webhooks()

    def _change_state(self, school_id: str, state: str) -> None:
        previous, self.states[school_id] = self.states.get(school_id), state
        event = {"approved": "schoolApproved", "revoked": "accessRevoked", "declined": "accessDeclined"}.get(state)
        if event and previous != state and self.webhook_url:
            school = self.schools[school_id]
            payload = {"payload_type": event, "school_id": school_id, "school_name": school.name,
                       "school_la_code": school.la_code, "school_urn": school.urn,
                       "school_establishment_number": school.establishment_number}
            if event == "schoolApproved":
                payload["school_token"] = self.token
            elif event == "accessRevoked":
                payload["revoke_reason"] = "Revoked in the sandbox"
            else:
                payload["decline_reason"] = "Declined in the sandbox"
            self._outbox.append(payload)

    def _send_webhooks(self) -> None:
        """POST queued events outside the lock: the receiver may call the sandbox back to confirm."""
        with self._lock:
            outbox, self._outbox = self._outbox, []
        for payload in outbox:
            import requests

            try:
                answer = requests.post(self.webhook_url, json=payload, timeout=(2, 10))
                status = answer.status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            self.webhooks_sent.append({"payload": payload, "status": status})

    def withhold(self, school_id: str, *resources: str) -> None:
        """The school stops approving these permissions (resources); it stays approved for the rest."""
        with self._lock:
            self.withheld[school_id].update(resources)

    def grant(self, school_id: str, *resources: str) -> None:
        """The school approves these permissions again."""
        with self._lock:
            self.withheld[school_id].difference_update(resources)

    def withhold_fields(self, school_id: str, *keys: str) -> None:
        """The school stops approving these student fields (extended_details or education_details keys)."""
        with self._lock:
            self.withheld_fields[school_id].update(keys)

    def stamp_drop(self, school: SyntheticSchool | int = 0, at: datetime | None = None) -> int:
        """Stamp every assessment result of a school with one ``updated_at`` (default: the clock's now).

        As a provider does that imports an assessment data drop in one go (issue 19): the newest stamp
        of the category is then shared by the whole drop. Returns how many results were stamped.
        """
        if isinstance(school, int):
            school = self.school_list[school]
        with self._lock:
            at = at or self.clock()
            for result in school.results.values():
                result.updated_at = at
            return len(school.results)

    def mutate(self, school: SyntheticSchool | int = 0, **changes: Any) -> dict[str, list[str]]:
        """Change a school's data as an MIS would between runs (see SyntheticSchool.mutate), stamped now."""
        if isinstance(school, int):
            school = self.school_list[school]
        with self._lock:
            return school.mutate(self.clock(), **changes)

    # -- WSGI

    def wsgi(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        entry = self.log_request(request)
        fired = self.take_fault(request.method, request.path) if request.path.startswith("/v1.0") else None
        if fired is not None and fired.delay:
            sleep(fired.delay)  # outside the lock: other requests carry on
        with self._lock:
            try:
                response = self._dispatch(request, fired)
            except _Answer as answer:
                response = answer.response
        entry.status = response.status_code
        if self._outbox:
            self._send_webhooks()
        return response(environ, start_response)

    def _dispatch(self, request: Request, fault: Fault | None = None) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["__sandbox"]:
            return self._admin(request, parts[1:])
        if parts[:1] != ["v1.0"]:
            raise _Answer(_error(404, "not_found", "No such endpoint."))
        if fault is not None:
            answer = self._fault(fault, parts)
            if answer is not None:
                return answer
        self._authenticate(request)
        parts = parts[1:]
        if not parts:
            return _json({"data": {"message": "Wonde sandbox", "version": "v1.0"}})
        if parts[0] == "meta" and len(parts) == 3 and parts[1] == "schools":
            self._school(parts[2])  # 404 for an unknown school
            state = self.states[parts[2]]
            return _json({"data": {"online": True, "approved": state == "approved", "audited": state == "approved",
                                   "custom_attendance_codes": False}})
        if parts[0] == "meta" and len(parts) == 4 and parts[1] == "schools" and parts[3] == "permissions":
            self._school(parts[2])
            if not self.permissions_endpoint:
                raise _Answer(_error(404, "not_found", "No such endpoint."))
            return _json({"data": self._permissions(parts[2])})
        if parts[0] != "schools":
            raise _Answer(_error(404, "not_found", "No such endpoint."))
        if len(parts) == 1 or parts[1] in ("pending", "audited", "declined", "revoked", "all", "offline"):
            return self._school_list(request, parts[1] if len(parts) > 1 else "approved")
        school_id = parts[1]
        school = self._school(school_id)
        if len(parts) == 2:
            if self.states[school_id] not in ("approved", "pending"):
                raise _Answer(_error(403, "forbidden", "Your application does not have access to this school."))
            return _json({"data": self._render_school(school_id, school, request)})
        resource = "/".join(parts[2:])
        if resource == "request-access" and request.method == "POST":
            return self._request_access(request, school_id)
        if resource == "revoke-access" and request.method == "DELETE":
            self.states[school_id] = "revoked"  # the application withdrew: Wonde sends no webhook for that
            return _json({"success": True, "state": "revoked", "message": "Access revoked"})
        if self.states[school_id] != "approved":
            raise _Answer(_error(403, "forbidden", "Your application does not have access to this school."))
        handler = RESOURCES.get(resource)
        if handler is None or request.method != "GET" or resource in self.missing:
            raise _Answer(_error(404, "not_found", "No such endpoint."))
        if _permission_of(resource) in self.withheld.get(school_id, ()) or self.refused_includes & _includes(request):
            raise _Answer(_error(403, "forbidden", "Your application does not have permission to read this object."))
        response = handler(self, request, school, resource)
        hidden = self.withheld_fields.get(school_id)
        if hidden and resource in ("students", "students-leaver"):
            response = _without_fields(response, hidden)
        return response

    def _permissions(self, school_id: str) -> list[dict[str, Any]]:
        """The permission list: one read permission per resource, approved unless the school withheld it."""
        approved_state = self.states[school_id] == "approved"
        out = []
        for name in sorted({_permission_of(r) for r in RESOURCES}):
            granted = approved_state and name not in self.withheld[school_id]
            out.append({"identity": f"{name}.read", "name": name.replace("-", " ").capitalize(), "description": "",
                        "parent": None, "group": name, "active_from": wonde_datetime(datetime(2024, 1, 1)),
                        "optional": name not in ("students", "employees"), "approved": granted, "audited": granted})
        return out

    def _fault(self, fault: Fault, parts: list[str]) -> Response | None:
        if fault.action == "revoke":
            school_id = parts[2] if len(parts) > 2 and parts[1] == "schools" else None
            if school_id in self.states:
                self._change_state(school_id, "revoked")
            return None
        if fault.body == "invalid_json":
            return Response('{"data": [{"id": "A1", ', status=200, content_type="application/json")
        if fault.body == "bad_shape":
            return _json({"items": []})
        if fault.status:
            response = _error(fault.status, "sandbox_fault", "Injected by the sandbox.")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        return None

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        token = None
        if scheme.lower() == "bearer":
            token = value.strip()
        elif scheme.lower() == "basic":
            import base64

            try:
                token = base64.b64decode(value.strip()).decode().partition(":")[0]
            except ValueError:
                token = None
        if token != self.token:
            raise _Answer(_error(401, "unauthenticated", "A valid access token is required."))

    def _school(self, school_id: str) -> SyntheticSchool:
        school = self.schools.get(school_id)
        if school is None:
            raise _Answer(_error(404, "not_found", "No such school."))
        return school

    def _request_access(self, request: Request, school_id: str) -> Response:
        body = request.get_json(silent=True) or {}
        self.access_requests.setdefault(school_id, []).append(body)
        if self.states[school_id] == "approved":
            return _json({"success": True, "state": "approved", "message": "Access already approved"})
        self.states[school_id] = "pending"
        return _json({"success": True, "state": "pending", "message": "Access requested"})

    def _admin(self, request: Request, parts: list[str]) -> Response:
        """Control endpoints for people driving the sandbox over HTTP (no auth: it binds to loopback)."""
        body = request.get_json(silent=True) or {}
        if parts == ["faults"] and request.method == "POST":
            self.add_fault(**{k: v for k, v in body.items() if k in Fault.__dataclass_fields__})
            return _json({"ok": True})
        if parts == ["faults"] and request.method == "DELETE":
            self.clear_faults()
            return _json({"ok": True})
        if parts == ["requests"]:
            return _json({"data": [{"method": r.method, "path": r.path, "query": r.query, "status": r.status}
                                   for r in self.log]})
        if parts == ["schools"]:
            return _json({"data": [{"id": sid, "urn": s.urn, "dfe_number": s.dfe_number, "name": s.name,
                                    "state": self.states[sid]} for sid, s in self.schools.items()]})
        if len(parts) == 3 and parts[0] == "schools" and parts[1] in self.schools:
            action = parts[2]
            if action in ("approve", "revoke", "decline", "reset"):
                self._change_state(parts[1], {"approve": "approved", "revoke": "revoked", "decline": "declined",
                                              "reset": "none"}[action])
                return _json({"ok": True, "state": self.states[parts[1]]})
            if action == "mutate":
                school = self.schools[parts[1]]
                changes = school.mutate(self.clock(), **{k: int(v) for k, v in body.items()})
                return _json({"ok": True, "changed": {k: len(v) for k, v in changes.items()}})
        raise _Answer(_error(404, "not_found", "No such sandbox control."))

    # -- schools

    def _render_school(self, school_id: str, school: SyntheticSchool, request: Request) -> dict[str, Any]:
        domain = request.host
        return {
            "id": school_id,
            "name": school.name,
            "establishment_number": school.establishment_number,
            "urn": int(school.urn),
            "phase_of_education": school.phase.upper(),
            "la_code": school.la_code,
            "timezone": "Europe/London",
            "mis": school.mis,
            "address": {"address_line_1": "1 Example Street", "address_line_2": None, "address_town": "Exampletown",
                        "address_postcode": "EX1 1AA", "address_country": {"code": "GBR", "name": "United Kingdom"}},
            "extended": {"allows_writeback": False, "has_timetables": True, "has_lesson_attendance": False},
            "region": {"code": "GBR", "domain": domain, "school_url": f"{request.host_url}v1.0/schools/{school_id}",
                       "identifiers": {"la_code": school.la_code, "establishment_number": school.establishment_number,
                                       "urn": int(school.urn)}, **self.regions.get(school_id, {})},
        }

    def _school_list(self, request: Request, state: str) -> Response:
        wanted = {"approved": ("approved",), "audited": ("approved",), "offline": ()}.get(state, (state,))
        rows = []
        for sid, school in self.schools.items():
            if state != "all" and self.states[sid] not in wanted:
                continue
            if request.args.get("urn") and request.args["urn"] != school.urn:
                continue
            if request.args.get("la_code") and request.args["la_code"] != school.la_code:
                continue
            if request.args.get("establishment_number") and request.args["establishment_number"] != school.establishment_number:
                continue
            rows.append(self._render_school(sid, school, request))
        return self._page(request, "schools", rows, lambda row: row)

    # -- paging

    def _cap(self, resource: str) -> int:
        if isinstance(self.max_per_page, Mapping):
            return int(self.max_per_page.get(resource, self.max_per_page.get("*", DEFAULT_MAX_PER_PAGE)))
        return int(self.max_per_page)

    def _per_page(self, request: Request, resource: str) -> int:
        try:
            asked = int(request.args.get("per_page", DEFAULT_PAGE_SIZE))
        except ValueError:
            asked = DEFAULT_PAGE_SIZE
        return max(1, min(asked, self._cap(resource)))

    def _page(self, request: Request, resource: str, rows: Sequence[Any], render: Callable[[Any], dict[str, Any]],
              includes: Sequence[str] = ()) -> Response:
        per_page = self._per_page(request, resource)
        try:
            page = max(1, int(request.args.get("page", 1)))
        except ValueError:
            page = 1
        start = (page - 1) * per_page
        data = [render(row) for row in rows[start : start + per_page]]
        more = start + per_page < len(rows)
        meta: dict[str, Any] = {}
        # Documented: with 50 rows or fewer and no per_page, Wonde sends no pagination object.
        if self.pagination_always or "per_page" in request.args or len(rows) > DEFAULT_PAGE_SIZE:
            meta["pagination"] = {
                "next": _link(request, page=page + 1) if more else None,
                "previous": _link(request, page=page - 1) if page > 1 else None,
                "more": more,
                "per_page": per_page,
                "current_page": page,
            }
        if includes:
            meta["includes"] = list(includes)
        return _json({"data": data, "meta": meta} if meta else {"data": data})


def _permission_of(resource: str) -> str:
    """The permission a resource needs: its first path segment ("attendance/session" -> "attendance")."""
    return resource.split("/", 1)[0]


def _without_fields(response: Response, hidden: set[str]) -> Response:
    """Leave withheld keys out of each student's includes (not null: left out, as Wonde does)."""
    body = json.loads(response.get_data())
    for row in body.get("data") or []:
        for include in ("extended_details", "education_details"):
            data = (row.get(include) or {}).get("data")
            if isinstance(data, dict):
                for key in hidden & set(data):
                    del data[key]
        for key in hidden & {"date_of_birth", "gender"}:
            row.pop(key, None)
    return _json(body, response.status_code)


class _Answer(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, content_type="application/json")


def _error(status: int, code: str, text: str) -> Response:
    return _json({"error": code, "error_description": text}, status)


def _link(request: Request, **changes: Any) -> str:
    args = {k: request.args.getlist(k) for k in request.args}
    for key, value in changes.items():
        args[key] = [str(value)]
    return f"{request.base_url}?{urlencode(args, doseq=True)}"


def _includes(request: Request) -> set[str]:
    return {part.strip() for part in request.args.get("include", "").split(",") if part.strip()}


def _since(request: Request) -> datetime | None:
    value = request.args.get("updated_after")
    if not value:
        return None
    try:
        return _parse_filter_datetime(value)
    except ValueError:
        raise _Answer(_error(422, "invalid_filter", "updated_after must be a date or date-time.")) from None


def _changed(rows: Iterable[Any], since: datetime | None) -> list[Any]:
    return [row for row in rows if since is None or row.updated_at > since]


def _bool_text(value: bool) -> str:
    return "Y" if value else "N"


# ---------------------------------------------------------------- resources


def _student(sb: WondeSandbox, school: SyntheticSchool, pupil: Pupil, includes: set[str]) -> dict[str, Any]:
    wid = sb.wonde_id
    data: dict[str, Any] = {
        "id": wid(school, pupil.key),
        "upi": hashlib.md5(f"{school.seed}:{pupil.mis_id}".encode(), usedforsecurity=False).hexdigest(),
        "mis_id": pupil.mis_id,
        "initials": pupil.preferred_forename[0] + pupil.preferred_surname[0],
        "title": None,
        "surname": pupil.preferred_surname,
        "forename": pupil.preferred_forename,
        "middle_names": None,
        "legal_surname": pupil.legal_surname,
        "legal_forename": pupil.legal_forename,
        "gender": "FEMALE" if pupil.gender == "F" else "MALE",
        "gender_identity": None,
        "date_of_birth": pupil.date_of_birth.isoformat() if sb.dob_as_string
        else wonde_datetime(pupil.date_of_birth, "Europe/London"),
        "restored_at": wonde_datetime(pupil.restored_at) if pupil.restored_at else None,
        "created_at": wonde_datetime(pupil.created_at),
        "updated_at": wonde_datetime(pupil.updated_at),
    }
    if "education_details" in includes:
        data["education_details"] = {"data": {
            "admission_number": f"{int(pupil.mis_id):06d}", "upn": pupil.upn, "local_upn": None, "former_upn": None,
            "learner_number": None, "current_nc_year": pupil.year_group, "part_time": False, "part_time_rate": None,
            "admission_date": pupil.admission_date.isoformat(),
            "leaving_date": pupil.leaving_date.isoformat() if pupil.leaving_date else None,
        }}
    if "registration" in includes:
        group = school.groups.get(pupil.registration_group)
        data["registration"] = {"data": _group(sb, school, group, set()) if group else None}
    if "year" in includes:
        group = school.groups.get(f"G-Y{pupil.year_group}")
        data["year"] = {"data": _group(sb, school, group, set()) if group else None}
    if "extended_details" in includes:
        data["extended_details"] = {"data": {
            "free_school_meals": pupil.fsm,
            "free_school_meals_6": pupil.fsm_ever6,
            "premium_pupil_indicator": pupil.pupil_premium,
            "premium_pupil_notes": "Free-text note held in the MIS",
            "sen_status": SEN_LABELS[pupil.sen_status],
            "first_language": pupil.first_language,
            "home_language": pupil.first_language,
            "english_as_additional_language": pupil.eal,
            "english_as_additional_language_status": "EAL" if pupil.eal else "Not EAL",
            "ethnicity": pupil.ethnicity,
            "in_lea_care": pupil.looked_after,
            "ever_in_care": pupil.ever_in_care,
            "service_children_indicator": _bool_text(pupil.service_child),
            "religion": "Not recorded",
            "dietary_needs": None,
            "enrolment_status": "C",
            "gifted_and_talented_status": None,
        }}
    if "sen_needs" in includes:
        needs = [] if pupil.sen_need is None else [
            {"id": wid(school, f"SN-{pupil.key}"), "type": pupil.sen_need, "description": "Primary need", "rank": 1}]
        data["sen_needs"] = {"data": needs}
    return data


def _students(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    includes = _includes(request)
    since = _since(request)
    pool = school.leavers() if resource == "students-leaver" else school.on_roll()
    rows = _changed(pool, since)
    return sb._page(request, resource, rows, lambda p: _student(sb, school, p, includes), sorted(includes))


def _employee(sb: WondeSandbox, school: SyntheticSchool, member: Staff, includes: set[str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": sb.wonde_id(school, member.key),
        "upi": hashlib.md5(f"{school.seed}:E{member.mis_id}".encode(), usedforsecurity=False).hexdigest(),
        "mis_id": member.mis_id,
        "title": member.title,
        "initials": member.forename[0] + member.surname[0],
        "surname": member.surname,
        "forename": member.forename,
        "middle_names": None,
        "legal_surname": member.surname,
        "legal_forename": member.forename,
        "gender": "female" if member.gender == "F" else "male",
        "date_of_birth": wonde_datetime(member.date_of_birth, "Europe/London"),
        "restored_at": None,
        "created_at": wonde_datetime(member.created_at),
        "updated_at": wonde_datetime(member.updated_at),
    }
    if "employment_details" in includes:
        data["employment_details"] = {"data": {
            "current": member.currently_employed, "teaching_staff": member.teaching,
            "employment_start_date": wonde_datetime(member.employment_start), "employment_end_date": None,
            "role_text": member.roles[0],
        }}
    if "contact_details" in includes:
        data["contact_details"] = {"data": {
            "salutation": f"{member.title} {member.surname}",
            "emails": {"email": member.email, "primary": member.email, "home": None, "work": member.email},
            "phones": {"phone": None, "primary": "01632 960000", "home": None, "work": "01632 960000", "mobile": None},
            "addresses": {"home": {"house_number": "2", "house_name": None, "street": "Example Road",
                                   "town": "Exampletown", "county": None, "postcode": "EX2 2BB"},
                          "work": None, "postal": None},
        }}
    if "extended_details" in includes:
        data["extended_details"] = {"data": {"ethnicity": member.ethnicity, "religion": member.religion,
                                             "disability": "Not recorded", "nationality": "British"}}
    if "roles" in includes:
        data["roles"] = {"data": [{"id": sb.wonde_id(school, f"ROLE-{role}"), "name": role} for role in member.roles]}
    return data


def _employees(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    includes = _includes(request)
    rows = _changed(school.staff.values(), _since(request))
    return sb._page(request, resource, rows, lambda m: _employee(sb, school, m, includes), sorted(includes))


def _subject(sb: WondeSandbox, school: SyntheticSchool, subject: Any) -> dict[str, Any]:
    return {"id": sb.wonde_id(school, subject.key), "mis_id": subject.key, "code": subject.code, "name": subject.name,
            "active": True, "created_at": wonde_datetime(subject.created_at), "updated_at": wonde_datetime(subject.updated_at)}


def _subjects(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    rows = _changed(school.subjects.values(), _since(request))
    return sb._page(request, resource, rows, lambda s: _subject(sb, school, s))


def _group(sb: WondeSandbox, school: SyntheticSchool, group: Group, includes: set[str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": sb.wonde_id(school, group.key),
        "mis_id": group.key,
        "name": group.name,
        "code": group.name,
        "description": group.name,
        "created_at": wonde_datetime(group.created_at),
        "updated_at": wonde_datetime(group.updated_at),
        "restored_at": wonde_datetime(group.restored_at) if group.restored_at else None,
    }
    if group.group_type == "class":
        subject = school.subjects.get(group.subject_key)
        data["alternative"] = False
        data["year_group"] = group.year_group
        if "subject" in includes:
            data["subject"] = {"data": _subject(sb, school, subject) if subject else None}
        else:
            data["subject"] = sb.wonde_id(school, subject.key) if subject else None
    else:
        data["type"] = GROUP_TYPES.get(group.group_type, "MISC")
        data["notes"] = "Free-text note held in the MIS"
    if "students" in includes:
        data["students"] = {"data": [_student(sb, school, school.pupils[k], set()) for k in group.members
                                     if k in school.pupils]}
    if "employees" in includes:
        staff = school.staff.get(group.staff_key) if group.staff_key else None
        data["employees"] = {"data": [_employee(sb, school, staff, set())] if staff else []}
    return data


def _groups(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    includes = _includes(request)
    wanted_class = resource == "classes"
    type_filter = request.args.get("type")
    rows = [g for g in school.groups.values() if (g.group_type == "class") == wanted_class
            and (not type_filter or GROUP_TYPES.get(g.group_type) in type_filter.split(","))]
    rows = _changed(rows, _since(request))
    return sb._page(request, resource, rows, lambda g: _group(sb, school, g, includes), sorted(includes))


def _lessons(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    includes = _includes(request)
    rows = _changed(school.lessons.values(), _since(request))
    after, before = request.args.get("lessons_start_after"), request.args.get("lessons_start_before")
    if after:
        rows = [r for r in rows if r.lesson_date.isoformat() >= after[:10]]
    if before:
        rows = [r for r in rows if r.lesson_date.isoformat() <= before[:10]]
    days = ("monday", "tuesday", "wednesday", "thursday", "friday")

    def render(lesson: Any) -> dict[str, Any]:
        period_id = sb.wonde_id(school, f"PER-{lesson.day_of_week}-{lesson.period_name}")
        group = school.groups[lesson.group_key]
        start = datetime.combine(lesson.lesson_date, time.fromisoformat(lesson.starts_at))
        end = datetime.combine(lesson.lesson_date, time.fromisoformat(lesson.ends_at))
        data: dict[str, Any] = {
            "id": sb.wonde_id(school, lesson.key),
            "room": sb.wonde_id(school, f"ROOM-{lesson.room}"),
            "period": period_id,
            "period_id": period_id,
            "class_id": sb.wonde_id(school, group.key),
            "employee_id": sb.wonde_id(school, lesson.staff_key) if lesson.staff_key else None,
            "period_instance_id": int(lesson.key[1:]),
            "alternative": False,
            "start_at": wonde_datetime(start, "Europe/London"),
            "end_at": wonde_datetime(end, "Europe/London"),
            "created_at": wonde_datetime(lesson.created_at),
            "updated_at": wonde_datetime(lesson.updated_at),
        }
        if "period" in includes:
            data["period"] = {"data": {"id": period_id, "name": lesson.period_name, "day": days[lesson.day_of_week - 1],
                                       "start_time": lesson.starts_at + ":00", "end_time": lesson.ends_at + ":00"}}
        if "class" in includes:
            data["class"] = {"data": _group(sb, school, group, set())}
        if "employee" in includes:
            staff = school.staff.get(lesson.staff_key) if lesson.staff_key else None
            data["employee"] = {"data": _employee(sb, school, staff, set()) if staff else None}
        return data

    return sb._page(request, resource, rows, render, sorted(includes))


def _code(sb: WondeSandbox, school: SyntheticSchool, code: str) -> dict[str, Any]:
    description, meaning = school.attendance_codes()[code]
    return {"id": sb.wonde_id(school, f"AC-{code}"), "code": code, "description": description, "type": meaning.upper()}


def _attendance_codes(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    rows = list(school.attendance_codes())
    return sb._page(request, resource, rows, lambda c: _code(sb, school, c))


def _attendance(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    """Session marks, paged by an opaque cursor over the school's mark positions (too many for offsets)."""
    includes = _includes(request)
    since = _since(request)
    per_page = sb._per_page(request, resource)
    page = int(request.args.get("page", 1))
    start_position = school.first_position_updated_after(since) if since else 0
    # With updated_after: first the marks edited after their register day, then every later register.
    edited = [m for m in school.edited_marks() if m.updated_at > since and m.position < start_position] if since else []
    cursor = request.args.get("cursor") or ("e0" if edited else f"p{start_position}")
    marks: list[Mark] = []
    kind, index = cursor[0], int(cursor[1:])
    if kind == "e":
        marks = edited[index : index + per_page]
        index += len(marks)
        if index >= len(edited):
            kind, index = "p", start_position
    end = school.mark_positions
    while kind == "p" and len(marks) < per_page and index < end:
        mark = school.mark_at(index)
        index += 1
        if mark is not None and (since is None or mark.updated_at > since):
            marks.append(mark)
    more = index < end if kind == "p" else True
    # The biggest list by far: rendered straight to JSON text from cached fragments, to keep the sandbox quick.
    with_code = "attendance_code" in includes and "attendance_code" not in sb.unexpanded
    code_json = {code: json.dumps({"data": _code(sb, school, code)} if with_code else sb.wonde_id(school, f"AC-{code}"),
                                  separators=(",", ":")) for code in school.attendance_codes()}
    rows = [
        '{"id":"%s","student":"%s","date":%s,"session":"%s","attendance_code":%s,"comment":null,'
        '"minutes_late":%s,"employee":null,"created_at":%s,"updated_at":%s}' % (
            sb._mark_id(school, mark.position), sb.wonde_id(school, mark.pupil_key),
            _datetime_json(mark.session_date, "Europe/London"), mark.session, code_json[mark.code],
            "10" if mark.code == "L" else "null", _datetime_json(mark.updated_at, "UTC"),
            _datetime_json(mark.updated_at, "UTC"))
        for mark in marks
    ]
    meta = {"pagination": {
        "next": _link(request, cursor=f"{kind}{index}", page=page + 1) if more else None,
        "previous": None, "more": more, "per_page": per_page, "current_page": page,
    }}
    if includes:
        meta["includes"] = sorted(includes)
    body = '{"data":[' + ",".join(rows) + '],"meta":' + json.dumps(meta, separators=(",", ":")) + "}"
    return Response(body, status=200, content_type="application/json")


@functools.lru_cache(maxsize=4096)
def _datetime_json(value: datetime | date, zone: str) -> str:
    return json.dumps(wonde_datetime(value, zone), separators=(",", ":"))


def _exclusions(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    rows = _changed(school.exclusions.values(), _since(request))

    def render(ex: Any) -> dict[str, Any]:
        return {
            "id": sb.wonde_id(school, ex.key),
            "student": sb.wonde_id(school, ex.pupil_key),
            "type": "PERMANENT" if ex.exclusion_type == "permanent" else "FIXED",
            "reason": ex.reason,
            "start_date": wonde_datetime(ex.start_date, "Europe/London"),
            "end_date": wonde_datetime(ex.end_date, "Europe/London"),
            "start_session": "AM",
            "end_session": "PM",
            "sessions": ex.sessions,
            "comments": ex.comment,
            "created_at": wonde_datetime(ex.created_at),
            "updated_at": wonde_datetime(ex.updated_at),
        }

    return sb._page(request, resource, rows, render)


def _results(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    includes = _includes(request)
    rows = _changed(school.results.values(), _since(request))

    def render(result: Any) -> dict[str, Any]:
        aspect_id = sb.wonde_id(school, f"ASP-{result.aspect}")
        template_id = sb.wonde_id(school, f"TPL-{result.template}")
        resultset_id = sb.wonde_id(school, f"RS-{result.template}-{result.result_date.year}")
        data: dict[str, Any] = {
            "id": sb.wonde_id(school, result.key),
            "student": sb.wonde_id(school, result.pupil_key),
            "aspect": aspect_id,
            "resultset": resultset_id,
            "template": template_id,
            "result": result.result,
            "date": wonde_datetime(result.result_date, "Europe/London"),
            "created_at": wonde_datetime(result.created_at),
            "updated_at": wonde_datetime(result.updated_at),
        }
        if "aspect" in includes:
            data["aspect"] = {"data": {"id": aspect_id, "mis_id": result.aspect, "name": result.aspect,
                                       "key_stage": result.stage, "type": "GRADE"}}
        if "template" in includes:
            data["template"] = {"data": {"id": template_id, "name": result.template, "statutory": result.statutory}}
        if "resultset" in includes:
            data["resultset"] = {"data": {"id": resultset_id, "name": f"{result.template} {result.result_date.year}"}}
        return data

    return sb._page(request, resource, rows, render, sorted(includes))


DELETION_TYPES = {"pupil": "student", "staff": "employee", "group": "group", "subject": "subject"}


def _deletion_type(d: Any) -> str:
    """The Wonde deletion type of a synthetic deletion: a class has its own ("class"), other groups are "group"."""
    if d.kind == "group" and d.group_type == "class":
        return "class"
    return DELETION_TYPES.get(d.kind, d.kind)


def _deletions(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    since = _since(request)
    wanted = request.args.get("type")
    # An entry counts as updated when it was deleted and again when it was restored.
    rows = [d for d in school.deletions
            if (since is None or d.deleted_at > since or (d.restored_at is not None and d.restored_at > since))
            and (not wanted or _deletion_type(d) in wanted.split(","))]

    def render(d: Any) -> dict[str, Any]:
        return {"type": _deletion_type(d), "id": sb.wonde_id(school, d.key), "mis_id": d.mis_id,
                "deleted_at": wonde_datetime(d.deleted_at),
                "restored_at": wonde_datetime(d.restored_at) if d.restored_at else None}

    return sb._page(request, resource, rows, render)


def _counts(sb: WondeSandbox, request: Request, school: SyntheticSchool, resource: str) -> Response:
    counts = {"students": len(school.on_roll()), "employees": len(school.staff),
              "classes": sum(1 for g in school.groups.values() if g.group_type == "class"),
              "groups": sum(1 for g in school.groups.values() if g.group_type != "class")}
    return _json({"data": {name: {"data": {"count": counts[name]}} for name in _includes(request) if name in counts}})


RESOURCES: dict[str, Callable[[WondeSandbox, Request, SyntheticSchool, str], Response]] = {
    "students": _students,
    "students-leaver": _students,
    "employees": _employees,
    "subjects": _subjects,
    "classes": _groups,
    "groups": _groups,
    "lessons": _lessons,
    "attendance-codes": _attendance_codes,
    "attendance/session": _attendance,
    "exclusions": _exclusions,
    "assessment/results": _results,
    "deletions": _deletions,
    "counts": _counts,
}


# ---------------------------------------------------------------- standalone


def demo_schools(schools: int = 2, pupils: int = 250, days: int = 190, seed: int = 1) -> list[SyntheticSchool]:
    """The schools a standalone sandbox serves: first the portal demo's (so the demo can connect them), then synthetic."""
    served = [generate_school(seed * 1000 + i, pupils=pupils, days=days, phase=phase, name=name, urn=urn,
                              la_code=la, establishment_number=estab)
              for i, (urn, la, estab, phase, name) in enumerate(DEMO_SCHOOLS[:schools])]
    served += generate_schools(schools - len(served), seed + 1, pupils=pupils, days=days) if schools > len(served) else []
    return served


def serve(*, port: int = 8765, schools: int = 2, pupils: int = 250, days: int = 190, seed: int = 1,
          token: str = DEFAULT_TOKEN, webhook_url: str | None = None, echo: Callable[[str], Any] = print) -> None:
    """Run the sandbox in the foreground until interrupted."""
    sandbox = WondeSandbox(demo_schools(schools, pupils, days, seed), token=token, port=port, webhook_url=webhook_url)
    sandbox.start()
    banner = [f"Wonde sandbox at {sandbox.url} (token {token})"]
    banner += [f"  {sid}  URN {school.urn}  DfE {school.dfe_number}  {school.name}: {len(school.on_roll())} pupils"
               for sid, school in sandbox.schools.items()]
    sandbox.serve_until_interrupted(banner, echo)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: python -m portal_wonde.sandbox --port P --schools N --pupils M --days D."""
    parser = argparse.ArgumentParser(description="Run a Wonde sandbox server with synthetic schools.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--schools", type=int, default=2)
    parser.add_argument("--pupils", type=int, default=250)
    parser.add_argument("--days", type=int, default=190)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--webhook-url", default=None, help="where to POST schoolApproved/accessRevoked events")
    args = parser.parse_args(argv)
    serve(port=args.port, schools=args.schools, pupils=args.pupils, days=args.days, seed=args.seed, token=args.token,
          webhook_url=args.webhook_url)


if __name__ == "__main__":
    main()
