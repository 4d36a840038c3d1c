"""Who may do what on a secured NATS: the users of the platform's account and their
per-subject permissions, derived from the registry (one source of truth: a new stream or
consumer gets its permissions by being declared), rendered as nats-server configuration
(``manage.py nats_auth``; the committed copy is ``docker/nats/auth.conf``).

One account (``ORDERS``, JetStream enabled) holds one user per role:

- ``admin``: everything. The init job's ``nats_setup`` (streams and durables, the only
  creator of them in production), ``replay``, an operator's ``nats`` CLI.
- ``web``: the cockpit and the probes, read and pause only: ``$JS.API.INFO`` (``/readyz``),
  stream info of every declared stream, consumer info and pause/resume of every declared
  durable. It publishes no event: the web writes the outbox, the relay publishes it.
- ``relay``: publishes what the outbox carries (every subject of every declared stream the
  outbox writes: the domain subjects, ``operator.*`` and ``redeliver.<STREAM>.*``), not the
  dead letters (``dlq.*``, the runners' own) nor the server's advisories; stream info of every
  declared stream (the depth gauges). No other JetStream API.
- ``consumer-<name>``, one per declared consumer: fetches from and acknowledges on its own
  durables only (``CONSUMER.MSG.NEXT``, ``CONSUMER.INFO`` for the pending gauge,
  ``CONSUMER.PAUSE`` when a circuit breaker opens, ``$JS.ACK.<stream>.<durable>.>``), the
  same on its ``<name>-advisories`` durable of the ADVISORIES stream, reads a message of its
  streams by sequence (the advisory names it) and publishes its own dead letters
  (``dlq.<name>``). Nothing else: no domain subject, no stream or consumer management.
- ``worker``: the Celery worker's two jobs that touch NATS. The outbox reconciliation reads
  messages by sequence (``STREAM.MSG.GET``) and republishes what a stream lost (the outbox's
  subjects, as the relay). A replay started from the cockpit creates an *ephemeral* consumer
  under a name of its own (``CONSUMER.CREATE.<stream>.<name>``) and fetches from it. Creating
  and fetching are denied, by name, on every declared durable (the advisory ones too), so it
  can neither change a durable nor take its messages. Not the name-less
  ``CONSUMER.CREATE.<stream>``: the server takes the consumer's name from the request's body
  there, and a body naming a durable *updates* it (filters, ``max_deliver``...: tried on
  nats-server 2.15); on the named subject the subject's name wins. What a subject cannot
  forbid: a body with ``durable_name`` equal to an undeclared name makes that consumer a
  durable (streams keep messages by limits, so it holds nothing back; the cockpit lists it).
  It cannot delete its consumer (no process deletes consumers): the server removes it after
  a minute of inactivity.

Every user but ``admin`` is also denied, explicitly, whatever deletes, purges, rewrites or
copies out a stream (deny wins over allow, so a later widening of an allow list cannot grant
them), and ``web``/``relay`` everything that consumes.

Replies: each user subscribes to its own inbox prefix only, ``_INBOX.<user>`` (the client's
``inbox_prefix``, ``settings.NATS["INBOX_PREFIX"]``, by default derived from ``NATS_USER``), so no
user can read another's replies or fetched messages. No user answers requests, so none needs
``allow_responses``.

Because nothing but ``admin`` may create or update a stream or durable, the long-running
processes run with ``EVENTBUS_PROVISION_AT_START=false`` on a secured server: the init job
runs ``nats_setup`` as ``admin`` first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from apps.eventbus.deadletters.codec import dlq_subject
from apps.eventbus.jetstream.provisioning import advisory_durable
from apps.eventbus.registry import ADVISORY_STREAM, DLQ_STREAM, Registry, registry

ACCOUNT = "ORDERS"
ADMIN, WEB, RELAY, WORKER = "admin", "web", "relay", "worker"
CONSUMER_PREFIX = "consumer-"
INBOX = "_INBOX"
API = "$JS.API"
ACK = "$JS.ACK"
# What the outbox never carries: dead letters are published by the runners themselves, the
# advisories by the server.
NOT_FROM_THE_OUTBOX = frozenset({DLQ_STREAM, ADVISORY_STREAM})
PASSWORD_VARIABLE = "NATS_PASSWORD_{}"

# Deleting, purging, rewriting or copying out a stream, deleting a durable: never for a process.
DESTRUCTIVE = (
    f"{API}.STREAM.DELETE.>",
    f"{API}.STREAM.PURGE.>",
    f"{API}.STREAM.MSG.DELETE.>",
    f"{API}.STREAM.UPDATE.>",
    f"{API}.STREAM.SNAPSHOT.>",
    f"{API}.STREAM.RESTORE.>",
    f"{API}.CONSUMER.DELETE.>",
    f"{API}.ACCOUNT.PURGE.>",
)
CONSUMING = (f"{API}.CONSUMER.MSG.NEXT.>", f"{ACK}.>")


@dataclass(frozen=True)
class User:
    """One user of the account: ``None`` allow lists mean everything."""

    name: str
    description: str
    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()

    @property
    def password_variable(self) -> str:
        """The environment variable the server reads this user's password from."""
        return password_variable(self.name)

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)


