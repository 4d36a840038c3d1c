"""The two operator roles, as groups kept in step with the models on every ``migrate``.

- ``operators``: see everything in the admin; reprocess, edit and discard dead letters;
  requeue or discard the events the relay set aside; pause and resume consumers; cancel an
  order, refund a confirmed one; start and cancel replays; run the outbox reconciliation now.
- ``auditors``: see everything; change nothing.

Anything else is plain Django: staff users get what their own permissions say, superusers
everything the admin offers (audit entries and the outbox stay read-only for everyone).
"""

from __future__ import annotations

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions

OPERATORS, AUDITORS = "operators", "auditors"
PLATFORM_APPS = ("eventbus", "orders", "payments", "inventory", "audit", "operations")
OPERATOR_ACTIONS = (
    ("eventbus", "reprocess_deadletter"),
    ("eventbus", "discard_deadletter"),
    ("eventbus", "requeue_outboxdeadletter"),
    ("eventbus", "run_reconciliation"),
    ("operations", "pause_consumer"),
    ("operations", "start_replay"),
    ("orders", "cancel_order"),
    ("orders", "refund_order"),
)


def ensure_roles(sender=None, apps=global_apps, using="default", **kwargs) -> None:
    """post_migrate receiver: create the groups and (re)grant their permissions."""
    if sender is not None and sender.label != "operations":
        return  # once per migrate, after this app's own models are migrated
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)  # the permissions exist before they are granted
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    viewing = Permission.objects.using(using).filter(
        content_type__app_label__in=PLATFORM_APPS, codename__startswith="view_"
    )
    acting = Permission.objects.none()
    for app_label, codename in OPERATOR_ACTIONS:
        acting = acting | Permission.objects.using(using).filter(content_type__app_label=app_label, codename=codename)
    operators, _ = Group.objects.using(using).get_or_create(name=OPERATORS)
    operators.permissions.set([*viewing, *acting])
    auditors, _ = Group.objects.using(using).get_or_create(name=AUDITORS)
    auditors.permissions.set(list(viewing))
