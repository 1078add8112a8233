"""The hourly schedules: today's partition every hour, and yesterday's again around midnight.

Incremental and append tables are read by day of change; a row changed between the last tick of
a day and midnight (or committed late) belongs to the day that just ended, so while the new day
is younger than the lookback (and always on its first tick) yesterday is re-materialized too.
Snapshot tables can only ever be read for today.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from sqlgym_assets.assets import lake_asset_key
from sqlgym_assets.catalog import TABLES, SyncMode, TableSpec

SCHEDULE_MINUTE_ENV = "SQLGYM_SCHEDULE_MINUTE"
LOOKBACK_HOURS_ENV = "SQLGYM_LOOKBACK_HOURS"
SCHEDULES_STOPPED_ENV = "SQLGYM_SCHEDULES_STOPPED"


class ScheduleSettingsError(ValueError):
    """A schedule environment variable holds something unusable."""


@dataclass(frozen=True)
class ScheduleSettings:
    minute: int = 5  # past every hour, UTC
    lookback: timedelta = timedelta(hours=2)
    running: bool = True  # start RUNNING when the daemon runs

    @classmethod
    def from_environment(cls) -> ScheduleSettings:
        """Read when the code location loads, never at import."""
        minute = _int_from_env(SCHEDULE_MINUTE_ENV, cls.minute)
        if not 0 <= minute <= 59:
            raise ScheduleSettingsError(f"{SCHEDULE_MINUTE_ENV}={minute} must be 0 to 59")
        hours = _int_from_env(LOOKBACK_HOURS_ENV, int(cls.lookback.total_seconds() // 3600))
        if not 0 <= hours <= 23:
            raise ScheduleSettingsError(f"{LOOKBACK_HOURS_ENV}={hours} must be 0 to 23")
        stopped = os.environ.get(SCHEDULES_STOPPED_ENV, "").strip().lower() in {"1", "true", "yes"}
        return cls(minute=minute, lookback=timedelta(hours=hours), running=not stopped)


def _int_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ScheduleSettingsError(f"{name}={value!r} is not a whole number") from None


def tick_partitions(tick: datetime, lookback: timedelta, *, include_yesterday: bool) -> list[str]:
    """The partitions one tick refreshes: today, and yesterday while the day is young."""
    tick = tick.astimezone(UTC)
    today = tick.date()
    partitions = [today.isoformat()]
    age_of_day = tick - datetime.combine(today, datetime.min.time(), tzinfo=UTC)
    if include_yesterday and age_of_day < max(lookback, timedelta(hours=1)):
        partitions.append((today - timedelta(days=1)).isoformat())
    return partitions


@dataclass(frozen=True)
class HourlySync:
    """One hourly schedule's tables, and whether it reaches back to yesterday."""

    name: str
    tables: tuple[TableSpec, ...]
    include_yesterday: bool

    def job(self):  # an unresolved asset job: Dagster binds it to the assets at load
        return define_asset_job(
            f"{self.name}_job",
            selection=AssetSelection.assets(*(lake_asset_key(table) for table in self.tables)),
            description=f"Refreshes {', '.join(table.name for table in self.tables)}.",
        )


HOURLY_SYNCS = (
    HourlySync(
        name="sqlgym_hourly_incremental",
        tables=tuple(t for t in TABLES if t.enabled and t.sync_mode is not SyncMode.SNAPSHOT),
        include_yesterday=True,
    ),
    HourlySync(
        name="sqlgym_hourly_snapshot",
        tables=tuple(t for t in TABLES if t.enabled and t.sync_mode is SyncMode.SNAPSHOT),
        include_yesterday=False,
    ),
)


def build_schedule(sync: HourlySync, settings: ScheduleSettings) -> ScheduleDefinition:
    @schedule(
        name=sync.name,
        job=sync.job(),
        cron_schedule=f"{settings.minute} * * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING
        if settings.running
        else DefaultScheduleStatus.STOPPED,
        description=f"Hourly at :{settings.minute:02d} UTC; lookback {settings.lookback}.",
    )
    def hourly(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        for partition in tick_partitions(
            tick, settings.lookback, include_yesterday=sync.include_yesterday
        ):
            yield RunRequest(
                run_key=f"{sync.name}:{partition}:{tick.astimezone(UTC):%Y%m%dT%H%M}",
                partition_key=partition,
            )

    return hourly


def build_schedules(settings: ScheduleSettings) -> list[ScheduleDefinition]:
    return [build_schedule(sync, settings) for sync in HOURLY_SYNCS]
