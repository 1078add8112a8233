"""Where the database credentials come from: an AWS Secrets Manager secret, or a URL.

A secret wins over the URL; neither value ever reaches a log, an error or the UI.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from urllib.parse import quote

import botocore.exceptions
import sqlalchemy as sa
from dagster_aws.secretsmanager import SecretsManagerResource

from sqlgym_assets.aws import region_from_environment

SECRET_ID_ENV = "SQLGYM_DB_SECRET_ID"
DATABASE_URL_ENV = "SQLGYM_DATABASE_URL"
SECRET_KEYS = ("host", "port", "database", "username", "password")
# RDS-managed secrets name the database "dbname" (and add "engine", which is ignored).
SECRET_KEY_ALIASES = {"database": "dbname"}
OPTIONAL_SECRET_KEYS = ("sslmode", "sslrootcert")
LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})


class DatabaseConfigurationError(RuntimeError):
    """The credentials could not be found or read. Never carries a credential's value."""


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    """A libpq URI and where it came from; repr-free so it never lands in a log."""

    uri: str = field(repr=False)
    origin: str  # "secret 'name'" or the environment variable: safe to show
    sensitive: tuple[str, ...] = field(repr=False)  # values to scrub from driver messages

    def redact(self, text: str) -> str:
        for value in sorted(self.sensitive, key=len, reverse=True):
            if value:
                text = text.replace(value, "***")
        return text

    def with_default(self, **parameters: str) -> ConnectionSettings:
        """The same credentials with libpq parameters added where the source set none."""
        url = sa.engine.make_url(self.uri)
        missing = {name: value for name, value in parameters.items() if name not in url.query}
        if not missing:
            return self
        uri = url.update_query_dict(missing).render_as_string(hide_password=False)
        return ConnectionSettings(uri=uri, origin=self.origin, sensitive=(*self.sensitive, uri))


