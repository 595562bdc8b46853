"""The connector conformance kit: one pytest suite every connector package runs against its own sandbox.

A connector package opts in with a provider and one test file; the fixtures (``kit``, the databases)
come from the portal's pytest plugin (portal.testing.plugin), installed with ``mis-portal[testing]``:

    # portal_mine/testing.py, declared in setup.cfg:
    #   [options.entry_points]  portal.testing = mine = portal_mine.testing:MyProvider
    class MyProvider(ConformanceProvider): ...   # how to serve a synthetic school through the package's sandbox

    # tests/conftest.py
    @pytest.fixture
    def provider():
        return MyProvider()

    # tests/test_conformance.py
    from portal.testing.conformance import *  # noqa: F401,F403 (the kit's tests)

Every test serves the same synthetic school (portal.sandbox.synthetic) through the provider's
sandbox, runs the real extract engine into a real database (SQLite and PostgreSQL), and compares
the store with the school itself, ids aside: a connector that passes stores what any other
connector that passes stores. See docs/plugin_authors.md.
"""
from __future__ import annotations

import abc
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from portal.sandbox import synthetic
from portal.sandbox.server import SandboxServer
from portal.testing.databases import base_config

__all__ = [
    "ConformanceProvider",
    "Served",
    "ServedSchool",
    "connect_synthetic_school",
    "serve_school",
    "school_window",
    "test_deletions_reach_the_store",
    "test_each_fault_type",
    "test_full_extract_stores_the_school",
    "test_incremental_extract_applies_changes",
    "test_cli_incremental_after_cli_full_in_separate_processes",
    "test_kill_and_resume",
    "test_lesson_occurrences_are_stored_one_each",
    "test_kill_9_in_another_process_then_an_immediate_rerun_resumes",
    "test_revocation_mid_run_stops_the_run",
    "test_a_refused_read_is_a_category_outcome_not_a_revocation",
    "test_a_permission_withdrawn_mid_run_is_a_tracked_deletion_order",
    "test_a_missing_secondary_read_is_a_warning",
    "test_transient_faults_are_retried",
]

# The fault types every sandbox must be able to inject (names are the kit's; each provider maps them).
FAULTS = ("server_error", "rate_limited", "malformed", "timeout")
# What a run that keeps meeting the fault must end with: (error_kind, error_code).
FAULT_OUTCOMES = {
    "server_error": ("temporary", "provider_unavailable"),
    "rate_limited": ("temporary", "rate_limited"),
    # Invalid JSON is asked again once; twice running it is a typed error support can act on.
    "malformed": ("provider_problem", "invalid_json"),
    "timeout": ("temporary", "provider_unavailable"),
}
KIT_SEED = 11
KIT_PUPILS = 36
KIT_DAYS = 12
EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def changed_now() -> datetime:
    """When a change between two runs is stamped: the provider's now, after the last run asked (issue 19).

    An incremental run asks for changes from when the last one started asking; a change stamped
    earlier than that (EPOCH, in the past) is what only a full run can find.
    """
    return datetime.now(timezone.utc).replace(microsecond=0)


# ---------------------------------------------------------------- what a connector package supplies


