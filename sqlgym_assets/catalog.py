"""The 21 SQLGym tables the lake mirrors: the lake's contract, one schema per table on every day.

Column types are spelled as PostgreSQL's ``format_type`` prints them, so the catalog can be compared
with the live source as it is; every file of a table has the Arrow schema these types map to,
whatever the live source says (``source/plan.py`` converts what converts without loss, and fails
on the rest). Credential columns are listed so they are known, and never read. Modes and
priorities follow the app's own pipeline config.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass


class SyncMode(enum.Enum):
    INCREMENTAL = "incremental"  # partition D: rows whose cursor (updated_at) is in [D, D+1)
    APPEND = "append"  # partition D: rows created in [D, D+1); rows never change
    SNAPSHOT = "snapshot"  # partition D: the whole table as read by the latest run on day D


class ColumnPolicy(enum.Enum):
    PLAIN = "plain"
    PERSONAL = "personal"  # personal data: tagged, pseudonymized where the lake says so
    CREDENTIAL = "credential"  # never selected from the source: in no file, metadata or log


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    required: bool = False  # NOT NULL in the source
    policy: ColumnPolicy = ColumnPolicy.PLAIN
    description: str = ""  # one line, shown in the UI's Columns table


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    group: str
    sync_mode: SyncMode
    priority: int  # 1 runs first
    columns: tuple[Column, ...]
    cursor_column: str | None = None  # the timestamp that places a row in a day
    primary_key: tuple[str, ...] = ("id",)
    enabled: bool = True  # disabled tables are assets but are never scheduled
    # A legacy table: still in the production database, gone from the app's current models, so a
    # fresh, dev or UAT database lacks it. Its absence is reported, not failed.
    legacy: bool = False

    @property
    def lake_columns(self) -> tuple[Column, ...]:
        """The columns the lake holds: every column but the credentials."""
        return tuple(c for c in self.columns if c.policy is not ColumnPolicy.CREDENTIAL)

    @property
    def column_names(self) -> tuple[str, ...]:
        """The names of the lake's columns, in the files' order."""
        return tuple(column.name for column in self.lake_columns)

    @property
    def all_column_names(self) -> tuple[str, ...]:
        """Every column the source table has by the catalog, credentials included."""
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


TEXT_TYPES = ("text", "character varying")


class CatalogError(ValueError):
    """The catalog contradicts itself; the message names the table and the field."""


def validate_catalog(tables: tuple[TableSpec, ...]) -> None:
    duplicates = sorted(name for name, n in Counter(t.name for t in tables).items() if n > 1)
    if duplicates:
        raise CatalogError(
            f"catalog lists table(s) {duplicates} more than once: keep one entry each"
        )
    for table in tables:
        _validate_table(table)


def _validate_table(table: TableSpec) -> None:
    where = f"catalog table {table.name!r}"
    names = table.all_column_names
    repeated = sorted(name for name, n in Counter(names).items() if n > 1)
    if repeated:
        raise CatalogError(f"{where}: field 'columns' repeats {repeated}")
    if not table.primary_key:
        raise CatalogError(f"{where}: field 'primary_key' is empty; name the key column(s)")
    for key in table.primary_key:
        if key not in names:
            raise CatalogError(f"{where}: field 'primary_key' names unknown column {key!r}")
    if table.sync_mode is SyncMode.SNAPSHOT:
        if table.cursor_column is not None:
            raise CatalogError(f"{where}: field 'cursor_column' must be empty for a snapshot table")
    elif table.cursor_column is None:
        raise CatalogError(
            f"{where}: field 'cursor_column' is missing; a {table.sync_mode.value} table needs "
            "the timestamp column that places a row in a day"
        )
    elif table.cursor_column not in names:
        raise CatalogError(
            f"{where}: field 'cursor_column' names unknown column {table.cursor_column!r}"
        )
    elif not table.column(table.cursor_column).pg_type.startswith("timestamp"):
        raise CatalogError(
            f"{where}: field 'cursor_column' {table.cursor_column!r} is not a timestamp"
        )
    for column in table.columns:
        if column.policy is ColumnPolicy.PERSONAL and not column.pg_type.startswith(TEXT_TYPES):
            raise CatalogError(
                f"{where}: personal column {column.name!r} is {column.pg_type}; only text is "
                "pseudonymized, so tag text columns only"
            )
    credentials = {c.name for c in table.columns if c.policy is ColumnPolicy.CREDENTIAL}
    for name in sorted(credentials & {*table.primary_key, table.cursor_column}):
        raise CatalogError(
            f"{where}: column {name!r} is a credential, never read, so it cannot be a key or cursor"
        )
    if table.priority < 1:
        raise CatalogError(f"{where}: field 'priority' must be 1 or more")


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        name="users",
        description="Core user accounts and authentication.",
        group="users",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=1,
        columns=(
            Column("id", "character varying", required=True),
            Column("username", "character varying(50)", required=True),
            Column("email", "character varying(255)", required=True, policy=ColumnPolicy.PERSONAL),
            Column("password_hash", "text", policy=ColumnPolicy.CREDENTIAL),
            Column("first_name", "character varying(50)", policy=ColumnPolicy.PERSONAL),
            Column("last_name", "character varying(50)", policy=ColumnPolicy.PERSONAL),
            Column("company_name", "character varying(100)"),
            Column("linkedin_url", "text", policy=ColumnPolicy.PERSONAL),
            Column("profile_image_url", "text", policy=ColumnPolicy.PERSONAL),
            Column("google_id", "character varying(255)", policy=ColumnPolicy.PERSONAL),
            Column("auth_provider", "character varying(20)", required=True),
            Column("problems_solved", "integer", required=True),
            Column("premium", "boolean", required=True),
            Column("is_admin", "boolean", required=True),
            Column("email_verified", "boolean", required=True),
            Column("verification_token", "character varying(255)", policy=ColumnPolicy.CREDENTIAL),
            Column("verification_token_expires", "timestamp without time zone"),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="followers",
        description="User follower relationships.",
        group="users",
        sync_mode=SyncMode.SNAPSHOT,
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("follower_id", "character varying", required=True),
            Column("following_id", "character varying", required=True),
            Column("created_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="helpful_links",
        description="User-shared educational resources.",
        group="users",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("title", "character varying(200)", required=True),
            Column("url", "text", required=True),
            Column("created_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="topics",
        description="SQL topic/category hierarchy.",
        group="content",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=1,
        columns=(
            Column("id", "character varying", required=True),
            Column("name", "character varying(100)", required=True),
            Column("description", "text"),
            Column("difficulty_level", "difficultylevel", required=True),
            Column("order_index", "integer"),
            Column("parent_topic_id", "character varying"),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="problems",
        description="SQL coding problems/challenges.",
        group="content",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=1,
        columns=(
            Column("id", "character varying", required=True),
            Column("title", "character varying(200)", required=True),
            Column("question", "jsonb", required=True),
            Column("difficulty", "character varying(20)", required=True),
            Column("tags", "json", required=True),
            Column("hints", "json", required=True),
            Column("company", "character varying(100)"),
            Column("topic_id", "character varying"),
            Column("premium", "boolean"),
            Column("s3_data_source", "jsonb"),
            Column("master_solution", "jsonb"),
            Column("expected_display", "jsonb"),
            Column("s3_datasets", "jsonb"),
            Column("expected_hash", "character varying(255)"),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="problem_schemas",
        description="Database schemas for problem sandboxes.",
        group="content",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=2,
        legacy=True,
        columns=(
            Column("id", "character varying", required=True),
            Column("problem_id", "character varying", required=True),
            Column("table_name", "character varying(100)", required=True),
            Column("schema_definition", "jsonb", required=True),
            Column("sample_data", "jsonb"),
            Column("indexes", "json"),
            Column("constraints", "json"),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="test_cases",
        description="Test cases for problem validation.",
        group="content",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("problem_id", "character varying", required=True),
            Column("name", "character varying(200)", required=True),
            Column("description", "text"),
            Column("input_data", "jsonb", required=True),
            Column("expected_output", "jsonb", required=True),
            Column("expected_output_source", "jsonb"),
            Column("preview_expected_output", "jsonb"),
            Column("validation_rules", "jsonb"),
            Column("is_hidden", "boolean"),
            Column("order_index", "integer"),
            Column("timeout_seconds", "integer"),
            Column("memory_limit_mb", "integer"),
            Column("display_limit", "integer"),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="submissions",
        description="User SQL query submissions.",
        group="progress",
        sync_mode=SyncMode.APPEND,
        cursor_column="submitted_at",
        priority=1,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("problem_id", "character varying", required=True),
            Column("query", "text", required=True),
            Column("is_correct", "boolean", required=True),
            Column("execution_time", "integer"),
            Column("submitted_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="problem_submissions",
        description="Detailed submission tracking with async job processing.",
        group="progress",
        sync_mode=SyncMode.SNAPSHOT,
        priority=1,
        legacy=True,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("problem_id", "character varying", required=True),
            Column("sql_query", "text", required=True),
            Column("status", "character varying(20)", required=True),
            Column("rows_returned", "integer"),
            Column("execution_time_ms", "integer"),
            Column("error_message", "text"),
            Column("result_data", "jsonb"),
            Column("created_at", "timestamp without time zone", required=True),
            Column("completed_at", "timestamp without time zone"),
        ),
    ),
    TableSpec(
        name="problem_sessions",
        description="Track time spent on each problem.",
        group="progress",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("problem_id", "character varying", required=True),
            Column("first_query_at", "timestamp with time zone"),
            Column("completed_at", "timestamp with time zone"),
            Column("total_time_spent_seconds", "integer"),
            Column("created_at", "timestamp with time zone", required=True),
            Column("updated_at", "timestamp with time zone", required=True),
        ),
    ),
    TableSpec(
        name="execution_results",
        description="Detailed execution results per test case.",
        group="progress",
        sync_mode=SyncMode.SNAPSHOT,
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("submission_id", "character varying", required=True),
            Column("test_case_id", "character varying", required=True),
            Column("status", "execution_status", required=True),
            Column("execution_time_ms", "integer"),
            Column("memory_used_mb", "double precision"),
            Column("rows_affected", "integer"),
            Column("query_result", "jsonb"),
            Column("error_message", "text"),
            Column("is_correct", "boolean", required=True),
            Column("validation_details", "jsonb"),
            Column("created_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="user_progress",
        description="Aggregate user statistics per topic.",
        group="progress",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=1,
        legacy=True,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("topic_id", "character varying", required=True),
            Column("problems_attempted", "integer"),
            Column("problems_solved", "integer"),
            Column("total_submissions", "integer"),
            Column("successful_submissions", "integer"),
            Column("average_execution_time_ms", "double precision"),
            Column("best_execution_time_ms", "double precision"),
            Column("total_time_spent_minutes", "integer"),
            Column("current_difficulty", "difficultylevel"),
            Column("highest_difficulty_solved", "difficultylevel"),
            Column("hint_usage_count", "integer"),
            Column("average_attempts_per_problem", "double precision"),
            Column("streak_count", "integer"),
            Column("max_streak_count", "integer"),
            Column("experience_points", "integer"),
            Column("first_attempt_at", "timestamp without time zone"),
            Column("last_activity_at", "timestamp without time zone"),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="badges",
        description="Achievement badge definitions.",
        group="gamification",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column("id", "character varying", required=True),
            Column("name", "character varying(100)", required=True),
            Column("description", "text", required=True),
            Column("icon_url", "text"),
            Column("criteria", "jsonb", required=True),
            Column("points_reward", "integer"),
            Column("rarity", "character varying(20)"),
            Column("created_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="user_badges",
        description="User badge inventory.",
        group="gamification",
        sync_mode=SyncMode.SNAPSHOT,
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("badge_id", "character varying", required=True),
            Column("earned_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="community_posts",
        description="User-generated community posts.",
        group="community",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("problem_id", "character varying"),
            Column("content", "text", required=True),
            Column("code_snippet", "text"),
            Column("likes", "integer", required=True),
            Column("comments", "integer", required=True),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="post_likes",
        description="User likes on community posts.",
        group="community",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("post_id", "character varying", required=True),
            Column("created_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="post_comments",
        description="Comments on community posts.",
        group="community",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("post_id", "character varying", required=True),
            Column("parent_id", "character varying"),
            Column("content", "text", required=True),
            Column("created_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="problem_interactions",
        description="User bookmarks and votes on problems.",
        group="community",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("user_id", "character varying", required=True),
            Column("problem_id", "character varying", required=True),
            Column("bookmark", "boolean", required=True),
            Column("upvote", "boolean", required=True),
            Column("downvote", "boolean", required=True),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="solutions",
        description="User-submitted and official solutions.",
        group="solutions",
        sync_mode=SyncMode.INCREMENTAL,
        cursor_column="updated_at",
        priority=2,
        columns=(
            Column("id", "character varying", required=True),
            Column("problem_id", "character varying", required=True),
            Column("created_by", "character varying", required=True),
            Column("title", "character varying(200)", required=True),
            Column("content", "text", required=True),
            Column("sql_code", "text", required=True),
            Column("is_official", "boolean", required=True),
            Column("created_at", "timestamp without time zone", required=True),
            Column("updated_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="cache_entries",
        description="PostgreSQL fallback cache when Redis is unavailable.",
        group="system",
        sync_mode=SyncMode.SNAPSHOT,
        priority=4,
        enabled=False,
        columns=(
            Column("id", "character varying", required=True),
            Column("cache_key", "character varying(500)", required=True),
            Column("namespace", "character varying(100)", required=True),
            Column("data", "jsonb", required=True),
            Column("expires_at", "timestamp without time zone", required=True),
            Column("created_at", "timestamp without time zone", required=True),
        ),
    ),
    TableSpec(
        name="fallback_submissions",
        description="Queue fallback for when Redis is unavailable.",
        group="system",
        sync_mode=SyncMode.SNAPSHOT,
        priority=4,
        enabled=False,
        columns=(
            Column("id", "character varying", required=True),
            Column("job_id", "character varying(100)", required=True),
            Column("data", "jsonb", required=True),
            Column("status", "character varying(20)", required=True),
            Column("created_at", "timestamp without time zone", required=True),
            Column("processed_at", "timestamp without time zone"),
        ),
    ),
)

TABLES_BY_NAME: dict[str, TableSpec] = {table.name: table for table in TABLES}
