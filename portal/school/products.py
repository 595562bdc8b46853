"""Products tab of a school: which products read which data, and authorising or ending a product (R3, R4, R6, R7, R8)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.api import authorisations
from portal.connectors import CATEGORIES
from portal.extensions import db
from portal.models import Category, ConnectionState, Feature, Organisation, Product, ProductAuthorisation, User
from portal.retention import orders
from portal.school import queries
from portal.school.forms import ProductAuthoriseForm, ProductEndForm
from portal.scope import Action, can, school_or_404

bp = Blueprint("school_products", __name__)

# Connection states in which the provider has approved access, so products get data (R1).
_APPROVED = (ConnectionState.approved, ConnectionState.failing)


@dataclass
class FeatureUse:
    """A feature and the categories it reads: (category id, date the grant takes effect if still to come; R15)."""

    feature: Feature
    categories: list[tuple[str, date | None]]


@dataclass
class ProductRow:
    product: Product
    features: list[FeatureUse] = field(default_factory=list)
    live: ProductAuthorisation | None = None  # the school authorises it now
    ended: ProductAuthorisation | None = None  # the latest ended authorisation, when not live


def _matrix_order(category_id: str) -> tuple[int, str]:
    # The usage matrix order (pupils first, staff last), as on the data-use page.
    return (CATEGORIES.index(category_id) if category_id in CATEGORIES else 99, category_id)


def _categories() -> dict[str, Category]:
    rows = db.session.execute(select(Category)).scalars()
    return {c.id: c for c in sorted(rows, key=lambda c: _matrix_order(c.id))}


def _feature_uses(product: Product, today: date) -> list[FeatureUse]:
    uses = []
    for feature in sorted(product.features, key=lambda f: f.id):
        cats = [(g.category_id, None if g.effective_from <= today else g.effective_from) for g in feature.grants]
        uses.append(FeatureUse(feature, sorted(cats, key=lambda c: (c[1] is not None, c[1] or today, _matrix_order(c[0])))))
    return uses


def _product_rows(school: Organisation) -> list[ProductRow]:
    """Every registered product with its features and the school's live or latest authorisation: three queries."""
    today = queries.today_london()
    products = db.session.execute(
        select(Product).options(selectinload(Product.features).selectinload(Feature.grants)).order_by(Product.name)
    ).scalars().all()
    rows = {p.id: ProductRow(p, _feature_uses(p, today)) for p in products}
    auths = db.session.execute(
        select(ProductAuthorisation).where(ProductAuthorisation.school_id == school.id).order_by(ProductAuthorisation.id)
    ).scalars()
    for auth in auths:
        row = rows.get(auth.product_id)
        if row is None:
            continue
        if auth.revoked_at is None:
            row.live = auth
        else:
            row.ended = auth
    for row in rows.values():
        if row.live is not None:
            row.ended = None
    return list(rows.values())


def _users(rows: list[ProductRow]) -> dict[int, User]:
    ids: set[int | None] = set()
    for row in rows:
        if row.live:
            ids.add(row.live.authorised_by_id)
        if row.ended:
            ids.add(row.ended.revoked_by_id)
    return queries.users_by_id(ids)


def _has_approved_connection(school: Organisation) -> bool:
    return any(c.state in _APPROVED for c in queries.connections_by_school([school.id])[school.id].values())


def _product_or_404(product_id: int) -> Product:
    product = db.session.get(Product, product_id)
    if product is None:
        abort(404)
    return product


def _only_this_product(school: Organisation, product: Product) -> list[str]:
    """Categories the product reads that no other product the school authorises reads (R7: deletable with it)."""
    others = db.session.execute(
        select(Product).join(ProductAuthorisation, ProductAuthorisation.product_id == Product.id).where(
            ProductAuthorisation.school_id == school.id, ProductAuthorisation.revoked_at.is_(None),
            Product.id != product.id,
        )
    ).scalars().all()
    needed = set().union(*(p.categories() for p in others)) if others else set()
    return sorted(product.categories() - needed, key=_matrix_order)


@bp.route("/schools/<int:school_id>/products")
@login_required
def products(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    rows = _product_rows(school)
    return render_template(
        "school/products.html", school=school, rows=rows, users=_users(rows), categories=_categories(),
        connected=_has_approved_connection(school),
        can_authorise=can(current_user, Action.authorise, school), can_end=can(current_user, Action.revoke, school),
    )


@bp.route("/schools/<int:school_id>/products/<int:product_id>/authorise", methods=["GET", "POST"])
@login_required
def authorise(school_id: int, product_id: int):
    """Confirm, then authorise the product to read the school's data (R3); R1: school or trust admins only."""
    school = school_or_404(current_user, school_id, Action.authorise)
    product = _product_or_404(product_id)
    if authorisations.live_authorisation(school.id, product.id) is not None:
        flash(f"{product.name} is already authorised for {school.name}.")
        return redirect(url_for(".products", school_id=school.id))
    form = ProductAuthoriseForm()
    if form.validate_on_submit():
        authorisations.authorise_product(school, product, current_user)  # audited there (R9)
        db.session.commit()
        flash(f"{product.name} is authorised. It can read the data listed from now on.")
        return redirect(url_for(".products", school_id=school.id))
    return render_template(
        "school/product_authorise.html", school=school, product=product, form=form, categories=_categories(),
        features=_feature_uses(product, queries.today_london()), connected=_has_approved_connection(school),
    ), (400 if request.method == "POST" else 200)


@bp.route("/schools/<int:school_id>/products/<int:product_id>/end", methods=["GET", "POST"])
@login_required
def end(school_id: int, product_id: int):
    """End the product's authorisation in one step (R4), after saying what stops (R6) and what to delete (R7)."""
    school = school_or_404(current_user, school_id, Action.revoke)
    product = _product_or_404(product_id)
    if authorisations.live_authorisation(school.id, product.id) is None:
        flash(f"{product.name} is not authorised for {school.name}, so there is nothing to end.")
        return redirect(url_for(".products", school_id=school.id))
    only = _only_this_product(school, product)
    form = ProductEndForm()
    if not only:
        del form.deletion  # every category it reads stays in use by another product: nothing to decide
    if form.validate_on_submit():
        immediate = bool(only) and form.deletion.data == "now"
        authorisations.revoke_product(school, product, current_user)  # audited, R42 notices published
        orders.schedule_category_deletion(school, user=current_user, immediate=immediate, within=product.categories())
        db.session.commit()
        flash(f"{product.name} no longer has access to {school.name}'s data. It has been told to delete its copies.")
        return redirect(url_for(".products", school_id=school.id))
    today = queries.today_london()
    return render_template(
        "school/product_end.html", school=school, product=product, form=form, categories=_categories(),
        features=_feature_uses(product, today), only=only, deletion_date=orders.category_deletion_date(today),
    ), (400 if request.method == "POST" else 200)
