"""TLS to the database: verify-full checks the server's certificate, require only encrypts.

The tests' PostgreSQL is reached through a TLS endpoint on 127.0.0.1 (conftest's ``tls_server``)
whose certificate is signed by the tests' own CA; another CA of their own stands in for a man in
the middle's.
"""

from __future__ import annotations

from dagster import RetryPolicy
from sqlalchemy.engine import make_url

from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import failed_once, materialize_tables, point_project_at, today

USERS = TABLES_BY_NAME["users"]


def _with(url: str, **query: str) -> str:
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def test_verify_full_with_the_servers_ca_reads_the_partition(
    tls_server, monkeypatch, tmp_path
) -> None:
    url, ca, _ = tls_server
    point_project_at(monkeypatch, _with(url, sslmode="verify-full"), tmp_path / "lake")

    result = materialize_tables([USERS], today(), postgres=PostgresResource(sslrootcert=str(ca)))

    assert result.success


def test_verify_full_refuses_a_certificate_of_another_ca_once(
    tls_server, monkeypatch, tmp_path
) -> None:
    url, _, other_ca = tls_server
    lake = point_project_at(
        monkeypatch, _with(url, sslmode="verify-full", sslrootcert=str(other_ca)), tmp_path / "lake"
    )

    result = materialize_tables(
        [USERS], today(), raise_on_error=False, retry_policy=RetryPolicy(max_retries=2, delay=0.1)
    )

    message = failed_once(result)
    assert "certificate verify failed" in message
    assert not lake.exists() or not any(lake.rglob("*.parquet"))


def test_require_encrypts_but_accepts_a_certificate_no_one_verified(
    tls_server, monkeypatch, tmp_path
) -> None:
    """Why verify-full is the production setting: require, without a CA bundle, connects to
    whoever answers with any certificate (here one signed by a CA the client never saw)."""
    url, _, _ = tls_server
    point_project_at(monkeypatch, _with(url, sslmode="require"), tmp_path / "lake")

    assert materialize_tables([USERS], today()).success
