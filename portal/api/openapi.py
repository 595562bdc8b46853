"""The OpenAPI 3.1 document of /api/v1, built from the live matrix and the store models so it cannot drift."""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Integer, Numeric, select

from portal import store
from portal.extensions import db
from portal.models import Category, Feature

ERROR_CODES = [
    "unauthenticated", "invalid_credential", "feature_not_of_product", "unknown_category", "category_not_granted",
    "school_not_authorised", "unknown_record_type", "invalid_parameter", "invalid_cursor", "rate_limited",
    "not_found", "method_not_allowed", "bad_request", "internal_error", "invalid_body", "unknown_notice",
    "ledger_replay_required",
]
# R42: why a notice was published.
NOTICE_REASONS = ["retention_rule", "erasure", "revocation", "grant_removed", "authorisation_ended", "tombstone_removed",
                  "provider_deleted", "permission_withdrawn"]


def _column_schema(column) -> dict[str, Any]:
    impl = getattr(column.type, "impl", column.type)
    if isinstance(column.type, JSON) or isinstance(impl, JSON):
        schema: dict[str, Any] = {}
    elif isinstance(impl, Boolean) or type(column.type).__name__ == "EncryptedBoolean":
        schema = {"type": ["boolean", "null"]}
    elif isinstance(impl, Integer):
        schema = {"type": ["integer", "null"]}
    elif isinstance(impl, (Float, Numeric)):
        schema = {"type": ["number", "null"]}
    elif isinstance(impl, DateTime):
        schema = {"type": ["string", "null"], "format": "date-time"}
    elif isinstance(impl, Date):
        schema = {"type": ["string", "null"], "format": "date"}
    else:
        schema = {"type": ["string", "null"]}
    if column.info.get("special_category"):
        schema["description"] = "Special-category field: null when withheld (see the record's 'withheld')."
    return schema


def _record_schema(record_type: str, model: type) -> dict[str, Any]:
    special = any(c.info.get("special_category") for c in model.__table__.columns)
    fields = {c.name: _column_schema(c) for c in store.api_field_columns(model)}
    properties: dict[str, Any] = {
        "id": {"type": "integer"},
        "external_id": {"type": "string"},
        "category": {"type": "string"},
        "data_type": {"type": "string", "enum": ["customer", "government", "operator"]},
        "provider_updated_at": {"type": ["string", "null"], "format": "date-time"},
        "changed_at": {"type": "string", "format": "date-time"},
        "deleted": {"type": "boolean", "description": "A tombstone: deleted at the source; delete your copy."},
        "deleted_at": {"type": ["string", "null"], "format": "date-time"},
        "fields": {
            "oneOf": [
                {"type": "object", "properties": fields, "required": sorted(fields), "additionalProperties": False},
                {"type": "null"},
            ]
        },
    }
    required = ["id", "external_id", "category", "data_type", "provider_updated_at", "changed_at", "deleted",
                "deleted_at", "fields"]
    if special:
        properties["withheld"] = {"type": ["string", "null"], "enum": ["no_policy_document", "objection", None]}
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document for this deployment's matrix."""
    features = sorted(db.session.execute(select(Feature.id)).scalars())
    categories = sorted(db.session.execute(select(Category.id)).scalars())
    types = store.api_record_types()
    errors = {
        "400": _error_response("A parameter or cursor is not valid (codes invalid_parameter, invalid_cursor)."),
        "401": _error_response("No usable credential (codes unauthenticated, invalid_credential)."),
        "403": _error_response("Refused by the purpose check (feature_not_of_product, category_not_granted, school_not_authorised)."),
        "404": _error_response("No such category or record type (unknown_category, unknown_record_type, not_found)."),
        "429": _error_response("Too many requests with this credential (rate_limited)."),
    }
    limit = {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
             "description": "Records per page (the deployment's maximum applies)."}
    cursor = {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "The next_cursor of the previous page; opaque."}
    feature = {"name": "feature_id", "in": "path", "required": True, "schema": {"type": "string", "enum": features},
               "description": "The product feature this call is made for (R12)."}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MIS connection portal: product data API",
            "version": "1.0.0",
            "description": "Each product feature reads only the categories the usage matrix grants it, "
                           "for schools that authorise the product. Every read is audited.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/features/{feature_id}/schools": {
                "get": {
                    "operationId": "listSchools",
                    "summary": "Schools that authorise this product now",
                    "parameters": [feature, limit, cursor],
                    "responses": {
                        "200": {"description": "A page of schools.", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/SchoolPage"}}}},
                        **errors,
                    },
                }
            },
            "/features/{feature_id}/schools/{school_id}/categories/{category_id}/{record_type}": {
                "get": {
                    "operationId": "listRecords",
                    "summary": "A page of one record type of one category, in change order, tombstones included",
                    "parameters": [
                        feature,
                        {"name": "school_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
                        {"name": "category_id", "in": "path", "required": True, "schema": {"type": "string", "enum": categories}},
                        {"name": "record_type", "in": "path", "required": True,
                         "schema": {"type": "string", "enum": sorted(types)}},
                        limit,
                        cursor,
                        {"name": "updated_since", "in": "query", "required": False,
                         "schema": {"type": "string", "format": "date-time"},
                         "description": "Only records changed in the portal at or after this time (with a time zone)."},
                    ],
                    "responses": {
                        "200": {"description": "A page of records.", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/RecordPage"}}}},
                        **errors,
                    },
                }
            },
            **_deletion_paths(limit, cursor, errors),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": ERROR_CODES},
                            "message": {"type": "string"},
                            "category": {"type": "string"},
                            "feature": {"type": "string"},
                            "parameter": {"type": "string"},
                            "record_types": {"type": "array", "items": {"type": "string"}},
                            "ids": {"type": "array", "items": {"type": "integer"}},
                        },
                    }},
                },
                "School": {
                    "type": "object",
                    "required": ["id", "name", "urn", "dfe_number", "authorised_at"],
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "urn": {"type": ["string", "null"]},
                        "dfe_number": {"type": ["string", "null"]},
                        "authorised_at": {"type": "string", "format": "date-time"},
                    },
                    "additionalProperties": False,
                },
                "SchoolPage": {
                    "type": "object",
                    "required": ["feature", "categories", "schools", "next_cursor", "has_more"],
                    "properties": {
                        "feature": {"type": "string"},
                        "categories": {"type": "array", "items": {"type": "string", "enum": categories}},
                        "schools": {"type": "array", "items": {"$ref": "#/components/schemas/School"}},
                        "next_cursor": {"type": ["string", "null"]},
                        "has_more": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
                "RecordPage": {
                    "type": "object",
                    "required": ["feature", "school_id", "category", "record_type", "records", "next_cursor", "has_more"],
                    "properties": {
                        "feature": {"type": "string"},
                        "school_id": {"type": "integer"},
                        "category": {"type": "string"},
                        "record_type": {"type": "string"},
                        "records": {"type": "array", "items": {"anyOf": [
                            {"$ref": f"#/components/schemas/Record_{name}"} for name in sorted(types)
                        ]}},
                        "next_cursor": {"type": ["string", "null"]},
                        "has_more": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
                **_deletion_schemas(sorted(types)),
                **{f"Record_{name}": _record_schema(name, model) for name, (model, _) in sorted(types.items())},
            },
        },
    }


def _deletion_paths(limit: dict, cursor: dict, errors: dict) -> dict[str, Any]:
    """The deletion feed and its acknowledgement (R42)."""
    auth_errors = {k: v for k, v in errors.items() if k in ("401", "429")}
    return {
        "/deletions": {
            "get": {
                "operationId": "listDeletionNotices",
                "summary": "Ids this product received that the portal deleted or no longer shares: delete them and acknowledge",
                "parameters": [
                    {**limit, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    cursor,
                    {"name": "status", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["pending", "all"], "default": "pending"},
                     "description": "pending: not yet acknowledged (default); all: acknowledged ones too."},
                ],
                "responses": {
                    "200": {"description": "A page of notices, oldest first.", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/DeletionNoticePage"}}}},
                    "400": errors["400"],
                    **auth_errors,
                },
            }
        },
        "/deletions/ack": {
            "post": {
                "operationId": "acknowledgeDeletionNotices",
                "summary": "Confirm the product deleted its copies (idempotent; all or nothing)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Acknowledgement"}}}},
                "responses": {
                    "200": {"description": "Acknowledged.", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/AcknowledgementResult"}}}},
                    "422": _error_response("The body is not valid (invalid_body), or names ids that are not this "
                                           "product's notices (unknown_notice, with ids); nothing was acknowledged."),
                    **auth_errors,
                },
            }
        },
    }


