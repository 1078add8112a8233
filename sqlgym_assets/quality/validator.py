"""great-expectations, the engine the checks validate rows with: imported on first use only.

Importing it costs seconds and hundreds of MB per process; definitions load without it.
"""

from __future__ import annotations

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

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        asset = context.data_sources.add_pandas("lake").add_dataframe_asset("partition")
        self._batches = asset.add_batch_definition_whole_dataframe("frame")
        self._suite = gx.ExpectationSuite
        self.expectations = gx.expectations

    def validate(self, frame: pd.DataFrame, expectation: Any) -> Any:
        return self._batches.get_batch(batch_parameters={"dataframe": frame}).validate(expectation)

    def validate_all(self, frame: pd.DataFrame, expectations: list[Any]) -> list[Any]:
        """Several expectations in one pass; results in the same order."""
        suite = self._suite(name="partition", expectations=expectations)
        return list(self.validate(frame, suite).results)


def unique_key_expectation(validator: Validator, table: TableSpec) -> Any:
    expectations = validator.expectations
    if len(table.primary_key) == 1:
        return expectations.ExpectColumnValuesToBeUnique(
            column=table.primary_key[0], result_format=RESULT_FORMAT
        )
    return expectations.ExpectCompoundColumnsToBeUnique(
        column_list=list(table.primary_key), result_format=RESULT_FORMAT
    )
