#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_platform.settings.development")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from orders_platform.embedded import EmbeddedServiceError

    try:
        settings.INSTALLED_APPS  # noqa: B018 - loads the settings, which validate the environment
    except ImproperlyConfigured as exc:
        sys.exit(f"Configuration error ({os.environ['DJANGO_SETTINGS_MODULE']}): {exc}")
    except EmbeddedServiceError as exc:
        sys.exit(f"Embedded service error: {exc}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
