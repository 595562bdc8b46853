"""The Example MIS sandbox: a real HTTP server speaking the fictional Example MIS API over synthetic schools.

The API (all JSON, ``Authorization: Token <token>``):

- ``GET /api/v1/schools?urn=U``: the schools this token may ask for, each with its ``access``
  (``approved``, ``pending``, ``revoked``, ``none``);
- ``GET /api/v1/schools/{id}``: one school, with ``access`` and ``scopes`` ({scope: granted});
- ``POST`` / ``DELETE /api/v1/schools/{id}/access``: ask for access (approved at once here) / give it up;
- ``GET /api/v1/schools/{id}/{list}?updated_since=ISO&limit=N&cursor=C``: one page of a list,
  ``{"items": [...], "next_cursor": C | null}``; lists: pupils, leavers, census, subjects, groups,
  memberships, lessons, results, attendance, exclusions, staff, deletions. A list whose scope the
  school has not granted answers 403 ``scope_not_granted``; a school without approved access, 403 ``no_access``.

Test control (no HTTP needed), on portal.sandbox.server.SandboxServer: ``add_fault(kind=...)`` with the
conformance kit's fault names, ``requests()`` / ``count()``; and here ``withhold(scope)`` / ``grant(scope)``
and ``missing`` lists.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time as clock
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from portal.connectors import DemoSchool
from portal.sandbox.server import Fault, SandboxServer
from portal.sandbox.synthetic import SyntheticSchool, generate_school

__all__ = ["DEFAULT_TOKEN", "DEMO_SCHOOLS", "ExampleFault", "ExampleSandbox", "LIST_SCOPES", "demo_schools", "main",
           "serve"]

DEFAULT_TOKEN = "example-sandbox-token-0123456789"
# The demo's Example MIS school (`flask portal demo` creates it): a school of its own, so the demo's
# other schools keep their providers.
DEMO_SCHOOLS = (DemoSchool("example", "Demo Example School", "990004", "990", "2003", "Primary", 11),)
MAX_LIMIT = 200
# Each list and the scope a school grants for it (deletions carry ids only and need none).
LIST_SCOPES = {
    "pupils": "pupils", "leavers": "pupils", "census": "census", "subjects": "timetable", "groups": "timetable",
    "memberships": "timetable", "lessons": "timetable", "results": "assessment", "attendance": "attendance",
    "exclusions": "attendance", "staff": "staff", "deletions": None,
}
SCOPES = ("pupils", "census", "timetable", "assessment", "attendance", "staff")


def iso(value: datetime | date | None) -> str | None:
    """Dates as YYYY-MM-DD, times as UTC ISO 8601 with a Z."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


@dataclass(kw_only=True)
class ExampleFault(Fault):
    """``kind``: the conformance kit's fault names (server_error, rate_limited, malformed, timeout, revoke), or forbidden."""

    kind: str = "server_error"


class _Answer(Exception):
    def __init__(self, status: int, error: str, **extra: Any) -> None:
        self.status, self.body = status, {"error": error, **extra}


