"""The usage matrix's own names for categories and features, for every page that shows one (never the internal id)."""
from __future__ import annotations

from flask import Blueprint, has_request_context, request
from sqlalchemy import select

from portal.extensions import db
from portal.models import Category, Feature


def _names(model) -> dict[str, str]:
    # One query per request and table (on the request, not on g, which may outlive one request).
    cache = request.__dict__.setdefault("_portal_labels", {}) if has_request_context() else {}
    if model.__tablename__ not in cache:
        cache[model.__tablename__] = dict(db.session.execute(select(model.id, model.name)).all())
    return cache[model.__tablename__]


def category_label(category_id: str) -> str:
    """Return the matrix's name of a category, e.g. "Attendance and exclusions"."""
    return _names(Category).get(category_id) or str(category_id).replace("_", " ").capitalize()


def feature_label(feature_id: str) -> str:
    """Return the matrix's name of a feature."""
    return _names(Feature).get(feature_id) or str(feature_id).replace("_", " ").capitalize()


def register(bp: Blueprint) -> None:
    """Offer the labels to every template as filters."""
    bp.add_app_template_filter(category_label, "category_label")
    bp.add_app_template_filter(feature_label, "feature_label")
