"""The project's code location with Dagster's selectable executor, for bench/hourly_run.py.

Everything is the project's own (assets, checks, jobs, schedules, sensors, resources); only the
executor is ``multi_or_in_process_executor``, so a run's config can pick in-process or
multiprocess (and its ``max_concurrent``) whatever the project sets as its default.
"""

from dagster import Definitions, definitions, multi_or_in_process_executor

# The module, not its `defs`: a second @definitions object in this module's scope is an error.
import sqlgym_assets.definitions as project_location


@definitions
def defs() -> Definitions:
    project = project_location.defs()
    return Definitions(
        assets=project.assets,
        asset_checks=project.asset_checks,
        jobs=project.jobs,
        schedules=project.schedules,
        sensors=project.sensors,
        resources=project.resources,
        loggers=project.loggers,
        executor=multi_or_in_process_executor,
    )