def password_variable(user: str) -> str:
    return PASSWORD_VARIABLE.format(re.sub(r"[^A-Z0-9]", "_", user.upper()))


def inbox_prefix(user: str | None) -> str:
    """The inbox prefix a client of ``user`` must use (its only subscribe permission)."""
    return f"{INBOX}.{user}" if user else INBOX


def consumer_user(consumer: str) -> str:
    return f"{CONSUMER_PREFIX}{consumer}"


def outbox_subjects(reg: Registry = registry) -> list[str]:
    """Every subject the relay may publish: every declared stream's, but the dead letters' and advisories'."""
    return [
        subject
        for name, spec in reg.streams.items()
        if name not in NOT_FROM_THE_OUTBOX
        for subject in spec.all_subjects
    ]


def durables(reg: Registry = registry) -> list[tuple[str, str]]:
    """(stream, durable) of every declared consumer, in declaration order."""
    return [(stream, name) for name, spec in reg.consumers.items() for stream in reg.streams_of(spec)]


def users(reg: Registry = registry) -> list[User]:
    """Every user of the account, derived from the declared streams and consumers."""
    declared = durables(reg)
    every_durable = [*declared, *((ADVISORY_STREAM, advisory_durable(name)) for name in reg.consumers)]
    web = User(
        WEB,
        "the web process: /readyz, the cockpit's stream and consumer state, pause/resume",
        publish=(
            f"{API}.INFO",
            *(f"{API}.STREAM.INFO.{stream}" for stream in reg.streams),
            *(f"{API}.CONSUMER.INFO.{stream}.{durable}" for stream, durable in declared),
            *(f"{API}.CONSUMER.PAUSE.{stream}.{durable}" for stream, durable in declared),
        ),
        subscribe=(f"{inbox_prefix(WEB)}.>",),
        publish_deny=(*DESTRUCTIVE, *CONSUMING),
    )
    relay = User(
        RELAY,
        "the outbox relay: publishes what the outbox carries; stream info for the depth gauges",
        publish=(*outbox_subjects(reg), *(f"{API}.STREAM.INFO.{stream}" for stream in reg.streams)),
        subscribe=(f"{inbox_prefix(RELAY)}.>",),
        publish_deny=(*DESTRUCTIVE, *CONSUMING),
    )
    worker = User(
        WORKER,
        "the Celery worker: outbox reconciliation (look-ups, republishing), replays (ephemeral consumers)",
        publish=(
            *outbox_subjects(reg),
            *(f"{API}.STREAM.INFO.{stream}" for stream in reg.streams),
            *(f"{API}.STREAM.MSG.GET.{stream}" for stream in reg.streams),
            *(f"{API}.CONSUMER.CREATE.{stream}.*" for stream in reg.streams),
            *(f"{API}.CONSUMER.MSG.NEXT.{stream}.*" for stream in reg.streams),
            # The stuck-orders job explains an order by its consumers' state (paused, backlog).
            *(f"{API}.CONSUMER.INFO.{stream}.{durable}" for stream, durable in declared),
        ),
        subscribe=(f"{inbox_prefix(WORKER)}.>",),
        publish_deny=(
            *DESTRUCTIVE,
            f"{ACK}.>",
            *(f"{API}.CONSUMER.CREATE.{stream}.{durable}" for stream, durable in every_durable),
            *(f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}" for stream, durable in every_durable),
        ),
    )
    result = [
        User(ADMIN, "nats_setup (the init job), replay, operators' tools", publish=None, subscribe=None),
        web,
        relay,
        worker,
    ]
    for name, spec in reg.consumers.items():
        username = consumer_user(name)
        own = [(stream, name) for stream in reg.streams_of(spec)]
        advisory = (ADVISORY_STREAM, advisory_durable(name))
        allowed = []
        for stream, durable in [*own, advisory]:
            allowed += [
                f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
                f"{API}.CONSUMER.INFO.{stream}.{durable}",
                f"{ACK}.{stream}.{durable}.>",
            ]
        allowed += [f"{API}.CONSUMER.PAUSE.{stream}.{durable}" for stream, durable in own]
        for stream, _ in own:  # the message an advisory names, read by sequence
            allowed += [f"{API}.STREAM.MSG.GET.{stream}", f"{API}.DIRECT.GET.{stream}"]
        allowed.append(dlq_subject(name))
        result.append(
            User(
                username,
                f"runconsumer {name}",
                publish=tuple(allowed),
                subscribe=(f"{inbox_prefix(username)}.>",),
                publish_deny=DESTRUCTIVE,
            )
        )
    variables = [each.password_variable for each in result]
    if len(set(variables)) != len(variables):
        raise ValueError(f"two users would read the same password variable: {sorted(variables)}")
    return result