class Served(abc.ABC):
    """One synthetic school being served by a provider's sandbox."""

    #: The running sandbox (its request log and faults: portal.sandbox.server).
    sandbox: SandboxServer
    #: Deployment settings for the connector (CONNECTORS[name]); may point at a plain-http sandbox.
    settings: dict[str, Any]
    #: The connection's own settings (e.g. a per-school secret); stored encrypted by the kit.
    connection_settings: dict[str, Any]
    #: Per category, a path fragment of its first read (what read_count counts).
    main_reads: Mapping[str, str] = {}

    @abc.abstractmethod
    def synthetic_key(self, provider_id: str) -> str | None:
        """Return the synthetic key of the entity the provider calls ``provider_id`` (None if unknown)."""

    @abc.abstractmethod
    def inject(self, fault: str, *, times: int = 1, skip: int = 0) -> None:
        """Make the next ``times`` data requests (after ``skip`` good ones) fail with a FAULTS type, or "revoke"."""

    def request_count(self) -> int:
        """How many requests the sandbox has answered so far."""
        return self.sandbox.count()

    def read_count(self, category: str) -> int:
        """How many requests of the category's first read the sandbox has answered so far."""
        return self.sandbox.count(self.main_reads[category])

    def changed(self) -> None:
        """Called after the kit mutates the synthetic school (sandboxes that cache renderings refresh here)."""

    # -- provider answers (issue 15): what a provider may answer besides data. A connector package
    #    implements each of these on its sandbox; the drills below then hold for it.

    def refuse(self, category: str) -> None:
        """Make every request of the category's main read answer 403 while the provider still shows the
        school approved and the category's permission (scope) granted."""
        raise NotImplementedError

    def withdraw(self, category: str) -> None:
        """The school stops granting the category's permission (scope) at the provider, which says so."""
        raise NotImplementedError

    def grant(self, category: str) -> None:
        """The school grants the category's permission (scope) again."""
        raise NotImplementedError

    def drop_secondary(self) -> str | None:
        """Make one secondary read answer 404; return its category (None: the connector has no secondary read)."""
        raise NotImplementedError


class ConformanceProvider(abc.ABC):
    """A connector package's side of the kit: its connector name, plugin module and sandbox."""

    name: str
    plugin: str

    @abc.abstractmethod
    def serve(self, school: synthetic.SyntheticSchool) -> contextlib.AbstractContextManager[Served]:
        """Serve the school through a running sandbox for the duration of the ``with`` block."""


# ---------------------------------------------------------------- the kit


