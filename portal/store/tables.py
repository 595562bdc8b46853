"""The store's tables: which columns a record fills, kinds about a pupil, categories, the keyed content hash."""
from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from flask import current_app
from sqlalchemy import Table, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from portal.connectors import RECORD_TYPES
from portal.extensions import db
from portal.models.mis import STORE_MODELS, special_category_columns


# Columns the store fills itself; everything else on a store table comes from the record.
_META = frozenset(
    {"id", "school_id", "connection_id", "category", "external_id", "provider_updated_at", "extracted_at",
     "deleted_at", "data_type", "content_hash", "seen_run_id", "pupil_id"}
)
# Record kinds whose rows hang off a pupil row (resolved from pupil_external_id, R34).
PUPIL_KINDS = frozenset(k for k, m in STORE_MODELS.items() if "pupil_id" in m.__table__.c)
KIND_CATEGORY = {kind: cls.category for kind, cls in RECORD_TYPES.items()}


def _table(kind: str) -> Table:
    return STORE_MODELS[kind].__table__


@functools.lru_cache(maxsize=None)
def _data_columns(kind: str) -> tuple[str, ...]:
    return tuple(c.name for c in _table(kind).columns if c.name not in _META)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


@functools.lru_cache(maxsize=8)
def _hash_key(secret: str | bytes) -> bytes:
    # BLAKE2b takes a key of at most 64 bytes: derive one from the app's secret key.
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def content_hash(kind: str, values: Mapping[str, Any], key: bytes | None = None) -> str:
    """Return a keyed hash of a record's stored values, so change detection never needs to decrypt.

    Keyed (BLAKE2b with a key derived from the app's secret key) because the values include
    special-category codes with few possible values, which a plain hash would give away. The
    payload is the repr of the values in column order: a few microseconds a record, where a
    sorted JSON document and HMAC took three times as long on the extract's hot path. ``key``
    (from ``hash_key()``) saves looking the secret up for every record.
    """
    # The data columns include pupil_external_id on tables about a pupil (pupil_id is the store's own).
    try:
        payload = repr(_data_values(kind)(values))
    except KeyError:  # a mapping without every column: the missing ones count as None
        payload = repr(tuple([values.get(c) for c in _data_columns(kind)]))
    hasher = _keyed_hasher(key or hash_key()).copy()
    hasher.update(f"{kind}|{payload}".encode())
    return hasher.hexdigest()


@functools.lru_cache(maxsize=None)
def _data_values(kind: str):
    # A row's data values as a tuple in column order, read in C (a quarter of the hash's time on the extract's hot path).
    columns = _data_columns(kind)
    if len(columns) == 1:
        return lambda values: (values[columns[0]],)
    return operator.itemgetter(*columns)


@functools.lru_cache(maxsize=8)
def _keyed_hasher(key: bytes):
    # A keyed BLAKE2b state after the key block: copying it saves hashing the key for every record
    # (the digest is the same as blake2b(payload, key=key)).
    return hashlib.blake2b(key=key, digest_size=32)


def hash_key() -> bytes:
    """Return the key of content hashes for the current app."""
    return _hash_key(current_app.config["SECRET_KEY"])


def one_of(column: ColumnElement, values: Iterable[Any]) -> ColumnElement:
    """``column IN values``, sent on PostgreSQL as one array parameter (``= ANY``) instead of one per value.

    A day's run looks up thousands of keys at once (removals, pupils): SQLAlchemy rendered and
    psycopg parsed a placeholder per key for every statement, a sixth of a national worker's CPU
    (issue 19). SQLite has no arrays: there it stays an IN list.
    """
    values = list(values)
    if db.session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def _insert_for(dialect: str):
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@functools.lru_cache(maxsize=None)
def special_columns(kind: str) -> tuple[str, ...]:
    """Return the special-category columns of a kind's store table (marked in portal.models.mis)."""
    return tuple(special_category_columns(_table(kind)))
