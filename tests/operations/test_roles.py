"""The operators and auditors groups exist after migrate, with exactly their permissions."""

import pytest
from django.contrib.auth.models import Group

from apps.operations.roles import AUDITORS, OPERATORS, ensure_roles

pytestmark = pytest.mark.django_db


def codenames(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_operators_see_everything_and_may_act_on_dead_letters_and_consumers():
    granted = codenames(OPERATORS)
    assert {
        "eventbus.reprocess_deadletter",
        "eventbus.discard_deadletter",
        "operations.pause_consumer",
        "eventbus.view_deadletter",
        "orders.view_order",
        "audit.view_auditentry",
        "operations.view_consumer",
    } <= granted
    assert not {p for p in granted if p.split(".")[1].startswith(("add_", "change_", "delete_"))}


def test_auditors_only_read():
    granted = codenames(AUDITORS)
    assert "orders.view_order" in granted and "eventbus.view_deadletter" in granted
    assert all(p.split(".")[1].startswith("view_") for p in granted)


def test_roles_are_kept_in_step_by_running_again():
    Group.objects.get(name=AUDITORS).permissions.clear()
    ensure_roles()
    assert "payments.view_payment" in codenames(AUDITORS)
