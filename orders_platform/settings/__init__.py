"""Settings by concern.

``development`` (the default of ``manage.py``), ``production`` and ``test`` each start
from ``base`` and decide what happens when a service URL is unset: development starts
the embedded PostgreSQL/nats-server, production refuses to start, tests use what the
fixtures started.
"""