class ExampleSandbox(SandboxServer):
    """Serve synthetic schools over real HTTP as the Example MIS API; nothing starts until ``start()``/``with``."""

    fault_type: ClassVar[type[Fault]] = ExampleFault
    thread_name: ClassVar[str] = "example-sandbox"

    def __init__(self, schools: Sequence[SyntheticSchool], *, token: str = DEFAULT_TOKEN, host: str = "127.0.0.1",
                 port: int = 0, access: str = "approved") -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self._keys: dict[str, str] = {}
        self.schools = {self._id(s, "school"): s for s in schools}
        self.access = {sid: access for sid in self.schools}
        self.withheld: dict[str, set[str]] = {sid: set() for sid in self.schools}
        self.missing: set[str] = set()  # lists this server does not have (404)
        # Memberships seen, per school, so a pupil leaving a group becomes an entry in the deletions list.
        self._members = {sid: self._memberships(s) for sid, s in self.schools.items()}
        self._member_deletions: dict[str, list[tuple[str, str, datetime]]] = {sid: [] for sid in self.schools}

    def wsgi_app(self) -> Callable[[dict[str, Any], Callable], Iterable[bytes]]:
        return self.wsgi

    @property
    def url(self) -> str:
        return f"{self.origin}/api/v1"

    @property
    def settings(self) -> dict[str, Any]:
        """Connector settings pointing the Example connector at this sandbox."""
        return {"base_url": self.url, "token": self.token, "allow_insecure_http": True}

    # -- ids: opaque at the provider, mapped back to synthetic keys for the kit

    def _id(self, school: SyntheticSchool, key: str) -> str:
        digest = hashlib.blake2b(f"{school.seed}:{key}".encode(), digest_size=6).hexdigest()
        provider_id = f"ex_{digest}"
        self._keys[provider_id] = key
        return provider_id

    def synthetic_key(self, provider_id: str) -> str | None:
        return self._keys.get(provider_id)

    def school_id(self, index: int = 0) -> str:
        return list(self.schools)[index]

    # -- control (faults: add_fault(kind=..., match=..., times=..., skip=...) of SandboxServer)

    def withhold(self, school_id: str, *scopes: str) -> None:
        with self._lock:
            self.withheld[school_id].update(scopes)

    def grant(self, school_id: str, *scopes: str) -> None:
        with self._lock:
            self.withheld[school_id].difference_update(scopes)

    # -- WSGI

    def wsgi(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        entry = self.log_request(request)
        fault = self.take_fault(request.method, request.path)
        if fault is not None and fault.kind == "timeout":
            clock.sleep(0.6)  # past the kit's read timeout; outside the lock so other requests go on
        with self._lock:
            response = self._answer(request, fault)
        entry.status = response.status_code
        return response(environ, start_response)

    def _answer(self, request: Request, fault: ExampleFault | None) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if fault is not None and fault.kind == "revoke" and len(parts) > 3 and parts[3] in self.access:
            self.access[parts[3]] = "revoked"
        elif fault is not None and fault.kind == "malformed":
            return Response('{"items": [{"id": ', 200, content_type="application/json")
        elif fault is not None and fault.kind in ("server_error", "rate_limited", "forbidden"):
            status = {"server_error": 503, "rate_limited": 429, "forbidden": 403}[fault.kind]
            response = _json({"error": fault.kind}, status)
            if status == 429:
                response.headers["Retry-After"] = "0"
            return response
        try:
            if parts[:2] != ["api", "v1"]:
                raise _Answer(404, "not_found")
            if request.headers.get("Authorization") != f"Token {self.token}":
                raise _Answer(401, "bad_token")
            return _json(self._route(request, parts[2:]))
        except _Answer as answer:
            return _json(answer.body, answer.status)

    def _route(self, request: Request, parts: list[str]) -> Any:
        if not parts:
            return {"api": "example-mis", "version": 1}
        if parts == ["schools"]:
            urn = request.args.get("urn")
            return {"items": [self._school(sid) for sid, s in self.schools.items() if not urn or s.urn == urn],
                    "next_cursor": None}
        if parts[0] != "schools" or len(parts) < 2 or parts[1] not in self.schools:
            raise _Answer(404, "not_found")
        sid = parts[1]
        if len(parts) == 2:
            return self._school(sid)
        if parts[2] == "access" and request.method in ("POST", "DELETE"):
            self.access[sid] = "approved" if request.method == "POST" else "revoked"
            return {"access": self.access[sid]}
        name = parts[2]
        if len(parts) != 3 or name not in LIST_SCOPES or name in self.missing:
            raise _Answer(404, "not_found")
        if self.access[sid] != "approved":
            raise _Answer(403, "no_access")
        if LIST_SCOPES[name] in self.withheld[sid]:
            raise _Answer(403, "scope_not_granted", scope=LIST_SCOPES[name])
        return self._list(request, sid, name)

    def _school(self, sid: str) -> dict[str, Any]:
        school = self.schools[sid]
        return {"id": sid, "urn": school.urn, "name": school.name, "access": self.access[sid],
                "scopes": {scope: scope not in self.withheld[sid] for scope in SCOPES}}

    # -- lists

    def _list(self, request: Request, sid: str, name: str) -> dict[str, Any]:
        school = self.schools[sid]
        self._note_departures(sid)
        since = _since(request.args.get("updated_since"))
        cursor = request.args.get("cursor") or ""
        try:
            limit = max(1, min(int(request.args.get("limit", 50)), MAX_LIMIT))
            if name == "attendance":
                return self._attendance(school, since, limit, cursor)
            offset = int(cursor or 0)
        except ValueError:
            raise _Answer(400, "bad_paging") from None
        rows = [row for row, stamp in self._rows(sid, school, name) if since is None or stamp > since]
        wanted = set(filter(None, request.args.get("type", "").split(",")))
        if name == "deletions" and wanted:
            rows = [row for row in rows if row["type"] in wanted]
        end = offset + limit
        return {"items": rows[offset:end], "next_cursor": str(end) if end < len(rows) else None}

    def _rows(self, sid: str, school: SyntheticSchool, name: str) -> list[tuple[dict[str, Any], datetime]]:
        """Every row of a list with the time it last changed (what updated_since compares)."""
        pid = lambda key: self._id(school, key)  # noqa: E731
        if name in ("pupils", "leavers"):
            pupils = school.on_roll() if name == "pupils" else school.leavers()
            return [({"id": pid(p.key), "first_name": p.legal_forename, "last_name": p.legal_surname,
                      "known_as": [p.preferred_forename, p.preferred_surname], "born": iso(p.date_of_birth),
                      "sex": {"F": "female", "M": "male"}[p.gender], "upn": p.upn, "year": p.year_group,
                      "form": school.groups[p.registration_group].name if p.registration_group in school.groups else None,
                      "joined": iso(p.admission_date), "left": iso(p.leaving_date), "updated_at": iso(p.updated_at)},
                     p.updated_at) for p in pupils]
        if name == "census":
            return [({"pupil_id": pid(p.key), "fsm": p.fsm, "fsm_ever6": p.fsm_ever6, "pupil_premium": p.pupil_premium,
                      "sen": {"provision": p.sen_status, "need": p.sen_need}, "language": p.first_language,
                      "eal": p.eal, "ethnicity": p.ethnicity, "looked_after": p.looked_after,
                      "ever_in_care": p.ever_in_care, "service_child": p.service_child,
                      "updated_at": iso(p.updated_at)}, p.updated_at) for p in school.pupils.values()]
        if name == "subjects":
            return [({"id": pid(s.key), "code": s.code, "name": s.name, "updated_at": iso(s.updated_at)}, s.updated_at)
                    for s in school.subjects.values()]
        if name == "groups":
            return [({"id": pid(g.key), "name": g.name, "kind": g.group_type,
                      "subject_id": pid(g.subject_key) if g.subject_key else None, "updated_at": iso(g.updated_at)},
                     g.updated_at) for g in school.groups.values()]
        if name == "memberships":
            # A group that changed lists all its members again (an MIS keeps no dates for memberships).
            return [({"group_id": pid(g.key), "pupil_id": pid(member), "updated_at": iso(g.updated_at)}, g.updated_at)
                    for g in school.groups.values() for member in g.members]
        if name == "lessons":
            return [({"id": pid(x.key), "group_id": pid(x.group_key), "date": iso(x.lesson_date),
                      "period": x.period_name, "from": x.starts_at, "to": x.ends_at, "room": x.room,
                      "updated_at": iso(x.updated_at)}, x.updated_at) for x in school.lessons.values()]
        if name == "results":
            return [({"id": pid(r.key), "pupil_id": pid(r.pupil_key), "stage": r.stage, "statutory": r.statutory,
                      "aspect": r.aspect, "template": r.template, "value": r.result, "on": iso(r.result_date),
                      "updated_at": iso(r.updated_at)}, r.updated_at) for r in school.results.values()]
        if name == "exclusions":
            return [({"id": pid(e.key), "pupil_id": pid(e.pupil_key), "permanent": e.exclusion_type == "permanent",
                      "from": iso(e.start_date), "to": iso(e.end_date), "sessions": e.sessions,
                      "reason": e.reason, "note": e.comment, "updated_at": iso(e.updated_at)}, e.updated_at)
                    for e in school.exclusions.values()]
        if name == "staff":
            return [({"id": pid(m.key), "title": m.title, "first_name": m.forename, "last_name": m.surname,
                      "email": m.email, "roles": list(m.roles), "employed": m.currently_employed,
                      "ethnicity": m.ethnicity, "updated_at": iso(m.updated_at)}, m.updated_at)
                    for m in school.staff.values()]
        # deletions: pupils and staff the MIS removed, and pupils who left a group
        rows = [({"type": d.kind, "id": pid(d.key), "deleted_at": iso(d.deleted_at)}, d.deleted_at)
                for d in school.deletions if d.kind in ("pupil", "staff")]
        rows += [({"type": "membership", "id": f"{pid(group)}:{pid(pupil)}", "deleted_at": iso(at)}, at)
                 for group, pupil, at in self._member_deletions[sid]]
        return rows

    def _attendance(self, school: SyntheticSchool, since: datetime | None, limit: int, cursor: str) -> dict[str, Any]:
        """Session marks, paged by a cursor over the school's register positions (too many to list and slice).

        With updated_since: first the marks edited after their register day ("e<n>"), then every
        register from the first one changed since ("p<position>").
        """
        start = school.first_position_updated_after(since) if since else 0
        edited = [m for m in school.edited_marks() if m.updated_at > since and m.position < start] if since else []
        kind, index = (cursor[0], int(cursor[1:])) if cursor else ("e" if edited else "p", 0 if edited else start)
        if kind not in "ep":
            raise ValueError(cursor)
        marks = edited[index:index + limit] if kind == "e" else []
        index += len(marks)
        if kind == "e" and index >= len(edited):
            kind, index = "p", start
        while kind == "p" and len(marks) < limit and index < school.mark_positions:
            mark = school.mark_at(index)
            index += 1
            if mark is not None and (since is None or mark.updated_at > since):
                marks.append(mark)
        more = kind == "e" or index < school.mark_positions
        return {"items": [_mark(self, school, m) for m in marks], "next_cursor": f"{kind}{index}" if more else None}

    # -- memberships the MIS dropped

    @staticmethod
    def _memberships(school: SyntheticSchool) -> set[tuple[str, str]]:
        return {(g.key, member) for g in school.groups.values() for member in g.members}

    def _note_departures(self, sid: str) -> None:
        """Record each membership gone since the last request, stamped with its group's change time."""
        school = self.schools[sid]
        now = self._memberships(school)
        for group, pupil in sorted(self._members[sid] - now):
            at = school.groups[group].updated_at if group in school.groups else datetime.now(timezone.utc)
            self._member_deletions[sid].append((group, pupil, at))
        self._members[sid] = now


def _mark(sandbox: ExampleSandbox, school: SyntheticSchool, mark: Any) -> dict[str, Any]:
    return {"pupil_id": sandbox._id(school, mark.pupil_key), "date": iso(mark.session_date),
            "session": mark.session.lower(), "code": mark.code, "updated_at": iso(mark.updated_at)}


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        raise _Answer(400, "bad_updated_since") from None


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, content_type="application/json")


