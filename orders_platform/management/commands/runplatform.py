import argparse
import fcntl
import os
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from orders_platform.embedded import dev
from orders_platform.embedded.procs import port_in_use
from orders_platform.processes import metrics_ports, metrics_urls, platform_programs, web_options
from orders_platform.supervisor import Supervisor, die_with_parent

DEV_SUPERUSER = ("admin", "admin")


class Command(BaseCommand):
    help = (
        "Run the whole platform in the foreground (what `make run` does): migrate, create the "
        "development superuser, seed the catalogue, then supervise the web server (gunicorn), Celery and "
        "every other long-running process. Ctrl-C stops everything, embedded servers included."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("WEB_HOST") or "127.0.0.1")
        parser.add_argument("--port", type=_port, default=os.environ.get("WEB_PORT") or "8000", help="or WEB_PORT")
        parser.add_argument("--keep-services", action="store_true", help="leave embedded servers running at exit")

    def run_from_argv(self, argv):
        """Loading the development settings may have started the embedded servers: a usage
        error must not leave them behind."""
        try:
            super().run_from_argv(argv)
        except SystemExit as exit_:
            if exit_.code not in (0, None) and "--keep-services" not in argv and not _another_instance_runs():
                self._stop_embedded()
            raise

    def handle(self, *args, host, port, keep_services, **options):
        die_with_parent()  # `make run` killed: stop as cleanly as after Ctrl-C
        lock = self._single_instance()
        code = 1
        try:
            if port_in_use(port, host):
                raise CommandError(
                    f"port {host}:{port} is already in use, so the web server cannot start; "
                    f"stop what listens there or choose another port: make run WEB_PORT={port + 1}"
                )
            self._prepare()
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
                "DATABASE_URL": os.environ.get("DATABASE_URL") or dev.database_url(settings.DATA_DIR),
                "NATS_URL": ",".join(settings.NATS["SERVERS"]),
            }
            web = web_options()
            ports = metrics_ports()
            programs = platform_programs(host=host, port=port, metrics=ports, web_metrics_dir=_web_metrics_dir())
            self.stdout.write(
                f"\nOrders platform on http://{host}:{port}/  (admin: http://{host}:{port}/admin/)\n"
                f"Web: {_describe(web)}\n"
                f"Database: {env['DATABASE_URL']}\nNATS: {env['NATS_URL']}\n"
                "Prometheus metrics (the relay and consumers also answer /healthz on the same port):\n"
                + "".join(f"  {name:<14} {url}\n" for name, url in metrics_urls(host=host, port=port, metrics=ports))
                + "Ctrl-C stops everything.\n"
            )
            self.stdout.flush()
            code = Supervisor(programs, env=env).run()
        finally:
            if not keep_services:
                self._stop_embedded()
            lock.close()
        sys.exit(code)

    def _prepare(self):
        call_command("migrate", interactive=False, verbosity=1)
        if settings.DEBUG:
            self._ensure_dev_superuser()
        call_command("seed_catalogue")

    def _single_instance(self):
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        handle = _lock_path().open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise CommandError(
                f"the platform is already running from this data folder ({settings.DATA_DIR}, "
                f"pid {handle.read().strip() or '?'}); stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _ensure_dev_superuser(self):
        username, password = DEV_SUPERUSER
        User = get_user_model()
        if not User.objects.filter(username=username).exists():
            User.objects.create_superuser(username=username, email="admin@localhost", password=password)
            self.stdout.write(f"created development superuser {username!r} with password {password!r}")
        else:
            self.stdout.write(f"development superuser: {username!r} (password {password!r} unless you changed it)")

    def _stop_embedded(self):
        """Stop the embedded servers this run used (those whose URL was not given)."""
        stopped = dev.stop(
            settings.DATA_DIR, postgres=not os.environ.get("DATABASE_URL"), nats=not os.environ.get("NATS_URL")
        )
        if stopped:
            self.stdout.write(f"stopped embedded {' and '.join(stopped)}")


def _describe(web: dict) -> str:
    text = f"gunicorn, {web['workers']} worker(s)" + (f" x {web['threads']} threads" if web["threads"] > 1 else "")
    return text + (", reloading on code changes" if web["reload"] else " (WEB_RELOAD=1 reloads on code changes)")


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"WEB_PORT/--port must be a TCP port number (1-65535); got {value!r}")
    return int(value)


def _web_metrics_dir():
    """The web workers' PROMETHEUS_MULTIPROC_DIR (gunicorn's master empties it at each start:
    ``orders_platform/webmetrics.py``)."""
    path = settings.DATA_DIR / "web-metrics"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock_path():
    return settings.DATA_DIR / "runplatform.lock"


def _another_instance_runs() -> bool:
    try:
        with _lock_path().open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
