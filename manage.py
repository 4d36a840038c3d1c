#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_platform.settings.development")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from orders_platform.embedded import EmbeddedServiceError

    module = os.environ["DJANGO_SETTINGS_MODULE"]
    try:
        settings.INSTALLED_APPS  # noqa: B018 - loads the settings, which validate the environment
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            sys.exit(
                f"Configuration error: DJANGO_SETTINGS_MODULE={module!r} does not exist; use "
                "orders_platform.settings.development, orders_platform.settings.production or "
                "orders_platform.settings.test"
            )
        raise
    except ImproperlyConfigured as exc:
        sys.exit(f"Configuration error ({module}): {exc}")
    except EmbeddedServiceError as exc:
        sys.exit(f"Embedded service error: {exc}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