# ---------------------------------------------------------------- standalone


def demo_schools(schools: int = 1, pupils: int = 250, days: int = 190, seed: int = 1) -> list[SyntheticSchool]:
    """The demo's Example MIS school first (DEMO_SCHOOLS), then more synthetic ones."""
    out = []
    for i in range(schools):
        demo = DEMO_SCHOOLS[i] if i < len(DEMO_SCHOOLS) else None
        urn, la, estab, phase, name = (demo.urn, demo.la_code, demo.establishment_number, demo.phase.lower(),
                                       demo.name) if demo else (f"98{i:04d}", "980", f"{2000 + i}", "primary",
                                                                f"Example School {i}")
        out.append(generate_school(seed * 3000 + i, pupils=pupils, days=days, phase=phase, name=name, urn=urn,
                                   la_code=la, establishment_number=estab))
    return out


def serve(*, port: int = 8765, schools: int = 1, pupils: int = 250, days: int = 190, seed: int = 1,
          token: str = DEFAULT_TOKEN, echo: Callable[[str], Any] = print, **_ignored: Any) -> None:
    """Run the sandbox in the foreground until interrupted (`flask portal sandbox example`)."""
    sandbox = ExampleSandbox(demo_schools(schools, pupils, days, seed), token=token, port=port)
    sandbox.start()
    banner = [f"Example MIS sandbox at {sandbox.url} (token {token})"] + [
        f"  {sid}  URN {school.urn}  {school.name}: {len(school.on_roll())} pupils" for sid, school in sandbox.schools.items()]
    sandbox.serve_until_interrupted(banner, echo)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: python -m portal_example.sandbox --port P --schools N --pupils M --days D."""
    parser = argparse.ArgumentParser(description="Run the Example MIS sandbox with synthetic schools.")
    for flag, default in (("--port", 8765), ("--schools", 1), ("--pupils", 250), ("--days", 190), ("--seed", 1)):
        parser.add_argument(flag, type=int, default=default)
    args = parser.parse_args(argv)
    serve(port=args.port, schools=args.schools, pupils=args.pupils, days=args.days, seed=args.seed)


if __name__ == "__main__":
    main()
