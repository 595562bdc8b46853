"""Admin views for products (R12), the read-only matrix, API credentials (issued once, rotated, revoked) and authorisations."""
from __future__ import annotations

from flask import flash, request
from flask_admin import expose
from flask_admin.actions import action
from sqlalchemy import select
from wtforms.validators import ValidationError

from portal.admin.views import ReadOnlyModelView, SecureBaseView, SecureModelView
from portal.api import credentials
from portal.api.products import UK, validation_problems
from portal.extensions import db
from portal.models import ApiCredential, Feature, FeatureGrant, Product, ProductAuthorisation, SubjectFlag


class ProductView(SecureModelView):
    column_list = ("name", "features", "processing_location", "created_at")
    column_searchable_list = ("name",)
    form_columns = ("name", "purpose", "features", "processing_location")
    form_args = {"processing_location": {"default": UK}}
    can_delete = False

    def validate_model(self, model, is_created: bool) -> None:
        # No autoflush: the new row itself must not count as a product of the same name.
        with db.session.no_autoflush:
            problems = validation_problems(model.name or "", model.purpose or "", [f.id for f in model.features],
                                           model.processing_location or "", product_id=model.id)
        if problems:
            raise ValidationError(" ".join(problems.values()))


class FeatureView(ReadOnlyModelView):
    """The matrix features; changes come as versioned migrations (R15), never as admin edits."""

    column_list = ("id", "name")


class GrantView(ReadOnlyModelView):
    column_list = ("feature_id", "category_id", "matrix_version", "effective_from", "reason")
    column_filters = ("feature_id", "category_id")


class CredentialView(ReadOnlyModelView):
    """Credentials by prefix; the token itself is never stored, so it cannot be shown again."""

    column_list = ("product", "prefix", "label", "created_at", "expires_at", "revoked_at", "last_used_at", "replaces_id")
    column_exclude_list = ("token_hash",)
    column_details_exclude_list = ("token_hash",)
    column_filters = ("product.name",)
    column_default_sort = ("id", True)

    @action("revoke", "Revoke", "Revoke the selected credentials? Calls with them are refused from the next request.")
    def action_revoke(self, ids: list[str]) -> None:
        for credential in db.session.execute(select(ApiCredential).where(ApiCredential.id.in_([int(i) for i in ids]))).scalars():
            credentials.revoke(credential)
        db.session.commit()
        flash(f"Revoked {len(ids)} credential(s).")


class IssueCredentialView(SecureBaseView):
    """Issue or rotate a product's credential and show its token once."""

    @expose("/", methods=["GET", "POST"])
    def index(self):
        from flask_login import current_user

        products = list(db.session.execute(select(Product).order_by(Product.name)).scalars())
        token = error = None
        if request.method == "POST":
            product = db.session.get(Product, request.form.get("product_id", type=int) or 0)
            days = request.form.get("valid_days", type=int)
            rotate_id = request.form.get("rotate_id", type=int)
            if product is None:
                error = "Choose a product."
            elif days is not None and not 1 <= days <= 3650:
                error = "Enter a validity from 1 to 3650 days."
            else:
                old = db.session.get(ApiCredential, rotate_id) if rotate_id else None
                if old is not None and old.product_id == product.id:
                    _, token = credentials.rotate(old, created_by_id=current_user.id)
                else:
                    _, token = credentials.issue(product, label=request.form.get("label", ""), valid_days=days,
                                                 created_by_id=current_user.id)
                db.session.commit()
        return self.render("api/admin_issue.html", products=products, token=token, error=error)


def api_views() -> list:
    """Return the admin views of the product API area."""
    s = db
    return [
        ProductView(Product, s, name="Products", endpoint="products", category="Product API"),
        FeatureView(Feature, s, name="Matrix features", endpoint="features", category="Product API"),
        GrantView(FeatureGrant, s, name="Matrix grants", endpoint="grants", category="Product API"),
        CredentialView(ApiCredential, s, name="API credentials", endpoint="api_credentials", category="Product API"),
        IssueCredentialView(name="Issue credential", endpoint="issue_credential", category="Product API"),
        ReadOnlyModelView(ProductAuthorisation, s, name="Product authorisations", endpoint="product_authorisations",
                          category="Product API"),
        ReadOnlyModelView(SubjectFlag, s, name="Restrictions and objections", endpoint="subject_flags",
                          category="Product API"),
    ]
