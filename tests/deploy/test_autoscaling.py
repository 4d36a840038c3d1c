"""docker/k8s/autoscaling: a KEDA ScaledObject per consumer (checked against KEDA's own CRD schema)
and, as the alternative, an HPA per consumer on the platform's pending gauge via prometheus-adapter.

KEDA's CRD schema (tests/deploy/schemas/keda-2.20.2-scaledobjects.yaml) types the ScaledObject
but leaves a trigger's ``metadata`` a free map of strings; what the nats-jetstream scaler reads
there (names, required ones) comes from its source and is checked here, with the values the
registry gives: one trigger per (stream, durable) the consumer reads, lagThreshold = batch size
x pipeline.
"""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from apps.eventbus import metrics

from .support import K8S, SCHEMAS, by_name, consumer_of, container_argv, facts, manifests

# pkg/scalers/nats_jetstream_scaler.go (KEDA 2.20.2), natsJetStreamMetadata: the keys it reads.
SCALER_KEYS = {
    "account",
    "accountID",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
    "natsServerMonitoringEndpoint",
}
SCALER_REQUIRED = {"stream", "consumer", "natsServerMonitoringEndpoint"}  # and account or accountID
INTEGER_KEYS = {"lagThreshold", "activationLagThreshold"}


def strict(schema):
    """A CRD's openAPIV3Schema as the API server applies it with strict field validation: an
    object with declared properties takes no other field (unless it preserves unknown fields)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def crd_schema() -> dict:
    crd = yaml.safe_load((SCHEMAS / "keda-2.20.2-scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert crd["spec"]["group"] == "keda.sh" and crd["spec"]["names"]["kind"] == "ScaledObject"
    return strict(version["schema"]["openAPIV3Schema"])


@pytest.fixture(scope="module")
def production() -> dict:
    return facts()


@pytest.fixture(scope="module")
def scaled_objects() -> dict[str, dict]:
    return by_name(manifests("ScaledObject"))


@pytest.fixture(scope="module")
def autoscalers() -> dict[str, dict]:
    return by_name(manifests("HorizontalPodAutoscaler"))


def crd_errors(obj: dict, schema: dict) -> list[str]:
    document = {k: v for k, v in obj.items() if k != "_file"}
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def target_consumer(obj: dict) -> str | None:
    """The consumer the Deployment an autoscaler targets runs."""
    deployment = by_name(manifests("Deployment"))[obj["spec"]["scaleTargetRef"]["name"]]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return consumer_of(container_argv(container))


def threshold(production: dict, consumer: str) -> int:
    spec = production["consumers"][consumer]
    return spec["batch_size"] * spec["pipeline"]


def test_every_scaled_object_is_valid_for_kedas_crd(scaled_objects, crd_schema):
    assert scaled_objects
    errors = {name: crd_errors(obj, crd_schema) for name, obj in scaled_objects.items()}
    assert {name: found for name, found in errors.items() if found} == {}


def test_the_crd_schema_rejects_a_misspelled_field_and_a_wrong_type(scaled_objects, crd_schema):
    one = next(iter(scaled_objects.values()))
    misspelled = copy.deepcopy(one)
    misspelled["spec"]["minReplicas"] = 2
    wrong_type = copy.deepcopy(one)
    wrong_type["spec"]["maxReplicaCount"] = "8"
    assert any("minReplicas" in error for error in crd_errors(misspelled, crd_schema))
    assert any("maxReplicaCount" in error for error in crd_errors(wrong_type, crd_schema))


def test_each_declared_consumer_is_scaled_by_one_scaled_object_on_its_deployment(scaled_objects, production):
    scaled = {}
    for name, obj in scaled_objects.items():
        assert obj["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment", name
        scaled[target_consumer(obj)] = name
    assert sorted(scaled) == sorted(production["consumers"])


def test_each_trigger_reads_one_durable_of_the_consumer_and_nothing_the_scaler_ignores(scaled_objects, production):
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    monitoring = f"nats-headless.nats.svc.cluster.local:{values['config']['monitor']['port']}"
    for name, obj in scaled_objects.items():
        consumer = target_consumer(obj)
        pairs = set()
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "nats-jetstream", name
            meta = trigger["metadata"]
            assert set(meta) <= SCALER_KEYS, f"{name}: the scaler ignores {set(meta) - SCALER_KEYS}"
            assert set(meta) >= SCALER_REQUIRED and {"account", "accountID"} & set(meta), name
            assert all(isinstance(value, str) for value in meta.values()), f"{name}: metadata values are strings"
            assert all(meta[key].isdigit() for key in INTEGER_KEYS & set(meta)), name
            assert meta["account"] == production["nats_account"], name
            assert meta["natsServerMonitoringEndpoint"] == monitoring, name
            assert int(meta["lagThreshold"]) == threshold(production, consumer), f"{name}: batch size x pipeline"
            pairs.add((meta["stream"], meta["consumer"]))
        streams = production["consumers"][consumer]["streams"]
        assert pairs == {(stream, consumer) for stream in streams}, name


def test_replica_bounds_keep_a_spare_and_scale_down_one_pod_at_a_time(scaled_objects):
    for name, obj in scaled_objects.items():
        spec = obj["spec"]
        assert 2 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
        policies = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"]
        assert policies == [{"type": "Pods", "value": 1, "periodSeconds": 60}], name


def test_the_hpa_alternative_scales_the_same_deployments_on_the_pending_gauge(autoscalers, scaled_objects, production):
    assert set(autoscalers) == set(scaled_objects)
    gauge = metrics.CONSUMER_PENDING
    for name, hpa in autoscalers.items():
        keda = scaled_objects[name]["spec"]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
            keda["minReplicaCount"],
            keda["maxReplicaCount"],
        )
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] == gauge._name
        selector = metric["external"]["metric"]["selector"]["matchLabels"]
        assert set(selector) == set(gauge._labelnames)
        consumer = selector["consumer"]
        assert target_consumer(hpa) == consumer
        target = {"type": "AverageValue", "averageValue": str(threshold(production, consumer))}
        assert metric["external"]["target"] == target, name


def test_prometheus_adapter_serves_the_gauge_as_an_external_metric_without_summing_replicas():
    values = yaml.safe_load((K8S / "autoscaling" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["external"]
    name = metrics.CONSUMER_PENDING._name
    assert rule["seriesQuery"].startswith(f"{name}{{")
    assert rule["name"]["as"] == name
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    # Every replica reports the consumer's server-side count: summing would scale on replicas.
    assert rule["metricsQuery"].replace(" ", "").startswith("maxby(consumer)(")