@dataclass
class Kit:
    """One test's world: a synthetic school, its sandbox, a portal app, and a connection to extract."""

    provider: ConformanceProvider
    school: synthetic.SyntheticSchool
    served: Served
    app: Any
    connection_id: int
    # Synthetic keys of entities deleted upstream while the store held them.
    deleted: dict[str, set[str]] = field(default_factory=lambda: {"pupil": set(), "staff": set()})
    # How to build the same app in another process (see cli()).
    app_config: dict[str, Any] = field(default_factory=dict)
    # The day of the store's first import, when the school has staff already past R39 then (never imported, R23).
    first_import_on: date | None = None

    def cli(self, *args: str) -> dict[str, Any]:
        """Run `flask portal extract … --json` for the school in a separate OS process; return its JSON summary."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        config = self.app_config
        settings = config.get("CONNECTORS", {}).get(self.provider.name, {})
        if "read_timeout" in settings:
            # The kit's read timeout is short so that its timeout faults are quick; no CLI run injects one, and
            # on a loaded machine a fresh process's first answers could miss it four times (a CI run did).
            connectors = {**config["CONNECTORS"], self.provider.name: {**settings, "read_timeout": 10.0}}
            config = {**config, "CONNECTORS": connectors}
        env[APP_CONFIG_ENV] = json.dumps(config)
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "portal.testing.conformance:app_from_env()", "portal", "extract",
             "--connector", self.provider.name, "--school", self.school.urn, "--json", *args],
            env=env, capture_output=True, text=True, timeout=300,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, f"the CLI printed no summary (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-3000:]}"
        return json.loads(lines[-1])

    def run(self, mode: str = "auto", **kwargs: Any):
        from portal.extract import run_extract

        return run_extract(self.connection_id, mode, **kwargs)

    def mutate(self, at: datetime, **changes: int) -> dict[str, list[str]]:
        done = self.school.mutate(at, seed=KIT_SEED, **changes)  # the same changes whenever they are stamped
        self.deleted["pupil"].update(done["deleted"])
        self.deleted["staff"].update(done["staff_deleted"])
        self.served.changed()
        return done

    def connection(self):
        from portal.extensions import db
        from portal.models import Connection

        db.session.expire_all()
        return db.session.get(Connection, self.connection_id)

    # -- the store, ids aside

    def store(self) -> dict[str, dict[tuple, dict[str, Any]]]:
        """Every store row of the connection keyed by natural key, with provider ids mapped to synthetic keys."""
        from sqlalchemy import select

        from portal.extensions import db
        from portal.models.mis import STORE_MODELS

        db.session.expire_all()
        out: dict[str, dict[tuple, dict[str, Any]]] = {}
        for kind, model in STORE_MODELS.items():
            rows = db.session.execute(select(model).where(model.connection_id == self.connection_id)).scalars()
            table: dict[tuple, dict[str, Any]] = {}
            for row in rows:
                values = {c: getattr(row, c) for c in _compared_columns(model)}
                for ref in ("pupil_external_id", "group_external_id", "subject_external_id"):
                    if ref in values and values[ref] is not None:
                        values[ref] = self._key(values[ref])
                if "roles" in values:
                    values["roles"] = list(values["roles"] or [])
                values["deleted"] = row.deleted_at is not None
                table[_natural_key(kind, values, self._key(row.external_id))] = values
            out[kind] = table
        return out

    def _key(self, provider_id: str) -> str:
        key = self.served.synthetic_key(str(provider_id))
        return key if key is not None else f"?{provider_id}"

    def expected(self) -> dict[str, dict[tuple, dict[str, Any]]]:
        return expected_store(self.school, first_import_on=self.first_import_on)

    def assert_store_matches(self) -> None:
        """The store's live rows are exactly the school's; rows of deleted entities are tombstoned, not live."""
        actual, expected = self.store(), self.expected()
        for kind, rows in expected.items():
            live = {k: {c: v for c, v in r.items() if c != "deleted"} for k, r in actual[kind].items() if not r["deleted"]}
            missing = sorted(set(rows) - set(live))[:5]
            extra = sorted(set(live) - set(rows))[:5]
            assert not missing and not extra, f"{kind}: missing {missing}, unexpected {extra}"
            wrong = [(k, _diff(rows[k], live[k])) for k in rows if _diff(rows[k], live[k])][:3]
            assert not wrong, f"{kind}: values differ (expected, stored): {wrong}"
        for kind, keys in self.deleted.items():
            for key in keys:
                row = actual[kind].get((key,))
                assert row is None or row["deleted"], f"{kind} {key} was deleted upstream but is live in the store"


def school_window(school: synthetic.SyntheticSchool) -> tuple[date, date]:
    """The first and last date the school has data for (its timetable week may run past its last school day)."""
    last = max([school.days[-1], *(lesson.lesson_date for lesson in school.lessons.values())])
    return school.days[0], last


def _diff(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {c: (v, actual.get(c)) for c, v in expected.items() if actual.get(c) != v}


# Bookkeeping and provider-specific columns are left out of the comparison ("ids aside").
_SKIP = {"id", "school_id", "connection_id", "pupil_id", "category", "external_id", "provider_updated_at",
         "extracted_at", "deleted_at", "content_hash", "seen_run_id"}


def _compared_columns(model) -> list[str]:
    return [c.key for c in model.__table__.columns if c.key not in _SKIP]


def _natural_key(kind: str, values: Mapping[str, Any], own: str) -> tuple:
    if kind == "membership":
        return (values["group_external_id"], values["pupil_external_id"])
    if kind == "attendance_mark":
        return (values["pupil_external_id"], values["session_date"], values["session"])
    return (own,)


def expected_store(school: synthetic.SyntheticSchool, *, first_import_on: date | None = None) -> dict[str, dict[tuple, dict[str, Any]]]:
    """The canonical store a conforming connector produces for the school: the kit's reference mapping.

    ``first_import_on``: staff already past R39 on that day (not employed for 6 months) are left out, as the
    engine's first import skips them.
    """
    from portal.extract.plan import LEAVER_RETENTION_MONTHS
    from portal.retention.calendar import add_months, london_date

    groups = school.groups
    out: dict[str, dict[tuple, dict[str, Any]]] = {k: {} for k in (
        "pupil", "demographics", "subject", "group", "membership", "lesson", "assessment_result",
        "attendance_mark", "exclusion", "staff")}
    for p in school.pupils.values():
        reg = groups.get(p.registration_group)
        out["pupil"][(p.key,)] = {
            "legal_forename": p.legal_forename, "legal_surname": p.legal_surname,
            "preferred_forename": p.preferred_forename, "preferred_surname": p.preferred_surname,
            "date_of_birth": p.date_of_birth, "gender": p.gender, "upn": p.upn, "year_group": p.year_group,
            "registration_group": reg.name if reg else None, "admission_date": p.admission_date,
            "leaving_date": p.leaving_date, "data_type": "customer",
        }
        out["demographics"][(p.key,)] = {
            "pupil_external_id": p.key, "fsm": p.fsm, "fsm_ever6": p.fsm_ever6, "pupil_premium": p.pupil_premium,
            "sen_status": p.sen_status, "sen_need": p.sen_need, "first_language": p.first_language, "eal": p.eal,
            "ethnicity": p.ethnicity, "looked_after": p.looked_after, "ever_in_care": p.ever_in_care,
            "service_child": p.service_child, "data_type": "customer",
        }
    for s in school.subjects.values():
        out["subject"][(s.key,)] = {"code": s.code, "name": s.name, "data_type": "customer"}
    for g in groups.values():
        out["group"][(g.key,)] = {"name": g.name, "group_type": g.group_type, "subject_external_id": g.subject_key,
                                  "data_type": "customer"}
        for member in g.members:
            out["membership"][(g.key, member)] = {"group_external_id": g.key, "pupil_external_id": member,
                                                  "data_type": "customer"}
    for lesson in school.lessons.values():
        out["lesson"][(lesson.key,)] = {
            "group_external_id": lesson.group_key, "period_name": lesson.period_name,
            "day_of_week": lesson.day_of_week, "starts_at": lesson.starts_at, "ends_at": lesson.ends_at,
            "lesson_date": lesson.lesson_date, "data_type": "customer",
        }
    for r in school.results.values():
        out["assessment_result"][(r.key,)] = {
            "pupil_external_id": r.pupil_key, "stage": r.stage, "statutory": r.statutory, "aspect": r.aspect,
            "template": r.template, "result": r.result, "result_date": r.result_date, "data_type": "customer",
        }
    for mark in school.marks():
        out["attendance_mark"][(mark.pupil_key, mark.session_date, mark.session)] = {
            "pupil_external_id": mark.pupil_key, "session_date": mark.session_date, "session": mark.session,
            "code": mark.code, "data_type": "customer",
        }
    for e in school.exclusions.values():
        out["exclusion"][(e.key,)] = {
            "pupil_external_id": e.pupil_key, "exclusion_type": e.exclusion_type, "start_date": e.start_date,
            "end_date": e.end_date, "sessions": e.sessions, "data_type": "customer",
        }
    for s in school.staff.values():
        if (first_import_on is not None and not s.currently_employed
                and add_months(london_date(s.updated_at), LEAVER_RETENTION_MONTHS) <= first_import_on):
            continue
        out["staff"][(s.key,)] = {
            "title": s.title, "forename": s.forename, "surname": s.surname, "email": s.email, "roles": list(s.roles),
            "currently_employed": s.currently_employed, "data_type": "customer",
        }
    return out


APP_CONFIG_ENV = "CONFORMANCE_KIT_APP_CONFIG"


def app_from_env():
    """Build the kit's app in another process (`flask --app portal.testing.conformance:app_from_env()`)."""
    from portal import create_app

    config = json.loads(os.environ[APP_CONFIG_ENV])
    return create_app(base_config(config.pop("DATABASE_URL"), **config))


