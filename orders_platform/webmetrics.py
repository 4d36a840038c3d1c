"""prometheus_client's multiprocess mode for the web's gunicorn workers, as the library documents it
(https://prometheus.github.io/client_python/multiprocess/).

Each gunicorn worker is its own process with its own counters: without this, ``GET /metrics``
reports the requests of whichever worker happened to answer the scrape. With
``PROMETHEUS_MULTIPROC_DIR`` set in the web process's environment (``make run`` sets it; the
deployments must too), every worker writes its metrics to files there and django-prometheus's
``/metrics`` view sums them (``MultiProcessCollector``), whichever worker answers.

The two gunicorn hooks below (imported by ``gunicorn_config.py``) do the bookkeeping the library
asks for: the master removes the metrics files of a previous run before its first worker starts
(they would be counted again), and a worker that exits hands back its live-gauge files.

Limits of the mode, all acceptable here: no ``process_*``/``python_*`` collectors in the web's
output; gauges are reported per worker (``pid`` label) unless they declare a
``multiprocess_mode``; a gauge can not use ``set_function``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's file names: counter_<pid>.db, gauge_livesum_<pid>.db, histogram_<pid>.db...
FILES = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_\d+\.db")


def on_starting(server) -> None:
    """Before the first worker: no metrics file of an earlier run left in the folder (created
    when missing). Only prometheus_client's own files go: the folder may be shared (``/dev/shm``)."""
    if folder := os.environ.get(VARIABLE):
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for entry in path.glob("*.db"):
            if FILES.fullmatch(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


def child_exit(server, worker) -> None:
    if os.environ.get(VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
