"""Production settings (every variable they require must be set) with the baseline endpoint added."""

from orders_platform.settings.production import *  # noqa: F403

ROOT_URLCONF = "bench.web.urls"
