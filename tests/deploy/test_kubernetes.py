"""docker/k8s: valid objects for the stated Kubernetes releases, a Deployment per process, probes,
grace periods, disruption budgets and NATS credentials that match the generated auth.conf.

``kubernetes-validate`` checks every object (strict: unknown fields fail) against the API's
own schemas, offline; the rest is what a schema cannot see.
"""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest
import yaml

from apps.eventbus.producing.relay import LEASE_SECONDS

from .support import (
    K8S,
    KUBERNETES_VERSIONS,
    METRICS_PORT,
    by_name,
    consumer_of,
    container_argv,
    facts,
    manifests,
    option,
)

CRD_KINDS = {"ScaledObject"}  # KEDA's: test_autoscaling.py checks them against the CRD's schema
PROCESSES = {"web", "relay", "worker", "beat", "gateway"}  # besides one Deployment per consumer
NO_NATS = {"beat", "gateway"}  # beat only schedules; the simulator is no NATS client
# Celery's only check (`inspect ping`) goes through Redis: as a liveness probe it would restart
# every worker in a Redis outage (worker.yaml explains). Readiness only.
NO_LIVENESS = {"worker"}


@pytest.fixture(scope="module")
def production() -> dict:
    return facts()


@pytest.fixture(scope="module")
def deployments() -> dict[str, dict]:
    return by_name(manifests("Deployment"))


def pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def env_of(container: dict) -> dict:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def validation_errors(document: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_the_kubernetes_release(version):
    objects = [obj for obj in manifests() if obj["kind"] not in CRD_KINDS]
    assert len(objects) > 20
    errors = {
        f"{obj['_file']}: {obj['kind']}/{obj['metadata']['name']}": validation_errors(
            {k: v for k, v in obj.items() if k != "_file"}, version
        )
        for obj in objects
    }
    assert {where: found for where, found in errors.items() if found} == {}


def test_the_validator_rejects_a_misspelled_field_and_a_wrong_type():
    (relay,) = [obj for obj in manifests("Deployment") if obj["metadata"]["name"] == "relay"]
    relay = {k: v for k, v in relay.items() if k != "_file"}
    misspelled = copy.deepcopy(relay)
    pod(misspelled)["terminationGracePeriod"] = 45
    wrong_type = copy.deepcopy(relay)
    pod(wrong_type)["containers"][0]["ports"][0]["containerPort"] = "9100"
    assert validation_errors(misspelled, KUBERNETES_VERSIONS[-1])
    assert validation_errors(wrong_type, KUBERNETES_VERSIONS[-1])


def test_there_is_a_deployment_per_process_and_per_declared_consumer(deployments, production):
    consumers = {}
    for name, deployment in deployments.items():
        (container,) = pod(deployment)["containers"]
        if consumer := consumer_of(container_argv(container)):
            consumers[consumer] = name
    assert sorted(consumers) == sorted(production["consumers"])
    assert all(name == f"consumer-{consumer}" for consumer, name in consumers.items()), consumers
    assert set(deployments) == PROCESSES | set(consumers.values())


def test_every_command_parses_with_the_images_own_parsers(production):
    errors = {}
    for kind in ("Deployment", "Job"):
        for obj in manifests(kind):
            for container in pod(obj)["containers"]:
                errors[obj["metadata"]["name"]] = production["errors"][json.dumps(container_argv(container))]
    assert {name: error for name, error in errors.items() if error} == {}


def test_the_job_migrates_then_creates_the_streams_as_the_admin_user():
    (job,) = manifests("Job")
    (container,) = pod(job)["containers"]
    argv = container_argv(container)
    assert argv[:2] == ["sh", "-c"]
    assert [step.split()[2] for step in argv[2].split("&&")] == ["migrate", "nats_setup"]
    assert env_of(container)["NATS_USER"] == "admin"


def test_every_workload_has_probes_resources_and_a_port_for_its_probes(deployments):
    for name, deployment in deployments.items():
        (container,) = pod(deployment)["containers"]
        probes = {kind: container.get(kind) for kind in ("livenessProbe", "readinessProbe")}
        expected = {"readinessProbe"} if name in NO_LIVENESS else {"livenessProbe", "readinessProbe"}
        assert {kind for kind, probe in probes.items() if probe} == expected, name
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        for probe in filter(None, [*probes.values(), container.get("startupProbe")]):
            if "httpGet" in probe:
                assert probe["httpGet"]["port"] in ports, f"{name}: probe on an undeclared port"
        assert set(container["resources"]) == {"requests", "limits"}, name
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name


def test_the_relay_and_every_consumer_are_probed_and_scraped_on_their_metrics_port(deployments):
    for name, deployment in deployments.items():
        (container,) = pod(deployment)["containers"]
        argv = container_argv(container)
        if not (consumer_of(argv) or argv[2:3] == ["runrelay"]):
            continue
        assert option(argv, "--metrics-port") == str(METRICS_PORT), name
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[kind]["httpGet"]
            assert (probe["path"], ports[probe["port"]]) == ("/healthz", METRICS_PORT), f"{name} {kind}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(METRICS_PORT), name


def test_consumers_and_the_relay_get_longer_to_stop_than_a_batch_may_take(deployments, production):
    for name, deployment in deployments.items():
        argv = container_argv(pod(deployment)["containers"][0])
        grace = pod(deployment).get("terminationGracePeriodSeconds", 30)
        if consumer := consumer_of(argv):
            assert grace > production["consumers"][consumer]["ack_wait"], name
        if argv[2:3] == ["runrelay"]:
            assert grace > LEASE_SECONDS, name


def test_autoscaled_consumers_leave_their_replica_count_to_the_autoscaler(deployments):
    for name, deployment in deployments.items():
        if name.startswith("consumer-"):
            assert "replicas" not in deployment["spec"], f"{name}: `kubectl apply` would reset the autoscaler"


def test_disruption_budgets_select_a_workload_that_can_spare_a_pod(deployments):
    budgets = by_name(manifests("PodDisruptionBudget"))
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, budget in budgets.items():
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [d for d, pod_labels in labels.items() if selector.items() <= pod_labels.items()]
        assert matched == [name], f"{name} selects {matched}"
        assert "minAvailable" in budget["spec"] or budget["spec"].get("maxUnavailable") == 1, name
    # A single-replica workload gets none: `minAvailable: 1` on it would block every node drain.
    assert set(budgets) == {name for name in deployments if name not in ("beat", "gateway")}
    for name in ("beat", "gateway"):
        assert deployments[name]["spec"]["replicas"] == 1
        assert deployments[name]["spec"]["strategy"]["type"] == "Recreate"


def test_each_nats_client_is_a_user_of_its_own_with_its_password_and_the_ca_from_the_secret(deployments, production):
    (secret,) = [s for s in manifests("Secret") if s["metadata"]["name"] == "orders-platform-nats"]
    users = production["nats_users"]
    assert set(secret["stringData"]) == {*users, "ca.crt"}
    clients = {}
    jobs = by_name(manifests("Job"))
    for name, obj in {**deployments, **jobs}.items():
        (container,) = pod(obj)["containers"]
        env = env_of(container)
        if name in NO_NATS:
            assert not {"NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_TLS_CA"} & set(env), name
            continue
        user = env["NATS_USER"]
        clients[name] = user
        assert "NATS_PASSWORD" not in env, f"{name}: the password is a mounted file, not a variable"
        if consumer := consumer_of(container_argv(container)):
            assert user == f"consumer-{consumer}", name
        # The CA as a file: a volume from the Secret, mounted where NATS_TLS_CA points.
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod(obj)["volumes"]}
        (volume,) = [v for v in volumes.values() if v.get("secret", {}).get("secretName") == "orders-platform-nats"]
        items = {item["key"]: item["path"] for item in volume["secret"]["items"]}
        assert env["NATS_TLS_CA"] == f"{mounts[volume['name']]}/{items['ca.crt']}", name
        assert env["NATS_PASSWORD_FILE"] == f"{mounts[volume['name']]}/{items[user]}", name
        assert pod(obj)["securityContext"]["fsGroup"] == pod(obj)["securityContext"]["runAsGroup"], name
    assert len(set(clients.values())) == len(clients), f"two workloads share a NATS user: {clients}"
    assert clients["migrate"] == "admin"
    assert clients["worker"] == "worker", "the outbox reconciliation and the cockpit's replays"


def test_the_configmap_asks_for_r3_streams_on_the_three_nats_servers_over_tls():
    (config,) = manifests("ConfigMap")
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    assert config["data"]["EVENTBUS_STREAM_REPLICAS"] == str(values["config"]["cluster"]["replicas"]) == "3"
    assert config["data"]["EVENTBUS_PROVISION_AT_START"] == "false"
    assert config["data"]["NATS_URL"].startswith("tls://")
    assert values["config"]["nats"]["tls"]["enabled"] is True


def test_every_workload_runs_the_same_release_of_the_image(deployments):
    images = {pod(d)["containers"][0]["image"] for d in [*deployments.values(), *manifests("Job")]}
    assert images == {"registry.example.com/orders-platform:REPLACE_WITH_RELEASE_TAG"}
