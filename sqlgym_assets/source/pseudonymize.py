"""Personal data, pseudonymized as it is read: a keyed hash (HMAC-SHA256) per value.

One lake-wide setting, ``SQLGYM_PERSONAL_DATA``: ``pseudonymize`` (the default) replaces every
value of a column the catalog tags as personal with the hex HMAC-SHA256 of its UTF-8 text under a
key of the lake's own, so equal values stay equal (and joinable) across tables and days while the
value itself never reaches the lake; ``keep`` copies them as they are. The key comes from the AWS
Secrets Manager secret ``SQLGYM_PSEUDONYMIZATION_SECRET_ID`` (production) or the variable
``SQLGYM_PSEUDONYMIZATION_KEY`` (local work), read by hand for the same secret-or-variable
fallback as the database credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from dagster_aws.secretsmanager import SecretsManagerResource

from sqlgym_assets.catalog import ColumnPolicy, TableSpec
from sqlgym_assets.source.credentials import secret_string

PERSONAL_DATA_ENV = "SQLGYM_PERSONAL_DATA"
KEY_ENV = "SQLGYM_PSEUDONYMIZATION_KEY"
KEY_SECRET_ENV = "SQLGYM_PSEUDONYMIZATION_SECRET_ID"
PSEUDONYMIZE, KEEP = "pseudonymize", "keep"
MIN_KEY_CHARACTERS = 32  # a short key lets anyone who guesses it hash every known e-mail


class PseudonymizationError(RuntimeError):
    """The personal-data setting or its key cannot be used. Never carries the key."""


@dataclass(frozen=True, repr=False)
class Pseudonymizer:
    """Replaces the personal columns of a batch with their keyed hashes."""

    key: bytes = field(repr=False)
    columns: tuple[str, ...]

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        for name in self.columns:
            index = batch.schema.get_field_index(name)
            values = batch.column(index).to_pylist()
            hashed = pa.array([None if v is None else self.digest(v) for v in values], pa.string())
            batch = batch.set_column(index, batch.schema.field(index), hashed)
        return batch

    def digest(self, value: str) -> str:
        return hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()


def personal_columns(table: TableSpec) -> tuple[str, ...]:
    return tuple(c.name for c in table.columns if c.policy is ColumnPolicy.PERSONAL)


def pseudonymizer(table: TableSpec, secretsmanager: SecretsManagerResource) -> Pseudonymizer | None:
    """The table's pseudonymizer, or None when it has no personal column or the lake keeps them."""
    columns = personal_columns(table)
    mode = os.environ.get(PERSONAL_DATA_ENV, "").strip().lower() or PSEUDONYMIZE
    if mode not in (PSEUDONYMIZE, KEEP):
        raise PseudonymizationError(
            f"{PERSONAL_DATA_ENV}={mode!r}: use {PSEUDONYMIZE!r} (the default) or {KEEP!r}"
        )
    if not columns or mode == KEEP:
        return None
    return Pseudonymizer(key=_key(table, columns, secretsmanager), columns=columns)


def _key(table: TableSpec, columns: Sequence[str], secretsmanager: SecretsManagerResource) -> bytes:
    secret_id = os.environ.get(KEY_SECRET_ENV)
    if secret_id:
        key = secret_string(secret_id, secretsmanager, purpose="the pseudonymization key as text")
        origin = f"secret {secret_id!r}"
    else:
        key = os.environ.get(KEY_ENV, "")
        origin = KEY_ENV
    if not key:
        raise PseudonymizationError(
            f"sqlgym/{table.name} has personal columns {list(columns)} and {PERSONAL_DATA_ENV} is "
            f"{PSEUDONYMIZE!r} (the default), but no key is set: set {KEY_SECRET_ENV} to a "
            f"Secrets Manager secret holding the key, or {KEY_ENV} for local work, or "
            f"{PERSONAL_DATA_ENV}={KEEP} to copy personal data as it is"
        )
    if len(key) < MIN_KEY_CHARACTERS:
        raise PseudonymizationError(
            f"the pseudonymization key from {origin} has fewer than {MIN_KEY_CHARACTERS} "
            "characters: use a long random key (for example `openssl rand -hex 32`)"
        )
    return key.encode()
