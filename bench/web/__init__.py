"""Bench-only web settings: the project's URLs plus the saga benchmark's baseline endpoint.

gunicorn serves the whole benchmark with ``DJANGO_SETTINGS_MODULE=bench.web.settings``, so
``POST /api/orders/`` and the baseline ``POST /bench/plain-orders/`` run in the same workers.
Never part of a deployment: nothing outside ``bench/`` imports it.
"""
