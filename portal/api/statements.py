"""Built from the live grants: the GDPR Art. 30 record of processing (support staff) and each school's data-use statement, as HTML and CSV."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
from dataclasses import asdict, dataclass
from datetime import date

from flask import Blueprint, Response, abort, current_app, render_template
from flask_login import current_user, login_required
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from portal.admin.views import staff_allowed
from portal.extensions import db
from portal.models import Category, Feature, Product, ProductAuthorisation
from portal.scope import Action, school_or_404

bp = Blueprint("data_use_statements", __name__)

# Subjects per category: staff_basic is about staff, every other category about pupils.
_STAFF_CATEGORIES = {"staff_basic"}
SPECIAL_CATEGORY_BASIS = "UK GDPR Art. 9(2)(g); DPA 2018 Schedule 1 Part 2 paragraph 8 (equality of opportunity or treatment)"
LAWFUL_BASIS = "UK GDPR Art. 6(1)(f) legitimate interests of the school (controller); the operator processes as processor"


@dataclass
class ProcessingRow:
    """One product feature reading one category: a line of the record of processing."""

    product: str
    purpose: str
    feature_id: str
    feature: str
    category_id: str
    category: str
    data_subjects: str
    fields: str
    special_category_fields: str
    lawful_basis: str
    special_category_basis: str
    recipients: str
    processing_location: str
    grant_effective_from: str
    schools_authorising: int


def _rows(products: list[Product], counts: dict[int, int]) -> list[ProcessingRow]:
    categories = {c.id: c for c in db.session.execute(select(Category)).scalars()}
    rows = []
    for product in sorted(products, key=lambda p: p.name):
        for feature in sorted(product.features, key=lambda f: f.id):
            for grant in sorted(feature.grants, key=lambda g: g.category_id):
                cat = categories[grant.category_id]
                special = ", ".join(cat.special_category_fields or ())
                rows.append(ProcessingRow(
                    product=product.name,
                    purpose=product.purpose,
                    feature_id=feature.id,
                    feature=feature.name,
                    category_id=cat.id,
                    category=cat.name,
                    data_subjects="School staff" if cat.id in _STAFF_CATEGORIES else "School pupils",
                    fields=", ".join(cat.fields or ()),
                    special_category_fields=special,
                    lawful_basis=LAWFUL_BASIS,
                    special_category_basis=SPECIAL_CATEGORY_BASIS if special else "",
                    recipients=f"{product.name} (through the purpose-checked product API only)",
                    processing_location=product.processing_location,
                    grant_effective_from=grant.effective_from.isoformat(),
                    schools_authorising=counts.get(product.id, 0),
                ))
    return rows


def _products_query():
    return select(Product).options(selectinload(Product.features).selectinload(Feature.grants))


def art30_rows() -> list[ProcessingRow]:
    """Return the record of processing: every registered product × feature × granted category."""
    counts = dict(db.session.execute(
        select(ProductAuthorisation.product_id, func.count(func.distinct(ProductAuthorisation.school_id)))
        .where(ProductAuthorisation.revoked_at.is_(None))
        .group_by(ProductAuthorisation.product_id)
    ).all())
    return _rows(list(db.session.execute(_products_query()).scalars()), counts)


def school_rows(school_id: int) -> list[ProcessingRow]:
    """Return the data-use statement of one school: the same lines for the products it authorises now."""
    product_ids = select(ProductAuthorisation.product_id).where(
        ProductAuthorisation.school_id == school_id, ProductAuthorisation.revoked_at.is_(None)
    )
    products = list(db.session.execute(_products_query().where(Product.id.in_(product_ids))).scalars())
    return _rows(products, {p.id: 1 for p in products})


def _csv(rows: list[ProcessingRow], filename: str, columns: list[str]) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return Response(buffer.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


_ALL_COLUMNS = list(ProcessingRow.__dataclass_fields__)
_SCHOOL_COLUMNS = [c for c in _ALL_COLUMNS if c != "schools_authorising"]


def _require_staff() -> None:
    if not staff_allowed():
        abort(404)


@bp.get("/data-use/record-of-processing")
@login_required
def art30_html():
    """The Art. 30 record of processing, for support staff."""
    _require_staff()
    return render_template("api/art30.html", rows=art30_rows(), today=date.today(),
                           location=current_app.config["DATA_LOCATION"])


@bp.get("/data-use/record-of-processing.csv")
@login_required
def art30_csv():
    _require_staff()
    return _csv(art30_rows(), f"record-of-processing-{date.today().isoformat()}.csv", _ALL_COLUMNS)


@bp.get("/schools/<int:school_id>/data-use/statement.csv")
@login_required
def school_csv(school_id: int):
    """The school's data-use statement as CSV (the HTML version is the school pages' statement)."""
    school = school_or_404(current_user, school_id, Action.view)
    return _csv(school_rows(school.id), f"data-use-statement-{school.urn or school.id}-{date.today().isoformat()}.csv",
                _SCHOOL_COLUMNS)


# The standalone statement's only style, allowed by its hash: no script, nothing else inline.
STATEMENT_CSS = ("body{font-family:arial,sans-serif;margin:2em}table{border-collapse:collapse}"
                 "td,th{border:1px solid #b1b4b6;padding:.4em;text-align:left;vertical-align:top}.body-s{font-size:.9em}")
STATEMENT_CSP = (f"default-src 'none'; style-src 'sha256-{base64.b64encode(hashlib.sha256(STATEMENT_CSS.encode()).digest()).decode()}'; "
                 "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@bp.get("/schools/<int:school_id>/data-use/statement.html")
@login_required
def school_html(school_id: int):
    """The school's data-use statement as a standalone HTML document to download."""
    school = school_or_404(current_user, school_id, Action.view)
    html = render_template("api/school_statement.html", school=school, rows=school_rows(school.id),
                           today=date.today(), location=current_app.config["DATA_LOCATION"], statement_css=STATEMENT_CSS)
    return Response(html, mimetype="text/html", headers={
        "Content-Disposition": f'attachment; filename="data-use-statement-{school.urn or school.id}.html"',
        "Content-Security-Policy": STATEMENT_CSP})
