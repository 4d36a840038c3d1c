"""Typed contracts: validation on the way in and out, several versions side by side, schemas."""

import json

import pytest
from django.core.management import call_command
from django.db import transaction

from apps.eventbus.contracts import ContractError, Event, contract_for, decode
from apps.eventbus.models import OutboxEvent
from apps.eventbus.producing.outbox import TransactionRequired, outbox_write
from tests.testapp.events import SomethingHappened, SomethingHappenedV2


def test_subjects_find_their_classes_and_versions_decode_to_their_own_class():
    assert contract_for("testing.happened.v1") is SomethingHappened
    v1 = decode("testing.happened.v1", b'{"message_id": "m1", "value": 3}')
    v2 = decode("testing.happened.v2", b'{"message_id": "m2", "amount": 3, "label": "x"}')
    assert isinstance(v1, SomethingHappened) and v1.value == 3 and v1.occurred_at.tzinfo is not None
    assert isinstance(v2, SomethingHappenedV2) and v2.label == "x"


@pytest.mark.parametrize(
    ("subject", "body", "reason"),
    [
        ("testing.happened.v1", b"{not json", "failed validation"),
        ("testing.happened.v1", b'{"value": "three"}', "value: Input should be a valid integer"),
        ("testing.happened.v1", b'{"message_id": "m"}', "value: Field required"),
        ("testing.happened.v9", b'{"value": 1}', "no contract is registered for subject 'testing.happened.v9'"),
    ],
)
def test_bad_messages_are_contract_errors_with_the_reason(subject, body, reason):
    with pytest.raises(ContractError, match=reason):
        decode(subject, body)


def test_a_subject_must_be_versioned():
    with pytest.raises(TypeError, match=r"must look like <domain>\.<event>\.v<N>"):

        class Unversioned(Event):
            subject = "testing.unversioned"


@pytest.mark.django_db(transaction=True)
def test_the_outbox_refuses_events_outside_a_transaction():
    with pytest.raises(TransactionRequired):
        outbox_write(SomethingHappened(value=1))
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_the_outbox_validates_and_stores_the_wire_form():
    with transaction.atomic():
        row = outbox_write(SomethingHappened(value=7, correlation_id="order-1"))
    assert row.aggregate_id == "order-1"
    assert json.loads(row.body)["value"] == 7
    assert row.headers["Event-Type"] == "testing.happened" and row.headers["Event-Version"] == "1"
    invalid = SomethingHappened.model_construct(value="seven", message_id="x")
    with pytest.raises(ContractError), transaction.atomic():
        outbox_write(invalid)


def test_export_schemas_writes_one_json_schema_per_contract(tmp_path):
    call_command("export_schemas", str(tmp_path))
    schema = json.loads((tmp_path / "testing.happened.v1.schema.json").read_text())
    assert schema["x-nats-subject"] == "testing.happened.v1"
    assert schema["properties"]["value"]["type"] == "integer"
    assert "value" in schema["required"]
    assert (tmp_path / "testing.happened.v2.schema.json").exists()