@pytest.fixture
def kit(provider: ConformanceProvider, database_url: str) -> Iterator[Kit]:
    """A school served by the provider's sandbox, a portal app on a fresh database, and an approved connection."""
    from portal import create_app
    from portal.extensions import db

    school = synthetic.generate_school(KIT_SEED, pupils=KIT_PUPILS, days=KIT_DAYS, phase="secondary", sixth_form=False)
    # A suspension and a leaver-to-be make sure every record type is present in a small school.
    _ensure_exclusion(school)
    with provider.serve(school) as served:
        config = {"PLUGINS": [provider.plugin], "ENABLED_CONNECTORS": [provider.name],
                  "CONNECTORS": {provider.name: dict(served.settings)}, "EXTRACT_BATCH_SIZE": 200,
                  "MASS_REMOVAL_THRESHOLD": 0.5}
        app = create_app(base_config(database_url, **config))
        with app.app_context():
            connection_id = connect_synthetic_school(school, provider.name, served.connection_settings)
            yield Kit(provider, school, served, app, connection_id, app_config={"DATABASE_URL": database_url, **config})
            db.session.remove()
            db.engine.dispose()


def _ensure_exclusion(school: synthetic.SyntheticSchool) -> None:
    if school.exclusions:
        return
    pupil = next(iter(school.pupils.values()))
    day = school.days[2]
    stamp = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=12)
    school.exclusions["EX-KIT"] = synthetic.Exclusion("EX-KIT", pupil.key, "fixed", day, day, 2, "DB",
                                                       "Free-text note held in the MIS", stamp, stamp)