def _deletion_schemas(record_types: list[str]) -> dict[str, Any]:
    when = {"type": "string", "format": "date-time"}
    return {
        "DeletionNotice": {
            "type": "object",
            "required": ["id", "school_id", "record_type", "category", "record_id", "scope", "reason", "rule",
                         "created_at", "acknowledge_by", "acknowledged_at"],
            "properties": {
                "id": {"type": "integer", "description": "The notice's id: acknowledge with it."},
                "school_id": {"type": "integer"},
                "record_type": {"type": "string", "enum": record_types},
                "category": {"type": "string"},
                "record_id": {"type": "integer", "description": "The record's id as the record feed served it "
                              "(for scope subject: the pupil's id, the pupil_id of every record about them)."},
                "scope": {"type": "string", "enum": ["record", "subject"],
                          "description": "record: delete this record; subject: the pupil and every record about them."},
                "reason": {"type": "string", "enum": NOTICE_REASONS},
                "rule": {"type": ["string", "null"], "description": "The retention rule, for sweep deletions."},
                "created_at": when,
                "acknowledge_by": {**when, "description": "7 days after created_at; later it is reported as overdue."},
                "acknowledged_at": {"type": ["string", "null"], "format": "date-time"},
            },
            "additionalProperties": False,
        },
        "DeletionNoticePage": {
            "type": "object",
            "required": ["notices", "next_cursor", "has_more"],
            "properties": {
                "notices": {"type": "array", "items": {"$ref": "#/components/schemas/DeletionNotice"}},
                "next_cursor": {"type": ["string", "null"]},
                "has_more": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "Acknowledgement": {
            "type": "object",
            "required": ["ids"],
            "properties": {"ids": {"type": "array", "minItems": 1, "maxItems": 1000,
                                   "items": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}}},
            "additionalProperties": False,
        },
        "AcknowledgementResult": {
            "type": "object",
            "required": ["acknowledged", "already_acknowledged"],
            "properties": {"acknowledged": {"type": "integer"}, "already_acknowledged": {"type": "integer"}},
            "additionalProperties": False,
        },
    }
