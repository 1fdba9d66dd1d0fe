"""Write the watched experiments' final ``stats()`` when a gunicorn worker ends.

gunicorn_conf.py imports this module in the master, before any app (and so before shadowdeco)
is imported, and workers are forked from the master with it.  ``atexit`` runs its handlers
last-in first-out, so ours runs after shadowdeco's own exit handler has drained the pending
shadows: the counters written are the final ones.  (gunicorn's ``worker_exit`` hook would run
*before* that drain, while mirrors may still be in flight.)

Nothing here imports shadowdeco at import time, or the order above would flip.
"""

from __future__ import annotations

import atexit
from typing import Any

WATCHED: list[Any] = []


def watch(experiment: Any) -> None:
    WATCHED.append(experiment)


def _write() -> None:
    if WATCHED:
        from server_config import write_stats

        write_stats(WATCHED)


atexit.register(_write)
