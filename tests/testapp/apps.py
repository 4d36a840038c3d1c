from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """A domain the eventbus knows nothing about, used by the eventbus tests (test settings only)."""

    name = "tests.testapp"
    label = "testapp"

    def ready(self):
        from . import consumers  # noqa: F401 - declares the TESTING stream and its consumers
