"""The main pages run the same number of SQL queries for 1 school as for 20 under one trust or LA (no N+1)."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy import event

from portal.api import authorisations
from portal.extensions import db
from portal.models import ConnectionState, Role, RunStatus, SubscriptionRoute
from tests import api_support
from tests.conftest import Auth
from tests.school import helpers
from tests.school.helpers import counts

FEATURE = "attendance_reporting"


class _Queries:
    """Counts the statements the engine sends while a page is served."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def __enter__(self) -> _Queries:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)


def _add_schools(make, la, trust, product, n: int) -> list:
    schools = []
    for i in range(n):
        school = make.school("Counted", la=la, trust=trust, route=SubscriptionRoute.local_authority)
        conn = helpers.connection(school, ConnectionState.failing if i % 5 == 4 else ConnectionState.approved)
        helpers.run(conn, ago=timedelta(days=2), categories={"student_basic": counts(inserted=250)})
        helpers.run(conn, RunStatus.failed, ago=timedelta(days=1), error=helpers.SCHOOL_ACTION)
        helpers.run(conn, ago=timedelta(hours=3), categories={"student_basic": counts(updated=3)})
        authorisations.authorise_product(school, product, None)
        schools.append(school)
    db.session.commit()
    return schools


def _count(app, client, url: str, headers: dict | None = None) -> tuple[int, list[str]]:
    db.session.expire_all()
    with _Queries(db.engine) as seen:
        resp = client.get(url, headers=headers or {})
    assert resp.status_code == 200, (url, resp.status_code)
    return len(seen.statements), seen.statements


def _pages(first_school_id: int) -> list[tuple[str, str]]:
    s = first_school_id
    return [
        ("trust", "/home"), ("la", "/home"), ("trust", "/runs"), ("la", "/runs"),
        ("trust", f"/schools/{s}"), ("trust", f"/schools/{s}/connections"), ("trust", f"/schools/{s}/data-use"),
        ("trust", f"/schools/{s}/runs"), ("trust", f"/schools/{s}/history"),
        ("support", "/admin/operations/"), ("support", "/admin/operations/?q=Counted"),
        ("api", f"/api/v1/features/{FEATURE}/schools?limit=100"),
    ]


def test_main_pages_do_not_query_per_school(app, make):
    la = make.local_authority()
    trust = make.trust()
    product = api_support.product(FEATURE)
    users = {
        "trust": make.user(Role.trust_admin, trust, totp=True),
        "la": make.user(Role.la_officer, la, totp=True),
        "support": make.user(support=True),
    }
    [first] = _add_schools(make, la, trust, product, 1)
    token = api_support.token_for(product)
    clients = {}
    for who, user in users.items():
        clients[who] = app.test_client()
        Auth(clients[who]).login(user)
    clients["api"] = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}

    def measure() -> dict[tuple[str, str], tuple[int, list[str]]]:
        return {(who, url): _count(app, clients[who], url, bearer if who == "api" else None) for who, url in _pages(first.id)}

    measure()  # warm caches that are filled once per process (reference rows, plugin settings)
    one = measure()
    added = _add_schools(make, la, trust, product, 19)
    twenty = measure()
    # The pages really list the twenty schools (so the counts above cover them).
    for who, url in (("trust", "/home"), ("la", "/home"), ("support", "/admin/operations/")):
        page = clients[who].get(url).get_data(as_text=True)
        assert all(school.name in page for school in [first, *added]), (who, url)
    listed = clients["api"].get(f"/api/v1/features/{FEATURE}/schools?limit=100", headers=bearer).json["schools"]
    assert len(listed) == 20
    grew = {}
    for key, (n1, statements1) in one.items():
        n20, statements20 = twenty[key]
        if n20 > n1:
            extra = Counter(statements20) - Counter(statements1)
            grew[key] = (n1, n20, [s[:160] for s in extra][:3])
    assert not grew, f"query count grows with the number of schools: {grew}"
