"""Which failures are worth another try, and how the next try is spaced."""

from collections.abc import Iterator
from contextlib import contextmanager

import adbc_driver_manager
from dagster import Backoff, Failure, Jitter, RetryPolicy

from sqlgym_assets.catalog import CatalogError
from sqlgym_assets.lake.layout import LakeConfigurationError
from sqlgym_assets.source.credentials import DatabaseConfigurationError
from sqlgym_assets.source.plan import SnapshotNotAvailableError, SourceSchemaError
from sqlgym_assets.source.pseudonymize import PseudonymizationError

# Connection resets, timeouts, S3 5xx and throttling clear up on their own: retry those, spaced
# out (5 s, 10 s, 20 s, each +/- jitter so parallel steps do not retry in lockstep).
SYNC_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)

# Another try would fail the same way: a bad secret or configuration, a bad query, a past
# snapshot, a catalog the source contradicts.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseConfigurationError,
    PseudonymizationError,
    LakeConfigurationError,
    SnapshotNotAvailableError,
    SourceSchemaError,
    CatalogError,
    adbc_driver_manager.ProgrammingError,
)


@contextmanager
def fail_permanent_errors_without_retry() -> Iterator[None]:
    try:
        yield
    except PERMANENT_ERRORS as error:
        raise Failure(description=str(error), allow_retries=False) from error
