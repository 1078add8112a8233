"""A quicker exit for every process that loads the code location.

At exit CPython runs a last full garbage collection over every object still alive. With Dagster,
great-expectations and pandas loaded that is over a million objects: 1.2 to 2 s of every CLI
materialization, measured after its run had already succeeded. Freezing them at exit
(``gc.freeze``) leaves them out of that collection; the operating system takes their memory back
with the process. Nothing changes while the process runs: the freeze happens only at exit.
"""

from __future__ import annotations

import atexit
import gc


def skip_the_last_collection() -> None:
    """Registers the freeze once, however many times the definitions load."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