def user(name: str, reg: Registry = registry) -> User:
    try:
        return next(candidate for candidate in users(reg) if candidate.name == name)
    except StopIteration:
        raise KeyError(f"no NATS user named {name!r}") from None


# -- nats-server configuration ------------------------------------------------------------

HEADER = """\
# GENERATED by `manage.py nats_auth` from the eventbus registry: do not edit by hand.
# Regenerate with `manage.py nats_auth --output docker/nats/auth.conf` after declaring a
# stream or consumer (a test fails while this file differs from what the registry gives).
#
# Include it from each node's configuration (`include auth.conf`, a path relative to that
# file). One account, {account}, with JetStream; one user per role (see
# apps/eventbus/jetstream/permissions.py). Each password comes from the server's environment,
# one variable per user (below); an unset variable stops the server at start. The server
# parses the value as a configuration value: use letters and digits starting with a letter,
# e.g. python3 -c 'import secrets; print("p" + secrets.token_hex(24))' (a `#`, `;` or space
# cuts it; a value that reads as a number or boolean stops the server).
#
# Clients: NATS_USER=<user> and NATS_PASSWORD=<the same value>. Each user may subscribe to its
# own inbox prefix only, `_INBOX.<user>` (the client's default when NATS_USER is set; see
# NATS_INBOX_PREFIX). The long-running processes run with EVENTBUS_PROVISION_AT_START=false:
# only `admin` creates or updates streams and durables (`manage.py nats_setup`, the init job).
#
#   user                          password variable
{table}
"""


def render(reg: Registry = registry) -> str:
    """The nats-server ``accounts`` block for ``reg`` (deterministic: same registry, same text)."""
    every = users(reg)
    table = "\n".join(f"#   {user.name:<28}  {user.password_variable}" for user in every)
    lines = [HEADER.format(account=ACCOUNT, table=table).rstrip("\n"), ""]
    lines += ["accounts {", f"  {ACCOUNT} {{", "    jetstream: enabled", "    users: ["]
    for user in every:
        lines.append(f"      # {user.description}")
        lines.append("      {")
        lines.append(f"        user: {_quote(user.name)}")
        lines.append(f"        password: ${user.password_variable}")
        if user.publish is not None or user.subscribe is not None:
            lines.append("        permissions: {")
            lines += _direction("publish", user.publish, user.publish_deny)
            lines += _direction("subscribe", user.subscribe, user.subscribe_deny)
            lines.append("        }")
        lines.append("      }")
    lines += ["    ]", "  }", "}", ""]
    return "\n".join(lines)


def _direction(name: str, allow: Iterable[str] | None, deny: Iterable[str]) -> list[str]:
    lines = [f"          {name}: {{"]
    lines.append(f"            allow: {_list(allow if allow is not None else ['>'])}")
    deny = list(deny)
    if deny:
        lines.append(f"            deny: {_list(deny)}")
    lines.append("          }")
    return lines


def _list(subjects: Iterable[str]) -> str:
    items = list(dict.fromkeys(subjects))
    if len(items) <= 1:
        return "[" + ", ".join(_quote(item) for item in items) + "]"
    inner = "\n".join(f"              {_quote(item)}" for item in items)
    return f"[\n{inner}\n            ]"


def _quote(text: str) -> str:
    """A double-quoted string: ``$`` inside quotes is literal (no variable lookup)."""
    return json.dumps(text)
