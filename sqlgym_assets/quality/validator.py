"""great-expectations, the engine the checks validate rows with: imported on first use only.

Importing it and setting up its context costs seconds and hundreds of MB per process, so
definitions load without it, a step starts it in a background thread while it extracts
(``start_validator``), and every step of a process shares one context (``shared_validator``).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pandas as pd

from sqlgym_assets.catalog import TableSpec

MAX_REPORTED_KEYS = 20
# SUMMARY keeps at most MAX_REPORTED_KEYS offending values and row positions, whatever the size.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_REPORTED_KEYS}


class Validator:
    """great-expectations in an ephemeral context, imported on first use, progress bars off."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # great-expectations fingerprints every frame under 1 GB for its batch markers (an md5 of
        # pandas' hash of every row, index included), twice per validation: 80-90% of each
        # validation's time here, for a marker the checks never read. The rows are validated
        # all the same.
        pandas_execution_engine.HASH_THRESHOLD = 0
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        asset = context.data_sources.add_pandas("lake").add_dataframe_asset("partition")
        self._batches = asset.add_batch_definition_whole_dataframe("frame")
        self._suite = gx.ExpectationSuite
        self._lock = threading.Lock()
        self.expectations = gx.expectations

    def validate(self, frame: pd.DataFrame, expectation: Any) -> Any:
        # One context serves the process: steps of runs in other threads take turns, since a
        # great-expectations batch definition is not safe to share between threads.
        with self._lock:
            batch = self._batches.get_batch(batch_parameters={"dataframe": frame})
            return batch.validate(expectation)

    def validate_all(self, frame: pd.DataFrame, expectations: list[Any]) -> list[Any]:
        """Several expectations in one pass; results in the same order."""
        suite = self._suite(name="partition", expectations=expectations)
        return list(self.validate(frame, suite).results)


_started: Future[Validator] | None = None
_starting = threading.Lock()


def start_validator() -> None:
    """Imports great-expectations and sets up its context in a background thread, once per
    process: the extract that runs meanwhile is mostly native code that releases the GIL."""
    global _started
    with _starting:
        if _started is not None:
            return
        _started = Future()

    def set_up(future: Future[Validator]) -> None:
        try:
            future.set_result(Validator())
        except BaseException as error:  # handed to whoever asks for the validator
            future.set_exception(error)

    threading.Thread(
        target=set_up, args=(_started,), name="sqlgym-great-expectations", daemon=True
    ).start()


def shared_validator() -> Validator:
    """The process's great-expectations context, started now if no step started it."""
    start_validator()
    assert _started is not None
    return _started.result()


def unique_key_expectation(validator: Validator, table: TableSpec) -> Any:
    expectations = validator.expectations
    if len(table.primary_key) == 1:
        return expectations.ExpectColumnValuesToBeUnique(
            column=table.primary_key[0], result_format=RESULT_FORMAT
        )
    return expectations.ExpectCompoundColumnsToBeUnique(
        column_list=list(table.primary_key), result_format=RESULT_FORMAT
    )