class _DropSecretBodies(logging.Filter):
    """botocore logs every response body at DEBUG, GetSecretValue's included: drop those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SecretString" not in record.getMessage()


_SECRET_BODY_FILTER = _DropSecretBodies()


def _keep_secret_bodies_out_of_logs() -> None:
    for name in ("botocore.parsers", "botocore.endpoint"):
        logger = logging.getLogger(name)
        if _SECRET_BODY_FILTER not in logger.filters:
            logger.addFilter(_SECRET_BODY_FILTER)


_secret_cache: dict[tuple[str, str | None, str | None], str] = {}
_secret_cache_lock = threading.Lock()


def _is_local(host: str | None) -> bool:
    return host is None or host in LOCAL_HOSTS or host.startswith("/")


def settings_from_secret(secret_id: str, secret_string: str) -> ConnectionSettings:
    origin = f"secret {secret_id!r}"
    try:
        values = json.loads(secret_string)
    except ValueError:
        values = None
    expected = (
        f"it must hold {list(SECRET_KEYS)} ('dbname' for 'database' as RDS writes it; "
        f"optional {list(OPTIONAL_SECRET_KEYS)})"
    )
    if not isinstance(values, dict):
        raise DatabaseConfigurationError(
            f"AWS Secrets Manager {origin} is not a JSON object; {expected}"
        ) from None
    for key, alias in SECRET_KEY_ALIASES.items():
        if values.get(key) in (None, ""):
            values[key] = values.get(alias)
    missing = [key for key in SECRET_KEYS if values.get(key) in (None, "")]
    if missing:
        raise DatabaseConfigurationError(
            f"AWS Secrets Manager {origin} lacks the key(s) {missing}; {expected}"
        )
    try:
        port = int(values["port"])
    except (TypeError, ValueError):
        raise DatabaseConfigurationError(
            f"AWS Secrets Manager {origin}: key 'port' is not a whole number"
        ) from None
    host = str(values["host"])
    query = {"sslmode": str(values.get("sslmode") or ("prefer" if _is_local(host) else "require"))}
    if values.get("sslrootcert"):
        query["sslrootcert"] = str(values["sslrootcert"])
    if host.startswith("/"):
        # A socket directory: libpq takes it only as the host query parameter.
        query["host"] = host
    url = sa.engine.URL.create(
        "postgresql",
        username=str(values["username"]),
        password=str(values["password"]),
        host=None if host.startswith("/") else host,
        port=port,
        database=str(values["database"]),
        query=query,
    )
    uri = url.render_as_string(hide_password=False)
    sensitive = (str(values["password"]), quote(str(values["password"]), safe=""), uri)
    return ConnectionSettings(uri=uri, origin=origin, sensitive=sensitive)


def settings_from_url(url: str) -> ConnectionSettings:
    origin = f"environment variable {DATABASE_URL_ENV}"
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseConfigurationError(
            f"{origin} is not a PostgreSQL URL; use postgresql://user:password@host:port/database"
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise DatabaseConfigurationError(
            f"{origin} names a {parsed.get_backend_name()!r} database; use postgresql://..."
        )
    query = dict(parsed.query)
    if "sslmode" not in query and not _is_local(parsed.host or query.get("host")):
        query["sslmode"] = "require"
    parsed = parsed.set(drivername="postgresql", query=query)
    uri = parsed.render_as_string(hide_password=False)
    password = parsed.password or ""
    return ConnectionSettings(
        uri=uri, origin=origin, sensitive=(str(password), quote(str(password), safe=""), url, uri)
    )


def connection_settings(
    secret_id: str | None, secretsmanager: SecretsManagerResource
) -> ConnectionSettings:
    """The credentials a run connects with: the secret, else the URL.

    Read from the environment by hand, when a run starts, rather than with Dagster's ``EnvVar``:
    either variable may be unset, and which one is set decides where the credentials come from,
    a fallback ``EnvVar`` cannot express.
    """
    secret_id = secret_id or os.environ.get(SECRET_ID_ENV)
    if secret_id:
        return _settings_from_secrets_manager(secret_id, secretsmanager)
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return settings_from_url(url)
    raise DatabaseConfigurationError(
        f"no database configured: set {SECRET_ID_ENV} to an AWS Secrets Manager secret "
        f"holding {list(SECRET_KEYS)}, or {DATABASE_URL_ENV} to a postgresql:// URL"
    )


def _settings_from_secrets_manager(
    secret_id: str, secrets: SecretsManagerResource
) -> ConnectionSettings:
    return settings_from_secret(
        secret_id,
        secret_string(
            secret_id,
            secrets,
            purpose=f"the database credentials as a JSON string with {list(SECRET_KEYS)}",
        ),
    )


def secret_string(secret_id: str, secrets: SecretsManagerResource, purpose: str) -> str:
    """The secret's string, fetched once per process; errors name the secret, never a value."""
    region = secrets.region_name or region_from_environment()
    cache_key = (secret_id, region, secrets.endpoint_url)
    with _secret_cache_lock:
        if cache_key in _secret_cache:
            return _secret_cache[cache_key]
        _keep_secret_bodies_out_of_logs()
        if region != secrets.region_name:
            secrets = secrets.model_copy(update={"region_name": region})
        try:
            response = secrets.get_client().get_secret_value(SecretId=secret_id)
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "error")
            raise DatabaseConfigurationError(
                f"AWS Secrets Manager could not return secret {secret_id!r} ({code}); check "
                f"the secret's name, the region ({region or 'unset'}) and this role's "
                "secretsmanager:GetSecretValue permission"
            ) from None
        except botocore.exceptions.BotoCoreError as error:
            raise DatabaseConfigurationError(
                f"AWS Secrets Manager could not be reached for secret {secret_id!r} "
                f"({type(error).__name__}); set AWS_REGION and credentials"
            ) from None
        if "SecretString" not in response:
            raise DatabaseConfigurationError(
                f"AWS Secrets Manager secret {secret_id!r} holds binary data; store {purpose}"
            )
        _secret_cache[cache_key] = response["SecretString"]
        return response["SecretString"]
