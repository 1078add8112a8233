"""Deterministic synthetic SQLGym data, shaped like the real application's rows.

Builds a source database for demos and tests: ``apply_demo_schema`` creates the 21 SQLGym tables
from the demo's own ``schema.sql``; ``generate_demo_rows`` makes the rows (pure function of
``now``, ``scale`` and ``seed``); ``load_demo_data`` does both in one transaction.

The data deliberately exercises what a sync must cope with: nested and heterogeneous JSON (row
objects whose keys and value types change from row to row, ``{}``, ``[]``), NULLs in nullable
columns, multi-KB markdown and SQL with non-ASCII text, all enum labels, a TIMESTAMPTZ table,
rows created exactly at midnight UTC (and one microsecond before it), and rows whose
``updated_at`` is later than ``created_at``, sometimes on a later day.
"""

from __future__ import annotations

import copy
import hashlib
import random
import unicodedata
import uuid
from bisect import bisect_right
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from importlib import resources
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extras import Json, execute_values

__all__ = [
    "DEMO_TABLE_ORDER",
    "apply_demo_schema",
    "generate_demo_rows",
    "load_demo_data",
]

DEMO_TABLE_ORDER: tuple[str, ...] = (
    "users",
    "followers",
    "helpful_links",
    "topics",
    "problems",
    "problem_schemas",
    "test_cases",
    "submissions",
    "problem_submissions",
    "problem_sessions",
    "execution_results",
    "user_progress",
    "badges",
    "user_badges",
    "community_posts",
    "post_likes",
    "post_comments",
    "problem_interactions",
    "solutions",
    "cache_entries",
    "fallback_submissions",
)

_SCHEMA_PACKAGE = "sqlgym_assets.demo"
_SCHEMA_RESOURCE = "schema.sql"
_WINDOW = timedelta(days=7)
_US = timedelta(microseconds=1)
_PAGE_SIZE = 500

Row = dict[str, Any]

# ----------------------------------------------------------------------------- public API


def apply_demo_schema(database_url: str) -> None:
    """Drop and re-create the 21 demo tables and their enum types (one transaction)."""
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_schema_sql())
    finally:
        conn.close()