def add_synthetic_school(school: synthetic.SyntheticSchool):
    """Add a synthetic school and its local authority as organisations, as `flask portal schools add` would."""
    from portal.extensions import db
    from portal.models import Organisation, OrgKind

    la = Organisation(kind=OrgKind.local_authority, name=f"LA {school.la_code}", la_code=school.la_code)
    db.session.add(la)
    db.session.flush()
    org = Organisation(kind=OrgKind.school, name=school.name, urn=school.urn, dfe_number=school.dfe_number,
                       phase=school.phase, local_authority_id=la.id)
    db.session.add(org)
    db.session.flush()
    return org


def approved_connection(org, connector: str, settings: Mapping[str, Any] | None = None):
    """Return a committed, approved connection of the school through the connector."""
    from portal.extensions import db
    from portal.models import Connection, ConnectionState

    connection = Connection(school_id=org.id, connector=connector, state=ConnectionState.approved,
                            settings_encrypted=json.dumps(dict(settings or {})))
    db.session.add(connection)
    db.session.commit()
    return connection


def connect_synthetic_school(school: synthetic.SyntheticSchool, connector: str, settings: Mapping[str, Any]) -> int:
    """Create the school, a product that needs all six categories, and an approved connection."""
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Feature, Product, ProductAuthorisation

    org = add_synthetic_school(school)
    product = Product(name="Conformance kit product", purpose="Testing connectors")
    product.features = list(db.session.execute(select(Feature)).scalars())
    db.session.add(product)
    db.session.flush()
    db.session.add(ProductAuthorisation(school_id=org.id, product_id=product.id,
                                        authorised_at=datetime.now(timezone.utc) - timedelta(days=1)))
    return approved_connection(org, connector, settings).id


@dataclass
class ServedSchool:
    """A synthetic school served by an installed connector's sandbox and connected (approved) in a portal app."""

    provider: ConformanceProvider
    school: synthetic.SyntheticSchool
    served: Served
    app: Any
    org: Any
    connection_id: int

    @property
    def sandbox(self) -> SandboxServer:
        return self.served.sandbox


@contextlib.contextmanager
def serve_school(provider: ConformanceProvider, school: synthetic.SyntheticSchool, make_app,
                 **config: Any) -> Iterator[ServedSchool]:
    """Serve the school through the provider's sandbox; yield it connected in an app of ``make_app(**config)``.

    The school authorises a product of every feature (every category granted); the app context stays pushed.
    """
    with provider.serve(school) as served:
        app = make_app(**{"PLUGINS": [provider.plugin], "ENABLED_CONNECTORS": [provider.name],
                          "CONNECTORS": {provider.name: dict(served.settings)}, **config})
        with app.app_context():
            connection_id = connect_synthetic_school(school, provider.name, served.connection_settings)
            from portal.extensions import db
            from portal.models import Connection

            org = db.session.get(Connection, connection_id).school
            yield ServedSchool(provider, school, served, app, org, connection_id)


# ---------------------------------------------------------------- the tests


def test_full_extract_stores_the_school(kit: Kit):
    run = kit.run("full")
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    assert run.params["mode"] == "full"
    assert set(run.params["categories"]) == set(synthetic_categories())
    counts = run.stats["categories"]
    assert counts["student_basic"]["inserted"] == len(kit.school.pupils)
    assert counts["staff_basic"]["inserted"] == len(kit.school.staff)
    kit.assert_store_matches()


