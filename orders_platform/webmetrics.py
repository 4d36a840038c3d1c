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

The web's ``/metrics`` (:func:`metrics`) is django-prometheus's page followed by figures read
from the database when scraped (:func:`scraped_registry`): what a Celery task leaves in a table
(the outbox reconciliation's last run) has no process of its own to serve it, since the worker's
prefork children serve no ``/metrics``. Every web replica reports the same values there:
aggregate with ``max``.
"""

from __future__ import annotations

import functools
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


def metrics(request):
    """``GET /metrics``: django-prometheus's page (every gunicorn worker's metrics in multiprocess
    mode), then the figures read at scrape time."""
    from django_prometheus.exports import ExportToDjangoView
    from prometheus_client import generate_latest

    response = ExportToDjangoView(request)
    response.content = response.content + generate_latest(scraped_registry())
    return response


@functools.cache
def scraped_registry():
    """Collectors that read the database when scraped, in a registry of their own: not in
    prometheus_client's global one, which other processes (and tests) collect without a database.
    Imported late: gunicorn's configuration imports this module before Django is set up."""
    from prometheus_client import CollectorRegistry

    from apps.eventbus.producing.reconciliation import RunsCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunsCollector())
    return registry
