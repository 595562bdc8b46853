"""Small factories for test data: organisations, subscriptions and users with roles."""
from __future__ import annotations

import itertools
from datetime import date

import pyotp

from portal.auth.passwords import hash_password
from portal.extensions import db
from portal.models import Membership, Organisation, OrgKind, Role, Subscription, SubscriptionRoute, User

PASSWORD = "correct horse battery staple"
_seq = itertools.count(1)
# Hashing with argon2 is slow on purpose; tests share one hash of the shared password.
_HASH: list[str] = []


def _password_hash() -> str:
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    return _HASH[0]


def local_authority(name: str = "Exampleshire", la_code: str | None = None) -> Organisation:
    n = next(_seq)
    org = Organisation(kind=OrgKind.local_authority, name=f"{name} {n}", la_code=la_code or f"{800 + n % 199:03d}")
    db.session.add(org)
    db.session.flush()
    return org


def trust(name: str = "Example Academy Trust") -> Organisation:
    org = Organisation(kind=OrgKind.trust, name=f"{name} {next(_seq)}")
    db.session.add(org)
    db.session.flush()
    return org


def school(
    name: str = "Example School",
    *,
    la: Organisation | None = None,
    trust: Organisation | None = None,
    route: SubscriptionRoute = SubscriptionRoute.direct,
    phase: str = "Primary",
    starts_on: date = date(2020, 9, 1),
    ends_on: date | None = None,
) -> Organisation:
    n = next(_seq)
    la = la or local_authority()
    org = Organisation(
        kind=OrgKind.school,
        name=f"{name} {n}",
        urn=f"{100000 + n}",
        dfe_number=f"{la.la_code}{4000 + n:04d}",
        phase=phase,
        local_authority_id=la.id,
        trust_id=trust.id if trust else None,
    )
    db.session.add(org)
    db.session.flush()
    db.session.add(
        Subscription(
            school_id=org.id,
            route=route,
            local_authority_id=la.id if route == SubscriptionRoute.local_authority else None,
            starts_on=starts_on,
            ends_on=ends_on,
        )
    )
    db.session.flush()
    return org


def user(
    role: Role | None = None,
    org: Organisation | None = None,
    *,
    support: bool = False,
    totp: bool = False,
    email: str | None = None,
) -> User:
    n = next(_seq)
    u = User(
        email=email or f"user{n}@example.org",
        name=f"User {n}",
        password_hash=_password_hash(),
        is_support=support,
    )
    if totp or support:
        u.totp_secret = pyotp.random_base32()
        u.totp_enabled = True
    db.session.add(u)
    db.session.flush()
    if role is not None and org is not None:
        db.session.add(Membership(user_id=u.id, organisation_id=org.id, role=role))
        db.session.flush()
    return u