def test_lesson_occurrences_are_stored_one_each(kit: Kit):
    """Every lesson taught is its own row (a class's lesson shares its provider id across weeks on some MIS)."""
    assert kit.run("full").status.value == "succeeded"
    lessons = {k: r for k, r in kit.store()["lesson"].items() if not r["deleted"]}
    served = kit.school.lessons
    assert len(lessons) == len(served), f"{len(served)} lesson occurrences served, {len(lessons)} stored"
    taught = {(r["group_external_id"], r["lesson_date"], r["starts_at"]) for r in lessons.values()}
    assert taught == {(x.group_key, x.lesson_date, x.starts_at) for x in served.values()}
    # An incremental run neither collapses nor duplicates them.
    assert kit.run("incremental").status.value == "succeeded"
    assert len([r for r in kit.store()["lesson"].values() if not r["deleted"]]) == len(served)


def synthetic_categories() -> tuple[str, ...]:
    from portal.connectors import CATEGORIES

    return CATEGORIES


def test_incremental_extract_applies_changes(kit: Kit):
    assert kit.run("full").status.value == "succeeded"
    done = kit.mutate(changed_now(), updated=3, leavers=1, added=1, marks=3, staff_updated=1)
    run = kit.run("incremental")
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    assert run.params["mode"] == "incremental"
    basic = run.stats["categories"]["student_basic"]
    assert basic["inserted"] == len(done["added"])
    assert basic["updated"] >= len(done["updated"]) + len(done["leavers"])
    kit.assert_store_matches()


def test_deletions_reach_the_store(kit: Kit):
    assert kit.run("full").status.value == "succeeded"
    kit.mutate(changed_now(), deleted=2, staff_deleted=1)
    assert kit.run("incremental").status.value == "succeeded"
    store = kit.store()
    for key in kit.deleted["pupil"]:
        assert store["pupil"][(key,)]["deleted"], "a pupil deleted upstream is tombstoned by the next incremental run"
    for key in kit.deleted["staff"]:
        assert store["staff"][(key,)]["deleted"]
    # Every row about a deleted pupil goes with them in the same run, not at some later full run.
    for kind, rows in store.items():
        about = [k for k, r in rows.items() if r.get("pupil_external_id") in kit.deleted["pupil"] and not r["deleted"]]
        assert not about, f"{kind}: rows about a deleted pupil are still live: {about[:3]}"
    # A full run afterwards reconciles everything else about them (R20); the store then equals the school.
    assert kit.run("full").status.value == "succeeded"
    kit.assert_store_matches()


def test_transient_faults_are_retried(kit: Kit):
    # A provider hiccup (5xx, 429, a dropped connection, one garbled answer) is asked again.
    temporary = [f for f in FAULTS if FAULT_OUTCOMES[f][0] == "temporary"] + ["malformed"]
    for fault in temporary:
        kit.served.inject(fault, times=1, skip=2)
    run = kit.run("full")
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    kit.assert_store_matches()
    faulty = kit.served.request_count()
    assert kit.run("full").status.value == "succeeded"
    clean = kit.served.request_count() - faulty
    assert faulty >= clean + len(temporary), "each fault was answered by asking again"


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_type(kit: Kit, fault: str):
    kit.served.inject(fault, times=1000, skip=3)
    run = kit.run("full")
    kind, code = FAULT_OUTCOMES[fault]
    assert run.status.value == "failed"
    assert (run.error_kind.value, run.error_code) == (kind, code)
    assert run.error_message and not any(p.legal_surname in run.error_message for p in kit.school.pupils.values())
    # A provider fault is not a revocation: the connection stays extractable.
    assert kit.connection().state.value in ("approved", "failing")


def test_revocation_mid_run_stops_the_run(kit: Kit):
    kit.served.inject("revoke", skip=4)
    run = kit.run("full")
    assert run.status.value == "failed"
    assert (run.error_kind.value, run.error_code) == ("school_action", "authorisation_lost")
    assert kit.connection().state.value == "revoked"  # R5: recorded as a revocation, not an error
    before = kit.served.request_count()
    again = kit.run("full")
    assert again.status.value == "cancelled"
    assert kit.served.request_count() == before, "nothing is asked of the provider after a revocation"


