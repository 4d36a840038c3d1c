"""Shared readers for the deployment-file tests: the files as parsed YAML, and the production facts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
COMPOSE_FILE = DOCKER / "compose.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
# Kubernetes releases the manifests are validated for (kubernetes-validate ships their schemas):
# the oldest and the newest of the releases supported upstream when this was written.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
METRICS_PORT = 9100  # every long-running process started with --metrics-port serves /metrics and /healthz here
NOT_MANIFESTS = {"nats-values.yaml", "prometheus-adapter-values.yaml"}  # Helm values, not Kubernetes objects


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.rglob("*.yaml") if path.name not in NOT_MANIFESTS)


def manifests(kind: str | None = None) -> list[dict]:
    """Every Kubernetes object of ``docker/k8s`` (of one kind), each with ``_file`` added."""
    found = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document and (kind is None or document["kind"] == kind):
                found.append({**document, "_file": str(path.relative_to(ROOT))})
    return found


def by_name(objects: list[dict]) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects}


def duration_seconds(value: str | int) -> float:
    """Compose durations: ``60s``, ``1m30s``, ``1h``, ``500ms`` (or a number of seconds)."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def service_argv(service: dict, default: list[str]) -> list[str]:
    command = service.get("command", default)
    return command.split() if isinstance(command, str) else list(command)


def dockerfile_cmd() -> list[str]:
    """The image's default command (the exec form of the Dockerfile's CMD)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    return json.loads(line[len("CMD ") :])


def container_argv(container: dict) -> list[str]:
    return [*container.get("command", dockerfile_cmd()), *container.get("args", [])]


@cache
def _facts(argvs: str) -> dict:
    from .production_facts import environment

    result = subprocess.run(
        [sys.executable, "-m", "tests.deploy.production_facts"],
        input=argvs,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"production settings do not load:\n{result.stderr}"
    return json.loads(result.stdout)


def production_facts(argvs: list[list[str]] = ()) -> dict:
    """The registry under production settings, and each argv's parse error (see production_facts.py)."""
    return _facts(json.dumps(sorted(argvs)))


def consumer_of(argv: list[str]) -> str | None:
    """The consumer a ``manage.py runconsumer NAME`` command runs."""
    if argv[:3] == ["python", "manage.py", "runconsumer"]:
        return argv[3]
    return None


def option(argv: list[str], name: str) -> str | None:
    if name in argv:
        return argv[argv.index(name) + 1]
    return None


def compose_app_services(compose: dict | None = None) -> dict[str, dict]:
    """The services that run the platform's own image."""
    compose = compose or load_compose()
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") == "orders-platform:local"}


def all_platform_commands() -> list[list[str]]:
    """Every command the platform's image is started with, in compose and in Kubernetes."""
    argvs = [service_argv(svc, dockerfile_cmd()) for svc in compose_app_services().values()]
    for kind in ("Deployment", "Job"):
        for obj in manifests(kind):
            argvs += [container_argv(c) for c in obj["spec"]["template"]["spec"]["containers"]]
    return argvs


def facts() -> dict:
    """production_facts for every command of compose.yaml and docker/k8s (one child process)."""
    return production_facts(all_platform_commands())
