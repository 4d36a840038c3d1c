"""docker/k8s/nats-values.yaml against the official NATS chart (nats-io/k8s, chart `nats` 2.14.2).

The chart ships no values.schema.json (none in its repository at 2.14.2), and Helm ignores a
misspelled key without a word. So the schema is derived here from the chart's own values.yaml
(a copy in tests/deploy/schemas, with its source in that folder's README): every key must be
one the chart has, with the type of the chart's default; the chart's free-form maps (``merge``,
``patch``, ``env``, any ``{}`` or ``[]`` default) take anything. Then the settings that matter
to the platform: 3 replicas, JetStream on files flushed before every acknowledgement, TLS,
the generated accounts, the exporter.
"""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml

from .support import DOCKER, K8S, SCHEMAS, facts

CHART_VERSION = "2.14.2"


def schema_of(default) -> dict:
    """A JSON Schema that accepts what the chart's template reads at this place."""
    if isinstance(default, dict):
        if not default:
            return {"type": "object"}  # a free-form map in the chart: merge, env, resources, ...
        return {
            "type": "object",
            "properties": {key: schema_of(value) for key, value in default.items()},
            "additionalProperties": False,
        }
    if isinstance(default, list):
        return {"type": "array"}
    if isinstance(default, bool):
        return {"type": "boolean"}
    if isinstance(default, int):
        return {"type": "integer"}
    if isinstance(default, str):
        return {"type": "string"}
    return {}  # null defaults (secretName, storageClassName, ...): any value


@pytest.fixture(scope="module")
def chart_schema() -> dict:
    return schema_of(yaml.safe_load((SCHEMAS / f"nats-chart-{CHART_VERSION}-values.yaml").read_text()))


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((K8S / "nats-values.yaml").read_text())


def errors(values: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def test_every_key_is_one_the_chart_reads_with_the_type_it_expects(values, chart_schema):
    assert errors(values, chart_schema) == []


def test_the_derived_schema_rejects_a_misspelled_key_and_a_wrong_type(values, chart_schema):
    misspelled = copy.deepcopy(values)
    misspelled["config"]["jetstream"]["fileStorage"] = {"enabled": True}
    wrong_type = copy.deepcopy(values)
    wrong_type["config"]["cluster"]["replicas"] = "3"
    assert any("fileStorage" in error for error in errors(misspelled, chart_schema))
    assert any(error.startswith("config.cluster.replicas") for error in errors(wrong_type, chart_schema))


def test_the_install_command_pins_the_chart_version_the_values_were_checked_against():
    text = (K8S / "nats-values.yaml").read_text()
    assert f"--version {CHART_VERSION}" in text
    assert f"chart `nats` {CHART_VERSION}" in text


def test_three_servers_with_jetstream_on_disk_flushed_before_every_acknowledgement(values):
    config = values["config"]
    assert config["cluster"] == {**config["cluster"], "enabled": True, "replicas": 3}
    jetstream = config["jetstream"]
    assert jetstream["enabled"] and jetstream["fileStore"]["enabled"] and jetstream["fileStore"]["pvc"]["enabled"]
    assert jetstream["memoryStore"]["enabled"] is False
    assert jetstream["merge"]["sync_interval"] == "always"
    assert "Jepsen" in (K8S / "nats-values.yaml").read_text()
    spread = values["podTemplate"]["topologySpreadConstraints"]["kubernetes.io/hostname"]
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"


def test_tls_on_client_and_route_connections(values):
    config = values["config"]
    for connection in ("nats", "cluster"):
        assert config[connection]["tls"]["enabled"] is True, connection
        assert config[connection]["tls"]["secretName"], connection
    assert config["cluster"]["tls"]["merge"]["verify"] is True
    assert values["tlsCA"]["enabled"] and values["tlsCA"]["secretName"]


def test_the_generated_accounts_are_included_with_every_password_variable_they_read(values):
    """auth.conf goes into the chart's ConfigMap (--set-file), next to nats.conf; the servers
    read each user's password from the environment, here from the Secret nats-passwords."""
    text = (K8S / "nats-values.yaml").read_text()
    includes = [value for key, value in values["config"]["merge"].items() if key.endswith("$include")]
    assert includes == ["auth.conf"]
    assert "--set-file 'configMap.merge.data.auth\\.conf=docker/nats/auth.conf'" in text
    users = facts()["nats_users"]
    env = values["container"]["env"]
    for user, variable in users.items():
        assert env[variable] == {"valueFrom": {"secretKeyRef": {"name": "nats-passwords", "key": user}}}, user
    auth = DOCKER / "nats" / "auth.conf"
    if auth.is_file():  # generated alongside (manage.py nats_auth); compose's test requires it
        assert set(re.findall(r"password:\s*\$(\w+)", auth.read_text())) == set(users.values())


def test_monitoring_and_the_exporter_are_on_for_prometheus_and_keda(values):
    assert values["config"]["monitor"] == {"enabled": True, "port": 8222}
    assert values["promExporter"]["enabled"] is True
    annotations = values["podTemplate"]["merge"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(values["promExporter"]["port"])


def test_max_payload_is_the_platforms(values):
    assert values["config"]["merge"]["max_payload"] == "<< 1MB >>"
    assert facts()["max_payload"] == 1024 * 1024