# Separate OS processes are the production layout, which runs on PostgreSQL; the engine's own process drills
# (tests/test_runs.py, tests/test_extract_faults.py) cover both databases.
@pytest.mark.one_backend("postgresql")
def test_cli_incremental_after_cli_full_in_separate_processes(kit: Kit):
    """What one process learnt of the provider (watermarks, change tokens) serves the next: CLI runs are incremental too."""
    full = kit.cli("--full")
    assert (full["status"], full["mode"]) == ("succeeded", "full"), full
    kit.mutate(changed_now(), updated=2, deleted=1, marks=2, staff_updated=1)
    incremental = kit.cli()
    assert (incremental["status"], incremental["mode"]) == ("succeeded", "incremental"), incremental

    def received(summary: dict) -> int:
        return sum(c["inserted"] + c["updated"] + c["unchanged"] for c in summary["categories"].values())

    assert received(incremental) < received(full) / 2, "the second process read everything again"
    kit.assert_store_matches()


class _Killed(BaseException):
    """Stands in for the process dying mid-run (not an Exception, so nothing catches it)."""


def test_kill_and_resume(kit: Kit):
    from portal.extensions import db
    from portal.models import JobRun, RunStatus

    seen = {"pages": 0}

    def die_after_some_pages(event: dict) -> None:
        if event.get("event") == "page" and event.get("category") == "student_attendance_exclusions":
            seen["pages"] += 1
            if seen["pages"] == 2:
                raise _Killed()

    with pytest.raises(_Killed):
        kit.run("full", progress=die_after_some_pages)
    db.session.rollback()
    run = db.session.execute(db.select(JobRun).order_by(JobRun.id.desc())).scalars().first()
    assert run.status == RunStatus.running and run.stats.get("completed"), "the dead run kept its progress"
    run.lease_expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)  # the lease lapses
    db.session.commit()
    before = kit.served.request_count()
    resumed = kit.run("full")
    assert resumed.id == run.id and resumed.status.value == "succeeded", (resumed.error_code, resumed.error_message)
    kit.assert_store_matches()
    resumed_requests = kit.served.request_count() - before
    before = kit.served.request_count()
    assert kit.run("full").status.value == "succeeded"
    full_requests = kit.served.request_count() - before
    assert resumed_requests < full_requests, "the resumed run carried on from its checkpoint instead of starting again"


# The engine in a process of its own, killed with SIGKILL at the second page of attendance.
_KILLED_RUN = """
import json, os, signal, sys
from portal import create_app
from portal.testing.databases import base_config

config = json.loads(sys.argv[1])
app = create_app(base_config(config.pop("DATABASE_URL"), **config))
pages = 0

def die(event):
    global pages
    if event.get("event") == "page" and event.get("category") == "student_attendance_exclusions":
        pages += 1
        if pages == 2:
            os.kill(os.getpid(), signal.SIGKILL)

with app.app_context():
    from portal.extract import run_extract
    run_extract(int(sys.argv[2]), "full", progress=die)
"""


# Separate OS processes are the production layout, which runs on PostgreSQL; the engine's own process drills
# (tests/test_runs.py, tests/test_extract_faults.py) cover both databases.
@pytest.mark.one_backend("postgresql")
def test_kill_9_in_another_process_then_an_immediate_rerun_resumes(kit: Kit):
    """kill -9 of a full extract, then at once a rerun: the dead run is found (its process is gone) and resumed."""
    import subprocess
    import sys

    from portal.extensions import db
    from portal.models import JobRun, RunStatus

    try:
        config = json.dumps(kit.app_config)
    except TypeError:
        pytest.skip("the sandbox's settings cannot be passed to another process")
    before = kit.served.request_count()
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, config, str(kit.connection_id)],
                          capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    db.session.expire_all()
    runs = db.session.execute(db.select(JobRun).where(JobRun.connection_id == kit.connection_id)).scalars().all()
    assert [r.status for r in runs] == [RunStatus.running]
    dead = runs[0]
    assert dead.lease_expires_at > datetime.now(timezone.utc), "found dead by its owner, not by a lapsed lease"
    killed_requests = kit.served.request_count() - before
    resumed = kit.run("full")
    assert (resumed.id, resumed.attempts) == (dead.id, 2)
    assert resumed.status.value == "succeeded", (resumed.error_code, resumed.error_message)
    assert db.session.scalar(db.select(db.func.count()).select_from(JobRun)) == 1, "no second run from scratch"
    assert resumed.error_code is None and not resumed.stats.get("hold")
    kit.assert_store_matches()
    assert killed_requests > 0


