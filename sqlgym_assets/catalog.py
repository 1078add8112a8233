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
    for name in table.primary_key:
        # Key sets hold the source's keys as they are, to be matched with the files' keys.
        if table.column(name).policy is ColumnPolicy.PERSONAL:
            raise CatalogError(
                f"{where}: key column {name!r} is personal data; a key must be plain, since the "
                "lake's key sets are matched with the files' keys"
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "username",
                "character varying(50)",
                required=True,
                description="Public user name, unique.",
            ),
            Column(
                "email",
                "character varying(255)",
                required=True,
                policy=ColumnPolicy.PERSONAL,
                description="E-mail address, unique; personal data.",
            ),
            Column(
                "password_hash",
                "text",
                policy=ColumnPolicy.CREDENTIAL,
                description="Password hash: a credential, never copied to the lake.",
            ),
            Column(
                "first_name",
                "character varying(50)",
                policy=ColumnPolicy.PERSONAL,
                description="First name; personal data.",
            ),
            Column(
                "last_name",
                "character varying(50)",
                policy=ColumnPolicy.PERSONAL,
                description="Last name; personal data.",
            ),
            Column(
                "company_name",
                "character varying(100)",
                description="Company the user gave, if any.",
            ),
            Column(
                "linkedin_url",
                "text",
                policy=ColumnPolicy.PERSONAL,
                description="LinkedIn profile URL; personal data.",
            ),
            Column(
                "profile_image_url",
                "text",
                policy=ColumnPolicy.PERSONAL,
                description="Profile picture URL; personal data.",
            ),
            Column(
                "google_id",
                "character varying(255)",
                policy=ColumnPolicy.PERSONAL,
                description="Google account id for Google sign-in; personal data.",
            ),
            Column(
                "auth_provider",
                "character varying(20)",
                required=True,
                description="How the user signs in: email, google or admin_key.",
            ),
            Column(
                "problems_solved",
                "integer",
                required=True,
                description="Number of problems the user has solved.",
            ),
            Column(
                "premium",
                "boolean",
                required=True,
                description="Whether the user has a premium subscription.",
            ),
            Column(
                "is_admin",
                "boolean",
                required=True,
                description="Whether the user is an administrator.",
            ),
            Column(
                "email_verified",
                "boolean",
                required=True,
                description="Whether the e-mail address has been verified.",
            ),
            Column(
                "verification_token",
                "character varying(255)",
                policy=ColumnPolicy.CREDENTIAL,
                description="E-mail verification token: a credential, never copied to the lake.",
            ),
            Column(
                "verification_token_expires",
                "timestamp without time zone",
                description="When the verification token expires (UTC).",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
        ),
    ),
    TableSpec(
        name="followers",
        description="User follower relationships.",
        group="users",
        sync_mode=SyncMode.SNAPSHOT,
        priority=2,
        columns=(
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "follower_id",
                "character varying",
                required=True,
                description="The user who follows (users.id).",
            ),
            Column(
                "following_id",
                "character varying",
                required=True,
                description="The user who is followed (users.id).",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
        ),
    ),
    TableSpec(
        name="helpful_links",
        description="User-shared educational resources.",
        group="users",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id",
                "character varying",
                required=True,
                description="The user who shared the link (users.id).",
            ),
            Column(
                "title",
                "character varying(200)",
                required=True,
                description="Title of the shared resource.",
            ),
            Column("url", "text", required=True, description="Address of the shared resource."),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "name", "character varying(100)", required=True, description="Topic name, unique."
            ),
            Column("description", "text", description="What the topic covers."),
            Column(
                "difficulty_level",
                "difficultylevel",
                required=True,
                description="Difficulty (enum difficultylevel: BEGINNER to EXPERT).",
            ),
            Column(
                "order_index", "integer", description="Position of the topic in the curriculum."
            ),
            Column(
                "parent_topic_id",
                "character varying",
                description="The parent topic (topics.id), for sub-topics.",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column("title", "character varying(200)", required=True, description="Problem title."),
            Column(
                "question",
                "jsonb",
                required=True,
                description="The problem as JSON: markdown text, tables with sample rows, output.",
            ),
            Column(
                "difficulty",
                "character varying(20)",
                required=True,
                description="Difficulty as plain text: Easy, Medium or Hard.",
            ),
            Column("tags", "json", required=True, description="JSON array of tag strings."),
            Column("hints", "json", required=True, description="JSON array of hint strings."),
            Column(
                "company",
                "character varying(100)",
                description="Company the problem is associated with, if any.",
            ),
            Column("topic_id", "character varying", description="The topic (topics.id)."),
            Column("premium", "boolean", description="Whether only premium users see the problem."),
            Column(
                "s3_data_source",
                "jsonb",
                description="JSON pointer to the problem's dataset in S3.",
            ),
            Column(
                "master_solution",
                "jsonb",
                description="JSON rows of the reference solution's result.",
            ),
            Column(
                "expected_display",
                "jsonb",
                description="JSON rows shown to the user as the expected output.",
            ),
            Column(
                "s3_datasets", "jsonb", description="JSON array of the problem's datasets in S3."
            ),
            Column(
                "expected_hash",
                "character varying(255)",
                description="MD5 hex of the expected result, for quick comparison.",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "problem_id",
                "character varying",
                required=True,
                description="The problem (problems.id).",
            ),
            Column(
                "table_name",
                "character varying(100)",
                required=True,
                description="Name of the sandbox table.",
            ),
            Column(
                "schema_definition",
                "jsonb",
                required=True,
                description="JSON definition of the sandbox table's columns.",
            ),
            Column("sample_data", "jsonb", description="JSON rows loaded into the sandbox table."),
            Column("indexes", "json", description="JSON array of the sandbox table's indexes."),
            Column(
                "constraints", "json", description="JSON array of the sandbox table's constraints."
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "problem_id",
                "character varying",
                required=True,
                description="The problem (problems.id).",
            ),
            Column("name", "character varying(200)", required=True, description="Test case name."),
            Column("description", "text", description="What the test case checks."),
            Column(
                "input_data",
                "jsonb",
                required=True,
                description="JSON input of the test case (often {}).",
            ),
            Column(
                "expected_output",
                "jsonb",
                required=True,
                description="JSON rows the query must return.",
            ),
            Column(
                "expected_output_source",
                "jsonb",
                description="JSON pointer to the expected output in S3.",
            ),
            Column(
                "preview_expected_output",
                "jsonb",
                description="JSON rows shown as a preview of the expected output.",
            ),
            Column(
                "validation_rules", "jsonb", description="JSON rules the result is validated with."
            ),
            Column(
                "is_hidden", "boolean", description="Whether the test case is hidden from the user."
            ),
            Column(
                "order_index",
                "integer",
                description="Position of the test case within its problem.",
            ),
            Column(
                "timeout_seconds", "integer", description="Time limit for the query, in seconds."
            ),
            Column("memory_limit_mb", "integer", description="Memory limit for the query, in MB."),
            Column("display_limit", "integer", description="How many result rows are displayed."),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The user (users.id)."
            ),
            Column(
                "problem_id",
                "character varying",
                required=True,
                description="The problem (problems.id).",
            ),
            Column("query", "text", required=True, description="The SQL the user submitted."),
            Column(
                "is_correct",
                "boolean",
                required=True,
                description="Whether the submission solved the problem.",
            ),
            Column("execution_time", "integer", description="Execution time of the query, in ms."),
            Column(
                "submitted_at",
                "timestamp without time zone",
                required=True,
                description="When the user submitted (UTC); places the row in its day.",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The user (users.id)."
            ),
            Column(
                "problem_id",
                "character varying",
                required=True,
                description="The problem (problems.id).",
            ),
            Column("sql_query", "text", required=True, description="The SQL the user submitted."),
            Column(
                "status",
                "character varying(20)",
                required=True,
                description="Job status: queued, processing, completed or failed.",
            ),
            Column("rows_returned", "integer", description="Number of rows the query returned."),
            Column(
                "execution_time_ms", "integer", description="Execution time of the query, in ms."
            ),
            Column("error_message", "text", description="The error the query raised, if any."),
            Column("result_data", "jsonb", description="JSON result of the query."),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "completed_at",
                "timestamp without time zone",
                description="When the job completed (UTC).",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The user (users.id)."
            ),
            Column(
                "problem_id",
                "character varying",
                required=True,
                description="The problem (problems.id).",
            ),
            Column(
                "first_query_at",
                "timestamp with time zone",
                description="When the user first ran a query on the problem.",
            ),
            Column(
                "completed_at",
                "timestamp with time zone",
                description="When the user solved the problem.",
            ),
            Column(
                "total_time_spent_seconds",
                "integer",
                description="Time spent on the problem, in seconds.",
            ),
            Column(
                "created_at",
                "timestamp with time zone",
                required=True,
                description="When the session started.",
            ),
            Column(
                "updated_at",
                "timestamp with time zone",
                required=True,
                description="When the app last changed the session; places the row in its day.",
            ),
        ),
    ),
    TableSpec(
        name="execution_results",
        description="Detailed execution results per test case.",
        group="progress",
        sync_mode=SyncMode.SNAPSHOT,
        priority=2,
        columns=(
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "submission_id",
                "character varying",
                required=True,
                description="The submission (submissions.id).",
            ),
            Column(
                "test_case_id",
                "character varying",
                required=True,
                description="The test case (test_cases.id).",
            ),
            Column(
                "status",
                "execution_status",
                required=True,
                description="Outcome: SUCCESS, ERROR, TIMEOUT or MEMORY_LIMIT (enum).",
            ),
            Column("execution_time_ms", "integer", description="Execution time, in ms."),
            Column("memory_used_mb", "double precision", description="Memory used, in MB."),
            Column(
                "rows_affected",
                "integer",
                description="Number of rows the query returned or changed.",
            ),
            Column("query_result", "jsonb", description="JSON result of the query."),
            Column("error_message", "text", description="The error the query raised, if any."),
            Column(
                "is_correct",
                "boolean",
                required=True,
                description="Whether the result matched the test case.",
            ),
            Column(
                "validation_details",
                "jsonb",
                description="JSON details of the comparison with the expected output.",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The user (users.id)."
            ),
            Column(
                "topic_id", "character varying", required=True, description="The topic (topics.id)."
            ),
            Column(
                "problems_attempted",
                "integer",
                description="Problems of the topic the user attempted.",
            ),
            Column(
                "problems_solved", "integer", description="Problems of the topic the user solved."
            ),
            Column(
                "total_submissions", "integer", description="Submissions on the topic's problems."
            ),
            Column(
                "successful_submissions",
                "integer",
                description="Correct submissions on the topic's problems.",
            ),
            Column(
                "average_execution_time_ms",
                "double precision",
                description="Average execution time of the user's queries, in ms.",
            ),
            Column(
                "best_execution_time_ms",
                "double precision",
                description="Best execution time of the user's queries, in ms.",
            ),
            Column(
                "total_time_spent_minutes",
                "integer",
                description="Time spent on the topic, in minutes.",
            ),
            Column(
                "current_difficulty",
                "difficultylevel",
                description="Difficulty the user works at (enum difficultylevel).",
            ),
            Column(
                "highest_difficulty_solved",
                "difficultylevel",
                description="Highest difficulty solved (enum difficultylevel).",
            ),
            Column("hint_usage_count", "integer", description="Hints the user opened."),
            Column(
                "average_attempts_per_problem",
                "double precision",
                description="Average attempts per problem.",
            ),
            Column(
                "streak_count",
                "integer",
                description="Current streak of days with a solved problem.",
            ),
            Column("max_streak_count", "integer", description="Longest streak so far."),
            Column(
                "experience_points", "integer", description="Experience points earned on the topic."
            ),
            Column(
                "first_attempt_at",
                "timestamp without time zone",
                description="When the user first attempted the topic (UTC).",
            ),
            Column(
                "last_activity_at",
                "timestamp without time zone",
                description="When the user was last active on the topic (UTC).",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
        ),
    ),
    TableSpec(
        name="badges",
        description="Achievement badge definitions.",
        group="gamification",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "name", "character varying(100)", required=True, description="Badge name, unique."
            ),
            Column("description", "text", required=True, description="What the badge is for."),
            Column("icon_url", "text", description="Address of the badge's icon."),
            Column(
                "criteria",
                "jsonb",
                required=True,
                description='JSON criteria for earning the badge, such as {"problems_solved": 10}.',
            ),
            Column("points_reward", "integer", description="Points the badge awards."),
            Column(
                "rarity",
                "character varying(20)",
                description="Rarity: common, rare, epic or legendary.",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
        ),
    ),
    TableSpec(
        name="user_badges",
        description="User badge inventory.",
        group="gamification",
        sync_mode=SyncMode.SNAPSHOT,
        priority=2,
        columns=(
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The user (users.id)."
            ),
            Column(
                "badge_id", "character varying", required=True, description="The badge (badges.id)."
            ),
            Column(
                "earned_at",
                "timestamp without time zone",
                required=True,
                description="When the user earned the badge (UTC).",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The author (users.id)."
            ),
            Column(
                "problem_id",
                "character varying",
                description="The problem the post is about (problems.id), if any.",
            ),
            Column("content", "text", required=True, description="The post's text (markdown)."),
            Column("code_snippet", "text", description="Code attached to the post, if any."),
            Column("likes", "integer", required=True, description="Number of likes."),
            Column("comments", "integer", required=True, description="Number of comments."),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
        ),
    ),
    TableSpec(
        name="post_likes",
        description="User likes on community posts.",
        group="community",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The user (users.id)."
            ),
            Column(
                "post_id",
                "character varying",
                required=True,
                description="The liked post (community_posts.id).",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
        ),
    ),
    TableSpec(
        name="post_comments",
        description="Comments on community posts.",
        group="community",
        sync_mode=SyncMode.SNAPSHOT,
        priority=3,
        columns=(
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The author (users.id)."
            ),
            Column(
                "post_id",
                "character varying",
                required=True,
                description="The post commented on (community_posts.id).",
            ),
            Column(
                "parent_id",
                "character varying",
                description="The comment replied to (post_comments.id), if any.",
            ),
            Column("content", "text", required=True, description="The comment's text."),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "user_id", "character varying", required=True, description="The user (users.id)."
            ),
            Column(
                "problem_id",
                "character varying",
                required=True,
                description="The problem (problems.id).",
            ),
            Column(
                "bookmark",
                "boolean",
                required=True,
                description="Whether the user bookmarked the problem.",
            ),
            Column(
                "upvote",
                "boolean",
                required=True,
                description="Whether the user upvoted the problem.",
            ),
            Column(
                "downvote",
                "boolean",
                required=True,
                description="Whether the user downvoted the problem.",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "problem_id",
                "character varying",
                required=True,
                description="The problem (problems.id).",
            ),
            Column(
                "created_by",
                "character varying",
                required=True,
                description="The author (users.id).",
            ),
            Column("title", "character varying(200)", required=True, description="Solution title."),
            Column(
                "content",
                "text",
                required=True,
                description="Explanation of the solution (markdown).",
            ),
            Column("sql_code", "text", required=True, description="The solution's SQL."),
            Column(
                "is_official",
                "boolean",
                required=True,
                description="Whether this is the official solution.",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "updated_at",
                "timestamp without time zone",
                required=True,
                description="When the app last changed the row (UTC); places the row in its day.",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column(
                "cache_key",
                "character varying(500)",
                required=True,
                description="Cache key, unique within its namespace.",
            ),
            Column(
                "namespace", "character varying(100)", required=True, description="Cache namespace."
            ),
            Column("data", "jsonb", required=True, description="JSON cached value."),
            Column(
                "expires_at",
                "timestamp without time zone",
                required=True,
                description="When the entry expires (UTC).",
            ),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
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
            Column(
                "id",
                "character varying",
                required=True,
                description="Primary key: a UUID string the app generates.",
            ),
            Column("job_id", "character varying(100)", required=True, description="Queue job id."),
            Column("data", "jsonb", required=True, description="JSON job payload."),
            Column("status", "character varying(20)", required=True, description="Job status."),
            Column(
                "created_at",
                "timestamp without time zone",
                required=True,
                description="When the row was created (UTC).",
            ),
            Column(
                "processed_at",
                "timestamp without time zone",
                description="When the job was processed (UTC).",
            ),
        ),
    ),
)

TABLES_BY_NAME: dict[str, TableSpec] = {table.name: table for table in TABLES}
