"""The catalog: validated on load, and true to the schema PostgreSQL reports for the demo DDL."""

import dataclasses

import pytest

from sqlgym_assets.assets import build_assets
from sqlgym_assets.catalog import TABLES, TABLES_BY_NAME, CatalogError, SyncMode

USERS = TABLES_BY_NAME["users"]


def test_modes_priorities_and_enabled_flags_follow_the_apps_pipeline_config() -> None:
    modes = {table.name: table.sync_mode for table in TABLES}
    incremental = {name for name, mode in modes.items() if mode is SyncMode.INCREMENTAL}
    assert incremental == {
        "users", "topics", "problems", "problem_schemas", "test_cases", "problem_sessions",
        "user_progress", "community_posts", "problem_interactions", "solutions",
    }  # fmt: skip
    assert modes["submissions"] is SyncMode.APPEND
    assert TABLES_BY_NAME["submissions"].cursor_column == "submitted_at"
    assert sum(mode is SyncMode.SNAPSHOT for mode in modes.values()) == 10
    assert {table.name for table in TABLES if not table.enabled} == {
        "cache_entries",
        "fallback_submissions",
    }
    assert {table.name for table in TABLES if table.priority == 1} == {
        "users", "topics", "problems", "submissions", "problem_submissions", "user_progress",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"primary_key": ("uuid",)}, ["'users'", "'primary_key'", "'uuid'"]),
        ({"primary_key": ()}, ["'users'", "'primary_key'"]),
        ({"cursor_column": "changed_at"}, ["'users'", "'cursor_column'", "'changed_at'"]),
        ({"cursor_column": None}, ["'users'", "'cursor_column'"]),
        ({"cursor_column": "email"}, ["'users'", "'cursor_column'", "not a timestamp"]),
        ({"columns": USERS.columns + USERS.columns[:1]}, ["'users'", "'columns'", "'id'"]),
    ],
)
def test_a_broken_table_entry_fails_definitions_naming_table_and_field(change, named) -> None:
    broken = dataclasses.replace(USERS, **change)
    with pytest.raises(CatalogError) as error:
        build_assets((broken, *TABLES[1:]))
    for part in named:
        assert part in str(error.value)


def test_a_duplicate_table_fails_definitions_naming_it() -> None:
    with pytest.raises(CatalogError, match="'users'"):
        build_assets((*TABLES, USERS))


def test_catalog_matches_the_columns_postgresql_reports(db) -> None:
    with db.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0
              AND NOT a.attisdropped
            ORDER BY c.relname, a.attnum
            """
        )
        reported: dict[str, list[tuple[str, str, bool]]] = {}
        for table, column, pg_type, not_null in cursor.fetchall():
            reported.setdefault(table, []).append((column, pg_type, not_null))
        cursor.execute(
            """
            SELECT c.conrelid::regclass::text, array_agg(a.attname ORDER BY a.attnum)
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
            WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace
            GROUP BY 1
            """
        )
        primary_keys = {table: tuple(columns) for table, columns in cursor.fetchall()}

    catalog = {
        table.name: [(c.name, c.pg_type, c.required) for c in table.columns] for table in TABLES
    }
    assert catalog == reported
    assert primary_keys == {table.name: table.primary_key for table in TABLES}
