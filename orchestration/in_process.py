"""Running Dagster in this process without leaving its signal handling behind.

Dagster's in-process execution (`execute_in_process`, `materialize`, `execute_job`) swaps the SIGINT
handler while steps run and, on the way out, restores SIGINT and then copies SIGINT's handler onto
SIGTERM (`dagster._utils.interrupts._replace_interrupt_signal`). In a process started in the
background by a non-interactive shell SIGINT is ignored, so after the first in-process run SIGTERM
is ignored too, and every process started afterwards inherits that: `Pool.terminate()` then waits
forever for a worker that cannot be terminated. The restoring code sits in generators' `finally`
blocks, so it also runs whenever a suspended one is collected: a sensor or schedule context that is
not closed (`with build_sensor_context(...) as context`) changes the handlers when it is deleted.
`signals_kept` puts back what it found.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

KEPT = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_kept() -> Iterator[None]:
    """Restores the SIGINT and SIGTERM dispositions found on entry (main thread only, as Dagster)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    found = {number: signal.getsignal(number) for number in KEPT}
    try:
        yield
    finally:
        gc.collect()  # a finished run's suspended generators run their signal-restoring `finally` now, not later
        for number, handler in found.items():
            if handler is not None:  # None: set outside Python; nothing to put back
                signal.signal(number, handler)


def execute_in_process(job: Any, **kwargs: Any) -> Any:
    """``job.execute_in_process(**kwargs)`` with this process's signal dispositions kept."""
    with signals_kept():
        return job.execute_in_process(**kwargs)
