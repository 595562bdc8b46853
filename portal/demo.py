"""The demo command: demo organisations, users and sandbox-backed connections."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select

from portal import audit
from portal.api.authorisations import authorise_product
from portal.api.products import register_product
from portal.auth.passwords import hash_password
from portal.auth.totp import new_secret, provisioning_uri
from portal.connectors import DemoSchool
from portal.extensions import db
from portal.extract import run_extract
from portal.models import (
    Connection, Feature, JobRun, Membership, Organisation, OrgKind, Product, Role, Subscription, SubscriptionRoute, User,
)
from portal.plugins.manager import get_plugins

# Known on purpose: the demo is for trying the portal, never for a deployment holding real data.
DEMO_PASSWORD = "demo-password-2026"
SUBSCRIPTION_START = date(2025, 9, 1)

LA = {"name": "Demoshire County Council", "la_code": "990"}
TRUST = {"name": "Demo Learning Trust"}
# The schools come from the enabled connectors' sandboxes (Connector.sandbox.demo_schools): each gets
# an admin and a viewer. (email, name, role, "trust" or "la"; None for support staff)
USERS = (
    ("trust.admin@demo.example", "Demo Trust Admin", Role.trust_admin, "trust"),
    ("la.officer@demo.example", "Demo LA Officer", Role.la_officer, "la"),
    ("support@demo.example", "Demo Support", None, None),
)


def demo_schools() -> list[DemoSchool]:
    """Return the demo schools the enabled connectors' sandboxes serve, in connector-name order, each once."""
    schools: dict[str, DemoSchool] = {}
    for _, connector in sorted(get_plugins().connectors().items()):
        for school in connector.sandbox.demo_schools if connector.sandbox is not None else ():
            schools.setdefault(school.key, school)
    return list(schools.values())


def school_users(school: DemoSchool) -> list[tuple[str, str, Role, str]]:
    """The demo users of one school: its admin and a viewer."""
    return [
        (f"admin.{school.key}@demo.example", f"{school.name} Admin", Role.school_admin, school.key),
        (f"viewer.{school.key}@demo.example", f"{school.name} Viewer", Role.school_viewer, school.key),
    ]


@dataclass
class DemoResult:
    """What the demo holds after a run, and how many rows this run created."""

    organisations: dict[str, Organisation] = field(default_factory=dict)
    users: list[tuple[User, Role | None, str | None]] = field(default_factory=list)
    created: int = 0
    password_hash: str | None = None
    school_keys: list[str] = field(default_factory=list)

    @property
    def schools(self) -> list[Organisation]:
        return [self.organisations[key] for key in self.school_keys]


def _organisation(result: DemoResult, key: str, lookup, **values) -> Organisation:
    org = db.session.execute(select(Organisation).where(lookup)).scalar()
    if org is None:
        org = Organisation(**values)
        db.session.add(org)
        db.session.flush()
        audit.record("demo.organisation_created", organisation_id=org.id, target=org, actor="cli")
        result.created += 1
    result.organisations[key] = org
    return org


def _user(result: DemoResult, email: str, name: str, support: bool) -> User:
    user = db.session.execute(select(User).where(func.lower(User.email) == email)).scalar()
    if user is None:
        if result.password_hash is None:
            # Every demo user has the same password; argon2 is slow on purpose, so hash it once.
            result.password_hash = hash_password(DEMO_PASSWORD)
        user = User(email=email, name=name, password_hash=result.password_hash, is_support=support)
        if support:
            # Support staff must use a second factor (R63): the demo prints the key to add to an app.
            user.totp_secret = new_secret()
            user.totp_enabled = True
        db.session.add(user)
        db.session.flush()
        audit.record("user.created", target=user, actor="cli", details={"support": support, "demo": True})
        result.created += 1
    return user


def build_demo() -> DemoResult:
    """Create whatever part of the demo is missing; existing rows are left exactly as they are. The caller commits."""
    result = DemoResult()
    la = _organisation(
        result, "la", Organisation.la_code == LA["la_code"], kind=OrgKind.local_authority, **LA
    )
    trust = _organisation(
        result,
        "trust",
        (Organisation.kind == OrgKind.trust) & (Organisation.name == TRUST["name"]),
        kind=OrgKind.trust,
        **TRUST,
    )
    users = list(USERS)
    for demo_school in demo_schools():
        route = SubscriptionRoute.local_authority if demo_school.via_local_authority else SubscriptionRoute.direct
        school = _organisation(
            result,
            demo_school.key,
            Organisation.urn == demo_school.urn,
            kind=OrgKind.school,
            name=demo_school.name,
            urn=demo_school.urn,
            dfe_number=demo_school.dfe_number,
            phase=demo_school.phase,
            statutory_high_age=demo_school.statutory_high_age,
            local_authority_id=la.id,
            trust_id=trust.id if demo_school.trust else None,
        )
        result.school_keys.append(demo_school.key)
        users[-1:-1] = school_users(demo_school)
        if not db.session.execute(select(Subscription.id).where(Subscription.school_id == school.id)).first():
            db.session.add(
                Subscription(
                    school_id=school.id,
                    route=route,
                    local_authority_id=la.id if route == SubscriptionRoute.local_authority else None,
                    starts_on=SUBSCRIPTION_START,
                )
            )
            result.created += 1
    for email, name, role, org_key in users:
        user = _user(result, email, name, support=role is None)
        if role is not None:
            org = result.organisations[org_key]
            found = db.session.execute(
                select(Membership.id).where(Membership.user_id == user.id, Membership.organisation_id == org.id)
            ).first()
            if not found:
                db.session.add(Membership(user_id=user.id, organisation_id=org.id, role=role))
                audit.record(
                    "demo.membership_created", organisation_id=org.id, target=user, actor="cli", details={"role": role.value}
                )
                result.created += 1
        result.users.append((user, role, org_key))
    db.session.flush()
    return result


