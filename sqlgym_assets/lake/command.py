"""`sqlgym-lake`: tasks on the lake itself, outside Dagster runs.

- ``sql --engine duckdb|athena|spark`` prints the SQL that gives every table of the catalog its
  current-state view ``<table>`` and its ``<table>_history`` view (``views.py``);
- ``shell`` opens DuckDB on the lake with those views created, for a person to explore;
- ``lifecycle`` adds the bucket rule that aborts multipart uploads left unfinished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from sqlgym_assets.catalog import TABLES
from sqlgym_assets.lake.layout import (
    LAKE_URL_ENV,
    LakeConfigurationError,
    LakeSettings,
    lake_settings,
)
from sqlgym_assets.lake.lifecycle import apply_abort_incomplete_uploads_rule
from sqlgym_assets.lake.views import athena_sql, duckdb_sql, lake_contents, spark_sql

PROMPT, CONTINUATION = "sqlgym> ", "   ...> "


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sqlgym-lake", description=__doc__.splitlines()[0])
    tasks = parser.add_subparsers(dest="task", required=True)

    def add_task(name: str, help: str) -> argparse.ArgumentParser:
        task = tasks.add_parser(name, help=help)
        task.add_argument(
            "--lake",
            default=os.environ.get(LAKE_URL_ENV),
            help=f"s3://bucket/prefix or a local directory (default: ${LAKE_URL_ENV})",
        )
        return task

    sql = add_task("sql", "print the SQL of the current-state and history views of every table")
    sql.add_argument("--engine", choices=("duckdb", "athena", "spark"), required=True)
    sql.add_argument("--database", default="sqlgym", help="Athena database (default: sqlgym)")
    shell = add_task("shell", "open DuckDB on the lake with every table's views created")
    shell.add_argument("-c", "--command", help="run this SQL, print its result and exit")
    lifecycle = add_task(
        "lifecycle", "add the bucket lifecycle rule that aborts multipart uploads left unfinished"
    )
    lifecycle.add_argument("--days", type=int, default=1, help="days after an upload starts")
    args = parser.parse_args(argv)

    try:
        settings = lake_settings(args.lake)
        if args.task == "lifecycle":
            rule = apply_abort_incomplete_uploads_rule(settings, days=args.days)
            print(json.dumps(rule, indent=2))
        elif args.task == "sql":
            print(view_sql(settings, args.engine, args.database), end="")
        else:
            open_shell(settings, args.command)
    except LakeConfigurationError as error:
        parser.exit(2, f"sqlgym-lake {args.task}: {error} (--lake)\n")


def view_sql(settings: LakeSettings, engine: str, database: str = "sqlgym") -> str:
    contents = lake_contents(settings, TABLES)
    if engine == "athena":
        return athena_sql(settings, TABLES, contents, database)
    return (duckdb_sql if engine == "duckdb" else spark_sql)(settings, TABLES, contents)


def open_shell(
    settings: LakeSettings, command: str | None, read_line: Callable[[str], str] = input
) -> None:
    try:
        import duckdb
    except ImportError:
        sys.exit(
            "sqlgym-lake shell runs DuckDB, which is not installed: "
            "pip install 'sqlgym_assets[duckdb]' (make install does)"
        )
    connection = duckdb.connect()
    connection.execute(view_sql(settings, "duckdb"))
    if command is not None:
        _show(connection, command)
        return
    print(
        f"DuckDB {duckdb.__version__} on the lake {settings.url}\n"
        f"Views: {', '.join(table.name for table in TABLES)} (current state), and each one's "
        "<table>_history (every file, with partition_date).\n"
        "End a statement with ';'. Ctrl-D leaves."
    )
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    statement = ""
    while True:
        try:
            line = read_line(CONTINUATION if statement else PROMPT)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print()
            statement = ""
            continue
        statement += line + "\n"
        if statement.rstrip().endswith(";"):
            _show(connection, statement)
            statement = ""


def _show(connection: object, statement: str) -> None:
    import duckdb

    try:
        result = connection.sql(statement)  # type: ignore[attr-defined]
    except duckdb.Error as error:
        print(error)
        return
    if result is not None:
        result.show()


if __name__ == "__main__":
    main()