def generate_demo_rows(
    now: datetime, *, scale: int = 1, seed: int = 0
) -> dict[str, list[dict[str, object]]]:
    """Rows for every table, keyed in ``DEMO_TABLE_ORDER``; the same arguments give the same rows.

    ``now`` must be timezone-aware; all timestamps fall in the 7 days before it (never after).
    TIMESTAMP columns get naive UTC datetimes, TIMESTAMPTZ columns (problem_sessions) aware UTC
    ones. JSON columns hold plain dicts/lists; SQL NULL is ``None``.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return _Generator(now, scale=scale, seed=seed).generate()


def load_demo_data(
    database_url: str, now: datetime, *, scale: int = 1, seed: int = 0
) -> dict[str, int]:
    """Apply the demo schema and insert the generated rows in a single transaction.

    Returns the number of rows inserted per table, in ``DEMO_TABLE_ORDER``.
    """
    rows = generate_demo_rows(now, scale=scale, seed=seed)
    schema = _schema_sql()
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(schema)
            for table in DEMO_TABLE_ORDER:
                _insert_rows(cur, table, rows[table])
    finally:
        conn.close()
    return {table: len(rows[table]) for table in DEMO_TABLE_ORDER}


# ----------------------------------------------------------------------------- loading


def _schema_sql() -> str:
    return resources.files(_SCHEMA_PACKAGE).joinpath(_SCHEMA_RESOURCE).read_text(encoding="utf-8")


def _insert_rows(cur: Any, table: str, rows: Sequence[Row]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    query = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    values = [tuple(_adapt(row[c]) for c in columns) for row in rows]
    execute_values(cur, query, values, page_size=_PAGE_SIZE)


def _adapt(value: object) -> object:
    # Only JSON columns hold dicts/lists; everything else psycopg2 adapts natively.
    return Json(value) if isinstance(value, dict | list) else value


# ----------------------------------------------------------------------------- vocabulary

_FIRST_NAMES = (
    "Ana", "José", "Zoë", "Jürgen", "Chloé", "Søren", "Mei", "Hiroshi", "Aïsha", "Łukasz",
    "Priya", "Ömer", "Noah", "Emma", "Björk", "François", "Kenji", "Renée", "Olu", "Nguyễn",
)  # fmt: skip
_LAST_NAMES = (
    "García", "Müller", "Tran", "O'Brien", "Dubois", "Kowalski", "Tanaka", "Smith", "Østergaard",
    "Çelik", "Patel", "Johansson", "Novák", "Silva", "田中", "Sørensen", "Nakamura", "Schäfer",
)  # fmt: skip
_COMPANIES = (
    "Zalando SE", "Société Générale", "株式会社メルカリ", "Nubank", "Spotify", "Deutsche Bahn",
    "Shopify", "Ünited Analytics GmbH", "Café & Co. 🍰", "Acme Data",
)  # fmt: skip
_CITIES = ("Zürich", "São Paulo", "東京", "Kraków", "Montréal", "Reykjavík", "Lagos", "Berlin")
_WORDS = (
    "Crème brûlée", "Smørrebrød", "Ramen 🍜", "Müsli", "Jalapeño", "Bánh mì", "抹茶ラテ",
    "Croissant", "Pão de queijo", "Espresso ☕", "Gâteau", "Pierogi",
)  # fmt: skip
_TAGS = (
    "aggregation", "sum", "group-by", "joins", "window-functions", "cte", "subquery", "dates",
    "strings", "ranking", "null-handling", "self-join", "having", "distinct", "performance",
)  # fmt: skip
_HINTS = (
    "Use SUM() function",
    "GROUP BY if needed",
    "Think about what happens with NULL values — COALESCE() hilft.",
    "ROW_NUMBER() OVER (PARTITION BY ...) numbers rows per group",
    "A LEFT JOIN keeps rows without a match",
    "日付は DATE_TRUNC('month', ...) で丸められます",
    "Filter groups with HAVING, rows with WHERE 🧐",
)
_PARAGRAPHS = (
    "Given the tables below, write a query that returns each customer's total spend. Results "
    "must be ordered by `total` descending, then by `customer_id`.",
    "Les clients « premium » ont droit à une remise de 10 %. Calculez le montant après remise "
    "et arrondissez à deux décimales — attention aux valeurs NULL !",
    "Für jede Abteilung soll das höchste Gehalt ermittelt werden. Mitarbeiter ohne Abteilung "
    "(NULL) werden ignoriert. Überlegen Sie, ob ein Self-Join nötig ist.",
    "各ユーザーの最初の購入日と最後の購入日を求めてください。購入が一度しかないユーザーも含めます。",
    "Edge cases matter 🚀: empty tables, ties in the ranking, and timestamps exactly at "
    "midnight (00:00:00) all appear in the hidden tests.",
    "Tip 💡: a CTE often makes the query easier to read than nested subqueries, and PostgreSQL "
    "inlines it since version 12.",
    "El resultado debe incluir una fila por mes, incluso si no hubo ventas ese mes (usa "
    "`generate_series`). Niño, año y señal son palabras con ñ.",
    "Return at most **3 rows** per group. Ties are broken by the smaller `id`; see the expected "
    "output for the exact column names and order.",
)
_ERRORS = (
    'syntax error at or near "FORM"',
    'column "montant" does not exist',
    'relation "commandes" does not exist — did you mean «orders»?',
    "division by zero",
    'invalid input syntax for type integer: "zwölf"',
    'ERROR: 列 "売上" は存在しません',
    "function sum(text) does not exist",
)
_DIFFICULTY_LABELS = ("BEGINNER", "EASY", "MEDIUM", "HARD", "EXPERT")
_EXECUTION_STATUSES = ("SUCCESS", "ERROR", "TIMEOUT", "MEMORY_LIMIT")

_DATASETS: dict[str, tuple[tuple[str, str], ...]] = {
    "orders": (
        ("order_id", "INTEGER"), ("customer_id", "INTEGER"), ("amount", "DOUBLE"),
        ("status", "VARCHAR"), ("ordered_at", "TIMESTAMP"),
    ),
    "customers": (
        ("customer_id", "INTEGER"), ("name", "VARCHAR"), ("city", "VARCHAR"),
        ("signup_date", "DATE"), ("is_active", "BOOLEAN"),
    ),
    "employees": (
        ("id", "INTEGER"), ("name", "VARCHAR"), ("department", "VARCHAR"),
        ("salary", "DOUBLE"), ("manager_id", "INTEGER"),
    ),
    "products": (
        ("product_id", "INTEGER"), ("name", "VARCHAR"), ("category", "VARCHAR"),
        ("price", "DOUBLE"),
    ),
    "events": (
        ("event_id", "INTEGER"), ("user_id", "INTEGER"), ("event_type", "VARCHAR"),
        ("occurred_at", "TIMESTAMP"), ("payload", "JSON"),
    ),
    "cafe_sales": (
        ("sale_id", "INTEGER"), ("item", "VARCHAR"), ("qty", "INTEGER"),
        ("unit_price", "DOUBLE"), ("sold_on", "DATE"),
    ),
}  # fmt: skip
_PROBLEM_TITLES = (
    "Total Sales per Customer",
    "Second Highest Salary",
    "Top 3 Products per Category",
    "Monthly Active Users",
    "Customers Without Orders",
    "Running Total of Revenue",
    "Café Revenue by Month ☕",
    "Umsatz pro Stadt — Zürich vs. Kraków",
    "日本の売上ランキング",
    "Employees Earning More Than Their Manager",
    "Duplicate Emails",
    "Consecutive Login Days",
    "Median Order Value",
    "Event Funnel Conversion 📈",
    "Year-over-Year Growth",
)
_SLUG_IDS = {2: "second-highest-salary", 11: "consecutive-login-days", 23: "median-order-value"}
_TOPICS = (
    ("SQL Basics", None),
    ("Filtering & Sorting", 0),
    ("Aggregations", None),
    ("Joins", None),
    ("Subqueries", 3),
    ("Window Functions", 2),
    ("CTEs & Recursion", 4),
    ("Date & Time — Datum & 日付", None),
    ("String Functions ✂️", 0),
    ("Performance & Indexes", None),
)  # (name, index of parent topic)
_BADGES: tuple[tuple[str, dict[str, object], str | None], ...] = (
    ("First Blood 🩸", {"problems_solved": 1}, "common"),
    ("Problem Solver", {"problems_solved": 10}, "common"),
    ("SQL Ninja 🥷", {"problems_solved": 50}, "epic"),
    ("Über-Streak", {"streak_days": 7}, "rare"),
    ("Night Owl 🦉", {"submissions_between": ["00:00", "04:00"]}, None),
    ("Join Master", {"topic_completed": "Joins"}, "rare"),
    ("Windowsmith", {"topic_completed": "Window Functions", "min_difficulty": "HARD"}, "epic"),
    ("Perfectionist", {"first_try_correct": 5}, "rare"),
    ("Centurion", {"submissions": 100}, "common"),
    ("Légende", {"problems_solved": 200, "difficulty": "EXPERT"}, "legendary"),
    ("Helping Hand 🤝", {"community_posts": 5, "likes_received": 20}, None),
    ("早起き", {"submissions_before": "06:00"}, "common"),
)
_LINK_TITLES = (
    "PostgreSQL-Doku: Fensterfunktionen — Übersicht",
    "Use The Index, Luke! 📚",
    "ウィンドウ関数入門",
    "Modern SQL: WITH RECURSIVE",
    "Les jointures expliquées simplement",
    "Explain Analyze visualiser",
)
_LINK_URLS = (
    "https://www.postgresql.org/docs/current/tutorial-window.html",
    "https://use-the-index-luke.com/",
    "https://qiita.com/tags/sql",
    "https://modern-sql.com/feature/with/recursive",
    "https://fr.wikipedia.org/wiki/Jointure_(informatique)",
    "https://explain.dalibo.com/",
)
_TEST_CASE_NAMES = (
    "Basic case",
    "Edge case: empty result",
    "Hidden test 1",
    "NULL handling — gestión de NULL",
    "Large dataset",
    "Ties & duplicates",
)
_RESULT_KEYS: tuple[tuple[str, str], ...] = (
    ("customer_id", "int"), ("name", "str"), ("total", "float"), ("month", "month"),
    ("rank", "int"), ("city", "str"), ("avg_amount", "float"), ("is_active", "bool"),
    ("tags", "list"), ("details", "dict"), ("order_count", "int"), ("first_seen", "date"),
)  # fmt: skip

# ----------------------------------------------------------------------------- time


class _Clock:
    """Random timestamps in [now - 7 days, now], naive UTC, with midnight edge cases."""

    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng = rng
        self.end = now
        self.start = now - _WINDOW
        first = datetime.combine(self.start.date(), time.min)
        if first < self.start:
            first += timedelta(days=1)
        self.midnights: list[datetime] = []
        while first <= self.end:
            self.midnights.append(first)
            first += timedelta(days=1)

    def at(
        self, lo: datetime | None = None, hi: datetime | None = None, *, midnight: bool = False
    ) -> datetime:
        """A time in [lo, hi]; ``midnight=True`` makes it exactly 00:00:00 whenever possible."""
        lo = self.start if lo is None else min(max(lo, self.start), self.end)
        hi = self.end if hi is None else min(max(hi, lo), self.end)
        roll = 0.0 if midnight else self.rng.random()
        if roll < 0.06:
            exact = [m for m in self.midnights if lo <= m <= hi]
            if exact:
                return self.rng.choice(exact)
        elif roll < 0.08:
            before = [m - _US for m in self.midnights if lo <= m - _US <= hi]
            if before:
                return self.rng.choice(before)
        span = (hi - lo) // _US
        return lo + self.rng.randint(0, span) * _US

    def created_updated(
        self, i: int, lo: datetime | None = None, hi: datetime | None = None
    ) -> tuple[datetime, datetime]:
        """(created_at, updated_at): never updated, updated soon after, or on a later day.

        Row 2 of every table is created exactly at midnight (when the range allows it).
        """
        mode = i % 5 if i < 5 else self.rng.randrange(5)
        last_midnight = self.midnights[-1]
        if mode == 3 and (lo or self.start) < last_midnight:
            created = self.at(lo, min(hi or self.end, last_midnight - _US))
            next_day = datetime.combine(created.date() + timedelta(days=1), time.min)
            return created, self.at(next_day)
        created = self.at(lo, hi, midnight=i == 2)
        if mode in (0, 1):
            return created, created
        if mode == 2:
            return created, self.at(created, created + timedelta(hours=2))
        return created, self.at(created)


class _Pool:
    """Rows ordered by a timestamp, to pick one that already existed at a given time."""

    def __init__(self, rng: random.Random, rows: Sequence[Row], key: str) -> None:
        self.rng = rng
        ordered = sorted(range(len(rows)), key=lambda k: (rows[k][key], k))
        self.rows = [rows[k] for k in ordered]
        self.times = [rows[k][key] for k in ordered]

    @property
    def earliest(self) -> datetime:
        return self.times[0]

    def pick(self, at: datetime) -> Row:
        n = max(1, bisect_right(self.times, at))
        return self.rows[self.rng.randrange(n)]


# ----------------------------------------------------------------------------- generator


class _Generator:
    def __init__(self, now: datetime, *, scale: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.scale = scale
        self.now = now.astimezone(UTC).replace(tzinfo=None)
        self.clock = _Clock(self.rng, self.now)
        self.out: dict[str, list[Row]] = {table: [] for table in DEMO_TABLE_ORDER}

    # ---- small helpers

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def opt(self, i: int, p_null: float, make: Callable[[], Any]) -> Any:
        """A value or NULL; row 0 always has the value and row 1 is always NULL."""
        if i == 1 or (i != 0 and self.rng.random() < p_null):
            return None
        return make()

    def pick_forced(self, i: int, options: Sequence[Any], weights: Sequence[float]) -> Any:
        """Weighted choice, but the first rows take each option once so all of them occur."""
        choice = options[i] if i < len(options) else self.rng.choices(options, weights)[0]
        return copy.deepcopy(choice)  # never share mutable option objects between rows

    def hexdigest(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def markdown(self, lo: int, hi: int, title: str | None = None) -> str:
        rng = self.rng
        target = rng.randint(lo, hi)
        parts = [f"# {title}"] if title else []
        while sum(len(p) + 2 for p in parts) < target:
            kind = rng.random()
            if kind < 0.55:
                parts.append(rng.choice(_PARAGRAPHS))
            elif kind < 0.75:
                items = rng.sample(_HINTS, rng.randint(2, 4))
                parts.append("\n".join(f"- {item}" for item in items))
            elif kind < 0.9:
                parts.append(f"```sql\n{self.sql(80, 400)}\n```")
            else:
                cities = rng.sample(_CITIES, 3)
                table = "| city | total |\n|------|------:|\n" + "\n".join(
                    f"| {c} | {rng.randint(10, 9999)} |" for c in cities
                )
                parts.append(table)
        return "\n\n".join(parts)

    def sql(self, lo: int, hi: int, dataset: str | None = None) -> str:
        rng = self.rng
        target = rng.randint(lo, hi)
        name = dataset or rng.choice(list(_DATASETS))
        cols = [c for c, _ in _DATASETS[name]]
        city = rng.choice(_CITIES)
        lines = [
            f"-- {rng.choice(_PROBLEM_TITLES)}",
            f"SELECT {cols[0]}, COUNT(*) AS n, MAX({cols[-1]}) AS latest",
            f"FROM {name}",
            f"WHERE {cols[1]} IS NOT NULL AND '{city}' <> ''",
            f"GROUP BY {cols[0]}",
            "ORDER BY n DESC, 1",
        ]
        ctes: list[str] = []
        k = 0
        while sum(len(x) + 1 for x in lines) + sum(len(x) + 1 for x in ctes) < target:
            k += 1
            comment = rng.choice(
                (
                    "-- Umsätze pro Kunde (über alle Länder) 🚀",
                    "-- 日本語のコメント: 売上合計を計算する",
                    "-- étape intermédiaire : déduplication",
                    "-- keep ties; see the hint about ROW_NUMBER()",
                )
            )
            source = f"step_{k - 1}" if k > 1 else name
            over = f"PARTITION BY {rng.choice(cols)} ORDER BY {cols[0]}"
            cte = (
                comment,
                f"step_{k} AS (",
                f"    SELECT *, ROW_NUMBER() OVER ({over}) AS rn",
                f"    FROM {source}",
                f"    WHERE {rng.choice(cols)} IS NOT NULL",
                ")",
            )
            ctes.append("\n".join(cte))
        if ctes:
            lines[2] = f"FROM step_{k}"
            return "WITH " + ",\n".join(ctes) + "\n" + "\n".join(lines) + ";"
        return "\n".join(lines) + ";"

    def cell(self, col_type: str) -> object:
        rng = self.rng
        if rng.random() < 0.05:
            return None
        if col_type == "INTEGER":
            return rng.randint(1, 5000)
        if col_type == "DOUBLE":
            return round(rng.uniform(0.5, 2500.0), 2)
        if col_type == "BOOLEAN":
            return rng.random() < 0.5
        if col_type == "DATE":
            return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if col_type == "TIMESTAMP":
            return (
                f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
            )
        if col_type == "JSON":
            return {"device": rng.choice(("iOS", "Android", "web")), "v": rng.randint(1, 3)}
        return rng.choice(_WORDS + _CITIES)

    def value(self, kind: str) -> object:
        """A value of the key's usual kind, or (sometimes) of another kind entirely."""
        rng = self.rng
        if rng.random() < 0.25:
            kind = rng.choice(("int", "float", "str", "none", "bool", "list", "dict"))
        match kind:
            case "int":
                return rng.randint(-5, 100_000)
            case "float":
                return round(rng.uniform(0, 10_000), rng.randint(0, 3))
            case "str":
                return rng.choice(_WORDS + _CITIES + _FIRST_NAMES)
            case "month":
                return f"2025-{rng.randint(1, 12):02d}"
            case "date":
                return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            case "bool":
                return rng.random() < 0.5
            case "list":
                return rng.sample(_TAGS, rng.randint(0, 3))
            case "dict":
                return {"source": rng.choice(_CITIES), "score": rng.randint(0, 10)}
            case _:
                return None

    def result_rows(self, lo: int, hi: int) -> list[Row]:
        """Result rows whose keys and value types differ from row to row."""
        rng = self.rng
        base = rng.sample(_RESULT_KEYS, rng.randint(2, 4))
        rows: list[Row] = []
        for _ in range(rng.randint(lo, hi)):
            row = {key: self.value(kind) for key, kind in base if rng.random() > 0.1}
            if rng.random() < 0.15:
                key, kind = rng.choice(_RESULT_KEYS)
                row[key] = self.value(kind)
            rows.append(row)
        return rows

    def s3_object(self, prefix: str, table_name: str) -> Row:
        return {
            "bucket": "sqlgym-datasets",
            "key": f"{prefix}/{table_name}.parquet",
            "table_name": table_name,
            "description": f"Dataset « {table_name} » für das Problem",
            "etag": f'"{self.hexdigest(32)}"',
        }

    # ---- orchestration

    def generate(self) -> dict[str, list[dict[str, object]]]:
        self.users()
        self.followers()
        self.helpful_links()
        self.topics()
        self.problems()
        self.problem_schemas()
        self.test_cases()
        self.submissions_and_results()
        self.problem_submissions()
        self.problem_sessions()
        self.user_progress()
        self.badges()
        self.user_badges()
        self.community()
        self.problem_interactions()
        self.solutions()
        self.cache_entries()
        self.fallback_submissions()
        return {table: self.out[table] for table in DEMO_TABLE_ORDER}

    # ---- tables

    def users(self) -> None:
        rng, clock = self.rng, self.clock
        early = clock.start + timedelta(days=3)
        stamps = sorted(clock.created_updated(i, hi=early) for i in range(self.n(50)))
        rows = self.out["users"]
        for i, (created, updated) in enumerate(stamps):
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            username = f"{_ascii_slug(first)}_{_ascii_slug(last) or 'user'}{i}"[:50]
            provider = self.pick_forced(i, ("email", "google", "admin_key"), (70, 25, 5))
            google = provider == "google"
            verified = google or (i != 0 and rng.random() < 0.6)
            unverified_email = provider == "email" and not verified
            token_expires = clock.at(created, created + timedelta(hours=24))
            rows.append(
                {
                    "id": self.uid(),
                    "username": username,
                    "email": f"{username}@{rng.choice(('gmail.com', 'example.com', 'uni.de'))}",
                    "password_hash": None if google else f"$2b$12${self.hexdigest(53)}",
                    "first_name": self.opt(i, 0.1, lambda f=first: f),
                    "last_name": self.opt(i, 0.15, lambda s=last: s),
                    "company_name": self.opt(i, 0.5, lambda: rng.choice(_COMPANIES)),
                    "linkedin_url": self.opt(
                        i, 0.6, lambda u=username: f"https://www.linkedin.com/in/{u}"
                    ),
                    "profile_image_url": self.opt(
                        i,
                        0.4,
                        lambda: f"https://lh3.googleusercontent.com/a/{self.hexdigest(24)}=s96-c",
                    ),
                    "google_id": str(rng.randrange(10**20, 10**21)) if google else None,
                    "auth_provider": provider,
                    "problems_solved": 0,  # filled in from the submissions
                    "premium": rng.random() < 0.2,
                    "is_admin": provider == "admin_key" or rng.random() < 0.03,
                    "email_verified": verified,
                    "verification_token": self.hexdigest(64) if unverified_email else None,
                    "verification_token_expires": token_expires if unverified_email else None,
                    "created_at": created,
                    "updated_at": updated,
                }
            )
        self.user_pool = _Pool(rng, rows, "created_at")

    def followers(self) -> None:
        users, rng = self.out["users"], self.rng
        seen: set[tuple[str, str]] = set()
        for i in range(self.n(80)):
            a, b = rng.sample(users, 2)
            if (a["id"], b["id"]) in seen:
                continue
            seen.add((a["id"], b["id"]))
            self.out["followers"].append(
                {
                    "id": self.uid(),
                    "follower_id": a["id"],
                    "following_id": b["id"],
                    "created_at": self.clock.at(
                        max(a["created_at"], b["created_at"]), midnight=i == 2
                    ),
                }
            )

    def helpful_links(self) -> None:
        rng = self.rng
        for i in range(self.n(25)):
            user = rng.choice(self.out["users"])
            k = rng.randrange(len(_LINK_TITLES))
            self.out["helpful_links"].append(
                {
                    "id": self.uid(),
                    "user_id": user["id"],
                    "title": _LINK_TITLES[k],
                    "url": _LINK_URLS[k] + ("" if rng.random() < 0.7 else "?ref=sqlgym&lang=日本"),
                    "created_at": self.clock.at(user["created_at"], midnight=i == 2),
                }
            )

    def topics(self) -> None:
        rows = self.out["topics"]
        day_one = self.clock.start + timedelta(days=1)
        for i, (name, parent) in enumerate(_TOPICS):
            parent_row = rows[parent] if parent is not None else None
            lo = parent_row["created_at"] if parent_row else None
            created, updated = self.clock.created_updated(i, lo=lo, hi=day_one)
            rows.append(
                {
                    "id": self.uid(),
                    "name": name,
                    "description": self.opt(i, 0.2, lambda n=name: self.markdown(150, 900, n)),
                    "difficulty_level": self.pick_forced(i, _DIFFICULTY_LABELS, (5, 40, 35, 15, 5)),
                    "order_index": self.opt(i, 0.2, lambda i=i: i),
                    "parent_topic_id": parent_row["id"] if parent_row else None,
                    "created_at": created,
                    "updated_at": updated,
                }
            )

    def problems(self) -> None:
        rng, rows = self.rng, self.out["problems"]
        hi = self.clock.start + timedelta(days=2)
        for i in range(30):
            datasets = rng.sample(list(_DATASETS), rng.randint(1, 2))
            topic = self.opt(i, 0.15, lambda: rng.choice(self.out["topics"]))
            created, updated = self.clock.created_updated(
                i, lo=topic["created_at"] if topic else None, hi=hi
            )
            pid = _SLUG_IDS.get(i) or self.uid()
            title = _PROBLEM_TITLES[i % len(_PROBLEM_TITLES)]
            master = self.opt(i, 0.25, lambda i=i: self.result_rows(0 if i else 1, 12))
            display = None if master is None else copy.deepcopy(master[: rng.randint(0, 5)])
            s3_objects = self.opt(
                i,
                0.5,
                lambda p=pid, d=datasets: [self.s3_object(f"datasets/{p}", t) for t in d],
            )
            tables = [
                {
                    "name": d,
                    "columns": [{"name": c, "type": t} for c, t in _DATASETS[d]],
                    "sampleData": [
                        {c: self.cell(t) for c, t in _DATASETS[d]} for _ in range(rng.randint(1, 5))
                    ],
                }
                for d in datasets
            ]
            question = {
                "description": self.markdown(300, 3000, title),
                "tables": [] if s3_objects and rng.random() < 0.5 else tables,
                "expectedOutput": copy.deepcopy(display)
                if display is not None
                else self.result_rows(1, 4),
            }
            rows.append(
                {
                    "id": pid,
                    "title": title,
                    "question": question,
                    "difficulty": self.pick_forced(i, ("Easy", "Medium", "Hard"), (3, 4, 2)),
                    "tags": rng.sample(_TAGS, rng.choice((0, 1, 2, 3, 4))),
                    "hints": rng.sample(_HINTS, rng.choice((0, 1, 2, 3))),
                    "company": self.opt(i, 0.4, lambda: rng.choice(_COMPANIES)),
                    "topic_id": topic["id"] if topic else None,
                    "premium": self.pick_forced(i, (True, None, False), (1, 3, 2)),
                    "s3_data_source": self.opt(
                        i, 0.5, lambda p=pid: self.s3_object(f"problems/{p}", "dataset")
                    ),
                    "master_solution": master,
                    "expected_display": display,
                    "s3_datasets": s3_objects,
                    "expected_hash": None if master is None else _rows_hash(master),
                    "created_at": created,
                    "updated_at": updated,
                    "_datasets": datasets,  # generator bookkeeping, removed below
                }
            )
        self.problem_datasets = {r["id"]: r.pop("_datasets") for r in rows}
        self.problem_pool = _Pool(rng, rows, "created_at")

    def problem_schemas(self) -> None:
        rng = self.rng
        i = 0
        for problem in self.out["problems"][::2]:
            for table_name in self.problem_datasets[problem["id"]]:
                cols = _DATASETS[table_name]
                created, updated = self.clock.created_updated(i, lo=problem["created_at"])
                self.out["problem_schemas"].append(
                    {
                        "id": self.uid(),
                        "problem_id": problem["id"],
                        "table_name": table_name,
                        "schema_definition": {
                            "columns": [
                                {
                                    "name": c,
                                    "type": t,
                                    "nullable": k > 0,
                                    **({"primary_key": True} if k == 0 else {}),
                                }
                                for k, (c, t) in enumerate(cols)
                            ],
                            "primary_key": [cols[0][0]],
                        },
                        "sample_data": self.opt(
                            i,
                            0.3,
                            lambda c=cols: [
                                {n: self.cell(t) for n, t in c} for _ in range(rng.randint(0, 4))
                            ],
                        ),
                        "indexes": self.opt(
                            i,
                            0.3,
                            lambda c=cols, t=table_name: (
                                [{"name": f"idx_{t}_{c[1][0]}", "columns": [c[1][0]]}]
                                if rng.random() < 0.6
                                else []
                            ),
                        ),
                        "constraints": self.opt(
                            i,
                            0.3,
                            lambda c=cols: (
                                [f"PRIMARY KEY ({c[0][0]})"]
                                + (["CHECK (amount >= 0)"] if rng.random() < 0.3 else [])
                            ),
                        ),
                        "created_at": created,
                        "updated_at": updated,
                    }
                )
                i += 1

    def test_cases(self) -> None:
        rng = self.rng
        self.problem_test_cases: dict[str, list[Row]] = {}
        i = 0
        for p, problem in enumerate(self.out["problems"]):
            names = rng.sample(_TEST_CASE_NAMES, 4 if p == 0 else rng.randint(1, 4))
            cases = self.problem_test_cases.setdefault(problem["id"], [])
            for order, name in enumerate(names):
                created, updated = self.clock.created_updated(
                    i, lo=problem["created_at"], hi=problem["created_at"] + timedelta(days=1)
                )
                expected = self.result_rows(0 if i else 1, 8)
                input_data: Row = (
                    {}
                    if i == 0 or rng.random() < 0.6
                    else rng.choice(
                        (
                            {"parameters": {"limit": rng.randint(1, 5), "city": "Zürich"}},
                            {"tables": {"orders": self.result_rows(1, 3)}},
                        )
                    )
                )
                row = {
                    "id": self.uid(),
                    "problem_id": problem["id"],
                    "name": name,
                    "description": self.opt(i, 0.3, lambda: rng.choice(_PARAGRAPHS)),
                    "input_data": input_data,
                    "expected_output": expected,
                    "expected_output_source": self.opt(
                        i,
                        0.6,
                        lambda: {
                            "bucket": "sqlgym-answers",
                            "key": f"answers/{self.uid()}.parquet",
                            "format": "parquet",
                            "etag": f'"{self.hexdigest(32)}"',
                            "last_modified": self.clock.at().isoformat(),
                            "description": rng.choice((None, "Réponse attendue ✅")),
                        },
                    ),
                    "preview_expected_output": self.opt(
                        i, 0.4, lambda e=expected: copy.deepcopy(e[:3])
                    ),
                    "validation_rules": self.pick_forced(
                        i,
                        (
                            {"type": "MASTER_SOLUTION"},
                            None,
                            {},
                            {"order_sensitive": True, "float_tolerance": 0.01},
                        ),
                        (4, 2, 3, 1),
                    ),
                    "is_hidden": self.pick_forced(i, (False, None, True), (5, 1, 3)),
                    "order_index": self.opt(i, 0.2, lambda o=order: o),
                    "timeout_seconds": self.opt(i, 0.2, lambda: rng.choice((30, 10, 60))),
                    "memory_limit_mb": self.opt(i, 0.2, lambda: rng.choice((256, 512))),
                    "display_limit": self.pick_forced(i, (10, None, 50), (6, 2, 1)),
                    "created_at": created,
                    "updated_at": updated,
                }
                cases.append(row)
                self.out["test_cases"].append(row)
                i += 1

    def submissions_and_results(self) -> None:
        rng, clock = self.rng, self.clock
        start = max(self.user_pool.earliest, self.problem_pool.earliest)
        solved: dict[str, set[str]] = {}
        r = 0
        for i in range(self.n(300)):
            at = clock.at(start, midnight=i == 2)
            straddles = i == 3  # submitted just before midnight, results exactly at midnight
            if straddles:
                at = clock.midnights[-1] - timedelta(seconds=rng.randint(1, 5))
            user, problem = self.user_pool.pick(at), self.problem_pool.pick(at)
            sub_id = self.uid()
            cases = [c for c in self.problem_test_cases[problem["id"]] if c["created_at"] <= at]
            if not straddles and rng.random() < 0.1:
                cases = []
            results = []
            for case in cases[: rng.randint(1, 3)]:
                results.append(self.execution_result(r, sub_id, case, at, straddles))
                r += 1
            if results:
                correct = all(x["is_correct"] for x in results)
                times = [x["execution_time_ms"] for x in results]
                elapsed = None if None in times or i == 1 else sum(times)
            else:
                correct = i != 1 and rng.random() < 0.4
                elapsed = self.opt(i, 0.3, lambda: rng.randint(2, 3000))
            self.out["submissions"].append(
                {
                    "id": sub_id,
                    "user_id": user["id"],
                    "problem_id": problem["id"],
                    "query": self.sql(150, 4000, rng.choice(self.problem_datasets[problem["id"]])),
                    "is_correct": correct,
                    "execution_time": elapsed,
                    "submitted_at": at,
                }
            )
            self.out["execution_results"].extend(results)
            if correct:
                solved.setdefault(user["id"], set()).add(problem["id"])
        for user in self.out["users"]:
            user["problems_solved"] = len(solved.get(user["id"], ()))

    def execution_result(
        self, r: int, submission_id: str, case: Row, at: datetime, midnight: bool
    ) -> Row:
        rng = self.rng
        status = self.pick_forced(r, _EXECUTION_STATUSES, (75, 15, 6, 4))
        timeout_s = case["timeout_seconds"] or 30
        row: Row = {
            "id": self.uid(),
            "submission_id": submission_id,
            "test_case_id": case["id"],
            "status": status,
            "execution_time_ms": None,
            "memory_used_mb": None,
            "rows_affected": None,
            "query_result": None,
            "error_message": None,
            "is_correct": False,
            "validation_details": None,
            "created_at": self.clock.at(
                at, at + timedelta(seconds=timeout_s + 5), midnight=midnight
            ),
        }
        if status == "SUCCESS":
            result = self.result_rows(0, 6) if r == 0 or rng.random() < 0.9 else None
            correct = r == 0 or rng.random() < 0.6
            row.update(
                execution_time_ms=self.opt(r, 0.1, lambda: rng.randint(1, 2500)),
                memory_used_mb=self.opt(r, 0.2, lambda: round(rng.uniform(0.5, 120.0), 3)),
                rows_affected=None if result is None else len(result),
                query_result=result,
                is_correct=correct,
                validation_details=self.opt(
                    r,
                    0.3,
                    lambda: {
                        "user_output": copy.deepcopy((result or [])[:3]),
                        "expected_output": copy.deepcopy(case["expected_output"][:3]),
                        "output_matches": correct,
                        "row_count_match": correct or rng.random() < 0.5,
                        "feedback": ["Correct! 🎉"] if correct else ["Résultat différent", "行数"],
                    },
                ),
            )
        elif status == "ERROR":
            row.update(
                execution_time_ms=rng.choice((None, rng.randint(1, 40))),
                error_message=rng.choice(_ERRORS),
                validation_details=rng.choice((None, {"error": True, "feedback": []})),
            )
        elif status == "TIMEOUT":
            row.update(
                execution_time_ms=timeout_s * 1000,
                error_message=f"Query exceeded the {timeout_s} s time limit ⏱",
            )
        else:
            limit = case["memory_limit_mb"] or 256
            row.update(
                execution_time_ms=rng.randint(100, 9000),
                memory_used_mb=float(limit) + round(rng.uniform(0, 64), 2),
                error_message=f"Memory limit of {limit} MB exceeded",
            )
        return row

    def problem_submissions(self) -> None:
        rng, clock = self.rng, self.clock
        start = max(self.user_pool.earliest, self.problem_pool.earliest)
        for i in range(self.n(60)):
            at = clock.at(start, midnight=i == 2)
            user, problem = self.user_pool.pick(at), self.problem_pool.pick(at)
            status = self.pick_forced(
                i, ("completed", "queued", "failed", "processing"), (6, 1, 2, 1)
            )
            done = status in ("completed", "failed")
            result = self.result_rows(0, 5) if status == "completed" else None
            self.out["problem_submissions"].append(
                {
                    "id": self.uid(),
                    "user_id": user["id"],
                    "problem_id": problem["id"],
                    "sql_query": self.sql(100, 2500),
                    "status": status,
                    "rows_returned": None if result is None else len(result),
                    "execution_time_ms": rng.randint(3, 4000) if done else None,
                    "error_message": rng.choice(_ERRORS) if status == "failed" else None,
                    "result_data": result,
                    "created_at": at,
                    "completed_at": clock.at(at, at + timedelta(seconds=45)) if done else None,
                }
            )

    def problem_sessions(self) -> None:
        rng = self.rng
        for i in range(self.n(120)):
            user = rng.choice(self.out["users"])
            problem = rng.choice(self.out["problems"])
            lo = max(user["created_at"], problem["created_at"])
            created, updated = self.clock.created_updated(i, lo=lo)
            first_query = completed = spent = None
            if updated > created:
                first_query = self.clock.at(created, updated)
                if rng.random() < 0.5:
                    completed = updated
                    spent = int((completed - created).total_seconds())
                elif rng.random() < 0.5:
                    spent = int((updated - created).total_seconds())
            self.out["problem_sessions"].append(
                {
                    "id": self.uid(),
                    "user_id": user["id"],
                    "problem_id": problem["id"],
                    "first_query_at": _aware(first_query),
                    "completed_at": _aware(completed),
                    "total_time_spent_seconds": spent,
                    "created_at": _aware(created),
                    "updated_at": _aware(updated),
                }
            )

    def user_progress(self) -> None:
        rng = self.rng
        topics = self.out["topics"]
        i = 0
        for user in self.out["users"]:
            for topic in rng.sample(topics, rng.choice((0, 1, 1, 2, 3))):
                created, updated = self.clock.created_updated(
                    i, lo=max(user["created_at"], topic["created_at"])
                )
                attempted = rng.randint(1, 20)
                total = attempted + rng.randint(0, 40)
                avg = round(rng.uniform(5, 900), 3)
                streak = rng.randint(0, 6)
                self.out["user_progress"].append(
                    {
                        "id": self.uid(),
                        "user_id": user["id"],
                        "topic_id": topic["id"],
                        "problems_attempted": self.opt(i, 0.1, lambda a=attempted: a),
                        "problems_solved": self.opt(i, 0.1, lambda a=attempted: rng.randint(0, a)),
                        "total_submissions": self.opt(i, 0.1, lambda t=total: t),
                        "successful_submissions": self.opt(
                            i, 0.1, lambda t=total: rng.randint(0, t)
                        ),
                        "average_execution_time_ms": self.opt(i, 0.3, lambda a=avg: a),
                        "best_execution_time_ms": self.opt(
                            i, 0.3, lambda a=avg: round(a * rng.uniform(0.1, 1), 3)
                        ),
                        "total_time_spent_minutes": self.opt(i, 0.2, lambda: rng.randint(0, 600)),
                        "current_difficulty": self.opt(
                            i,
                            0.15,
                            lambda i=i: self.pick_forced(i, _DIFFICULTY_LABELS, (1, 4, 3, 2, 1)),
                        ),
                        "highest_difficulty_solved": self.opt(
                            i, 0.3, lambda: rng.choice(_DIFFICULTY_LABELS)
                        ),
                        "hint_usage_count": self.opt(i, 0.2, lambda: rng.randint(0, 15)),
                        "average_attempts_per_problem": self.opt(
                            i, 0.2, lambda a=attempted, t=total: round(t / a, 4)
                        ),
                        "streak_count": self.opt(i, 0.2, lambda s=streak: s),
                        "max_streak_count": self.opt(
                            i, 0.2, lambda s=streak: s + rng.randint(0, 10)
                        ),
                        "experience_points": self.opt(i, 0.2, lambda: rng.randint(0, 5000)),
                        "first_attempt_at": self.opt(
                            i, 0.2, lambda c=created, u=updated: self.clock.at(c, u)
                        ),
                        "last_activity_at": self.opt(i, 0.2, lambda u=updated: u),
                        "created_at": created,
                        "updated_at": updated,
                    }
                )
                i += 1

    def badges(self) -> None:
        rng = self.rng
        for i, (name, criteria, rarity) in enumerate(_BADGES):
            self.out["badges"].append(
                {
                    "id": self.uid(),
                    "name": name,
                    "description": self.markdown(40, 300),
                    "icon_url": self.opt(
                        i, 0.25, lambda: f"https://cdn.sqlgym.dev/badges/{self.hexdigest(8)}.svg"
                    ),
                    "criteria": copy.deepcopy(criteria),
                    "points_reward": self.opt(i, 0.2, lambda: rng.choice((10, 25, 50, 100, 500))),
                    "rarity": rarity,
                    "created_at": self.clock.at(
                        hi=self.clock.start + timedelta(days=1), midnight=i == 2
                    ),
                }
            )

    def user_badges(self) -> None:
        rng = self.rng
        seen: set[tuple[str, str]] = set()
        for i in range(self.n(60)):
            user, badge = rng.choice(self.out["users"]), rng.choice(self.out["badges"])
            if (user["id"], badge["id"]) in seen:
                continue
            seen.add((user["id"], badge["id"]))
            self.out["user_badges"].append(
                {
                    "id": self.uid(),
                    "user_id": user["id"],
                    "badge_id": badge["id"],
                    "earned_at": self.clock.at(
                        max(user["created_at"], badge["created_at"]), midnight=i == 2
                    ),
                }
            )

    def community(self) -> None:
        rng, clock = self.rng, self.clock
        users, posts = self.out["users"], self.out["community_posts"]
        for i in range(self.n(40)):
            user = rng.choice(users)
            problem = self.opt(i, 0.3, lambda: rng.choice(self.out["problems"]))
            lo = max(user["created_at"], problem["created_at"] if problem else user["created_at"])
            created, updated = clock.created_updated(i, lo=lo)
            posts.append(
                {
                    "id": self.uid(),
                    "user_id": user["id"],
                    "problem_id": problem["id"] if problem else None,
                    "content": self.markdown(200, 4000),
                    "code_snippet": self.opt(i, 0.5, lambda: self.sql(60, 1500)),
                    "likes": 0,  # counters are filled in from the likes and comments below
                    "comments": 0,
                    "created_at": created,
                    "updated_at": updated,
                }
            )
        seen: set[tuple[str, str]] = set()
        for i in range(self.n(100)):
            user, post = rng.choice(users), rng.choice(posts)
            if (user["id"], post["id"]) in seen:
                continue
            seen.add((user["id"], post["id"]))
            post["likes"] += 1
            self.out["post_likes"].append(
                {
                    "id": self.uid(),
                    "user_id": user["id"],
                    "post_id": post["id"],
                    "created_at": clock.at(
                        max(user["created_at"], post["created_at"]), midnight=i == 2
                    ),
                }
            )
        by_post: dict[str, list[Row]] = {}
        for i in range(self.n(80)):
            user, post = rng.choice(users), rng.choice(posts)
            thread = by_post.setdefault(post["id"], [])
            parent = rng.choice(thread) if thread and (i == 0 or rng.random() < 0.35) else None
            lo = max(user["created_at"], post["created_at"])
            if parent:
                lo = max(lo, parent["created_at"])
            comment = {
                "id": self.uid(),
                "user_id": user["id"],
                "post_id": post["id"],
                "parent_id": parent["id"] if parent else None,
                "content": self.markdown(10, 600),
                "created_at": clock.at(lo, midnight=i == 2),
            }
            post["comments"] += 1
            thread.append(comment)
            self.out["post_comments"].append(comment)

    def problem_interactions(self) -> None:
        rng = self.rng
        seen: set[tuple[str, str]] = set()
        i = 0
        for _ in range(self.n(150)):
            user, problem = rng.choice(self.out["users"]), rng.choice(self.out["problems"])
            if (user["id"], problem["id"]) in seen:
                continue
            seen.add((user["id"], problem["id"]))
            vote = self.pick_forced(i, ("up", "down", None), (5, 1, 4))
            created, updated = self.clock.created_updated(
                i, lo=max(user["created_at"], problem["created_at"])
            )
            self.out["problem_interactions"].append(
                {
                    "id": self.uid(),
                    "user_id": user["id"],
                    "problem_id": problem["id"],
                    "bookmark": i == 0 or rng.random() < 0.3,
                    "upvote": vote == "up",
                    "downvote": vote == "down",
                    "created_at": created,
                    "updated_at": updated,
                }
            )
            i += 1

    def solutions(self) -> None:
        rng = self.rng
        users = self.out["users"]
        admins = [u for u in users if u["is_admin"]] or users[:1]
        i = 0
        for problem in self.out["problems"]:
            authors = [(rng.choice(admins), True)] if i == 0 or rng.random() < 0.8 else []
            if rng.random() < 0.4:
                authors.append((rng.choice(users), False))
            for author, official in authors:
                created, updated = self.clock.created_updated(
                    i, lo=max(problem["created_at"], author["created_at"])
                )
                self.out["solutions"].append(
                    {
                        "id": self.uid(),
                        "problem_id": problem["id"],
                        "created_by": author["id"],
                        "title": ("Official solution: " if official else "Mi solución: ")
                        + problem["title"],
                        "content": self.markdown(300, 3000, "Approach"),
                        "sql_code": self.sql(100, 2000),
                        "is_official": official,
                        "created_at": created,
                        "updated_at": updated,
                    }
                )
                i += 1

    def cache_entries(self) -> None:
        rng, clock = self.rng, self.clock
        ttl = timedelta(seconds=600)
        start = max(self.user_pool.earliest, self.problem_pool.earliest)
        seen: set[tuple[str, str]] = set()
        for i in range(self.n(30)):
            created = clock.at(start, clock.end - ttl, midnight=i == 2)  # expires_at <= now
            user, problem = self.user_pool.pick(created), self.problem_pool.pick(created)
            query_hash = self.hexdigest(32)
            namespace = rng.choice(("query", "query", "result"))
            key = f"{user['id']}:{problem['id']}:{query_hash[:12]}"
            if (key, namespace) in seen:
                continue
            seen.add((key, namespace))
            ok = rng.random() < 0.7
            results = self.result_rows(0, 4) if ok else []
            self.out["cache_entries"].append(
                {
                    "id": self.uid(),
                    "cache_key": key,
                    "namespace": namespace,
                    "data": {
                        "success": ok,
                        "results": results,
                        "execution_time_ms": rng.randint(1, 900),
                        "rows_affected": len(results),
                        "console_info": "Query executed ✔" if ok else "",
                        "feedback": [] if ok else [rng.choice(_ERRORS)],
                        "test_results": [],
                        "error": None if ok else rng.choice(_ERRORS),
                    },
                    "expires_at": created + ttl,
                    "created_at": created,
                }
            )

    def fallback_submissions(self) -> None:
        clock = self.clock
        start = max(self.user_pool.earliest, self.problem_pool.earliest)
        for i in range(self.n(10)):
            created = clock.at(start, midnight=i == 2)
            user, problem = self.user_pool.pick(created), self.problem_pool.pick(created)
            job_id = self.uid()
            status = self.pick_forced(i, ("pending", "failed"), (2, 1))
            self.out["fallback_submissions"].append(
                {
                    "id": self.uid(),
                    "job_id": job_id,
                    "data": {
                        "job_id": job_id,
                        "user_id": user["id"],
                        "problem_id": problem["id"],
                        "sql": self.sql(60, 800),
                    },
                    "status": status,
                    "created_at": created,
                    "processed_at": clock.at(created) if status == "failed" else None,
                }
            )

    def n(self, base: int) -> int:
        return base * self.scale


# ----------------------------------------------------------------------------- utilities


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _rows_hash(rows: list[Row]) -> str:
    # Like the app: MD5 of the sorted expected rows (stable text form, not a security use).
    text = "\n".join(sorted(repr(sorted(r.items(), key=lambda kv: kv[0])) for r in rows))
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)