def connect_sandbox_schools(schools: list[Organisation]) -> list[Connection]:
    """Connect the demo schools to the sandbox providers: each enabled connector's ``demo_connections(schools)``
    finds or creates an approved connection per school its sandbox serves, through portal.plugins.api, idempotently.
    """
    connections: list[Connection] = []
    for connector in get_plugins().connectors().values():
        connections.extend(connector.demo_connections(schools))
    return connections


def _describe(result: DemoResult) -> list[str]:
    lines = [f"Sign in at {current_app.config['BASE_URL'].rstrip('/')}/login — every demo password is: {DEMO_PASSWORD}"]
    if current_app.config["TOTP_REQUIRED_ROLES"]:
        roles = ", ".join(Role(r).label for r in current_app.config["TOTP_REQUIRED_ROLES"])
        lines.append(f"Users with these roles set up two-factor sign-in at their first sign-in: {roles}.")
    lines.append("")
    for user, role, org_key in result.users:
        if role is None:
            what = "support staff"
        else:
            what = f"{role.label} — {result.organisations[org_key].name}"
        lines.append(f"  {user.email:<32} {what}")
        if user.is_support and user.totp_secret:
            lines.append(f"  {'':<32} two-factor key for your authenticator app: {user.totp_secret}")
            lines.append(f"  {'':<32} {provisioning_uri(user.totp_secret, user.email, current_app.config['TOTP_ISSUER'])}")
    return lines


DEMO_PRODUCT = "Insight (demo product)"
DEMO_PRODUCT_PURPOSE = "Self-evaluation, target setting, pupil tracking and attendance reporting for the school."


def authorise_demo_product(schools: list[Organisation]) -> None:
    """Register a demo product offering every matrix feature and authorise it for each demo school (R3, R19)."""
    from sqlalchemy import select


    product = db.session.execute(select(Product).where(Product.name == DEMO_PRODUCT)).scalar()
    if product is None:
        features = list(db.session.execute(select(Feature.id)).scalars())
        product = register_product(DEMO_PRODUCT, DEMO_PRODUCT_PURPOSE, features)
    for school in schools:
        authorise_product(school, product, None)


def first_extracts(connections: list[Connection]) -> list[str]:
    """Run a full extract through the real connector for each approved connection with no run yet."""
    from sqlalchemy import select


    lines = []
    for conn in connections:
        if not conn.can_extract or db.session.execute(select(JobRun.id).where(JobRun.connection_id == conn.id)).first():
            continue
        run = run_extract(conn.id, mode="full")
        total = sum(c.get("inserted", 0) for c in (run.stats or {}).get("categories", {}).values())
        lines.append(f"  extract run {run.id} ({conn.connector}, school {conn.school_id}): {run.status.value}, {total} records")
    return lines


@contextmanager
def sandbox_providers() -> Iterator[list[str]]:
    """Point each demo connector without a configured base_url at its package's sandbox, started here.

    The sandboxes listen on free local ports while the demo loads and stop after; a connector with
    neither a base_url nor a sandbox stops the command with one line saying what to set. Yields the
    names of the sandboxes started.
    """
    all_settings = current_app.config.setdefault("CONNECTORS", {})
    started: list[str] = []
    with ExitStack() as stack:
        for name, connector in sorted(get_plugins().connectors().items()):
            configured = all_settings.get(name) or {}
            if not connector.in_demo() or configured.get("base_url"):
                continue
            start = connector.sandbox.demo if connector.sandbox is not None else None
            if start is None:
                raise click.ClickException(
                    f"the {name} connector has no sandbox for the demo: set PORTAL_CONNECTORS__{name}__base_url to "
                    f"a sandbox (flask portal sandbox {name} --port PORT) or disable it (PORTAL_ENABLED_CONNECTORS)"
                )
            all_settings[name] = {**configured, **stack.enter_context(start())}
            # Put the deployment's settings back when the sandbox stops (this app may go on serving).
            stack.callback(all_settings.__setitem__, name, configured)
            started.append(name)
        yield started


@click.command("demo")
@click.option("--extract/--no-extract", default=True, help="Run the first extract of each sandbox connection.")
@with_appcontext
def demo_command(extract: bool) -> None:
    """Create the demo organisations and users (running it again changes nothing) and print how to sign in.

    Connectors without a configured base_url are pointed at their package's sandbox, started for the load.
    """
    result = build_demo()
    with sandbox_providers() as started:
        if started:
            click.echo(f"Started the sandbox providers for the demo load ({', '.join(started)}); they stop after it.")
        connections = connect_sandbox_schools(result.schools)
        if connections:
            authorise_demo_product(result.schools)
        db.session.commit()
        click.echo("Created the demo." if result.created else "The demo is already in place; nothing changed.")
        if extract and connections:
            click.echo("Loading the demo schools' data from the sandbox providers through the connectors:")
            click.echo("\n".join(first_extracts(connections)))
    if started:
        click.echo(
            "The sandboxes have stopped, so later extracts of the demo schools fail: `make run` keeps sandboxes "
            "running beside the portal."
        )
    click.echo("\n".join(_describe(result)))


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    group.add_command(demo_command)