# ---------------------------------------------------------------- provider answers (issue 15)


def _orders_and_withdrawals(kit: Kit):
    from portal.extensions import db
    from portal.models import DeletionOrder, PermissionWithdrawal

    db.session.expire_all()
    orders = db.session.execute(db.select(DeletionOrder).where(DeletionOrder.connection_id == kit.connection_id)).scalars().all()
    withdrawals = db.session.execute(
        db.select(PermissionWithdrawal).where(PermissionWithdrawal.connection_id == kit.connection_id)).scalars().all()
    return orders, withdrawals


def test_a_refused_read_is_a_category_outcome_not_a_revocation(kit: Kit):
    """R5: a 403 on one read while the provider shows the school approved revokes nothing and deletes nothing."""
    assert kit.run("full").status.value == "succeeded"
    category = "student_attendance_exclusions"
    kit.served.refuse(category)
    run = kit.run("full")
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    outcomes = [(o["category"], o["code"]) for o in run.stats["outcomes"]]
    assert (category, "access_refused") in outcomes
    assert kit.connection().state.value == "approved"
    assert _orders_and_withdrawals(kit) == ([], [])
    # Nothing was reconciled away: the store still equals what the provider serves.
    kit.assert_store_matches()
    assert run.stats["categories"][category]["tombstoned"] == 0


def test_a_permission_withdrawn_mid_run_is_a_tracked_deletion_order(kit: Kit):
    """A category the provider stops granting is not reconciled: a deletion order for exactly it, cancelled on return."""
    assert kit.run("full").status.value == "succeeded"
    category = "student_assessment"

    def withdraw_when_reached(event: dict) -> None:
        if event.get("event") == "category" and event.get("category") == category:
            kit.served.withdraw(category)

    run = kit.run("full", progress=withdraw_when_reached)
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    assert [o for o in run.stats["outcomes"] if o["category"] == category and o["code"] == "permission_missing"
            and o["confirmed"]], run.stats["outcomes"]
    assert kit.connection().state.value == "approved"
    assert run.stats["categories"][category]["tombstoned"] == 0
    kit.assert_store_matches()  # the held rows stay until the order's date: no silent tombstoning
    orders, withdrawals = _orders_and_withdrawals(kit)
    assert [(o.categories, o.reason, o.completed_at, o.cancelled_at) for o in orders] == [
        ([category], "permission_withdrawn", None, None)]
    assert orders[0].due_on > orders[0].trigger_on
    assert [(w.permission, w.restored_at, w.deletion_order_id) for w in withdrawals] == [(category, None, orders[0].id)]
    # The next run does not stack a second order.
    assert kit.run("full").status.value == "succeeded"
    assert len(_orders_and_withdrawals(kit)[0]) == 1
    # The school grants it again: the order is cancelled and the category read as before.
    kit.served.grant(category)
    again = kit.run("full")
    assert again.status.value == "succeeded" and not again.stats["outcomes"]
    orders, withdrawals = _orders_and_withdrawals(kit)
    assert orders[0].cancelled_at is not None and withdrawals[0].restored_at is not None
    kit.assert_store_matches()


def test_a_missing_secondary_read_is_a_warning(kit: Kit):
    """A 404 on a secondary read records a warning; the category and the rest of the run go on."""
    assert kit.run("full").status.value == "succeeded"
    category = kit.served.drop_secondary()
    if category is None:
        pytest.skip("this connector has no secondary read")
    run = kit.run("full")
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    assert (category, "optional_read_skipped") in [(o["category"], o["code"]) for o in run.stats["outcomes"]]
    assert kit.connection().state.value == "approved"
    assert _orders_and_withdrawals(kit) == ([], [])
    kit.assert_store_matches()

