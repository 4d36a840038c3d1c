"""The one table that decides what happens to a delivered message.

The processor reports, for each delivery, what processing came to (:class:`Processed`:
handled, a duplicate, or the exception); :func:`decide` turns that and the delivery count
into a :class:`Settle`; the runner carries it out and nothing else. Pure: no NATS, no
database.

================================  ==============  ===============  ================================
what processing came to           verdict         cause            the runner
================================  ==============  ===============  ================================
handled                           handled                          ack
already in the ledger             duplicate                        ack (a redelivery's row resolved)
database unavailable              held            database_down    probes every second, runs again
DependencyDown (breaker open)     held            dependency_down  pauses the consumer, runs again
ContractError (undecodable,       dead_lettered   poison           dlq.<consumer>, then term
  invalid, no handler, bad ids)
PermanentError                    dead_lettered   permanent        dlq.<consumer>, then term
anything else, last delivery      dead_lettered   exhausted        dlq.<consumer>, then term
anything else                     retried         retryable        nak(the error's delay, else the
                                                                   consumer's back-off)
================================  ==============  ===============  ================================

A held message stays in hand (in progress on the server, no delivery spent) until the
dependency answers; a runner told to stop meanwhile naks it with the delay instead. The
verdict is the ``outcome`` label of ``nats_messages_consumed_total`` and what ``replay`` counts.
"""

from __future__ import annotations

import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from apps.eventbus.contracts import ContractError
from apps.eventbus.errors import DATABASE_UNAVAILABLE, DependencyDown, PermanentError, RetryableError

DATABASE_RETRY_DELAY = 5.0  # a database outage: the delay of the nak when stopping while it lasts


class Verdict(StrEnum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    RETRIED = "retried"  # naked: delivered again after the delay (one delivery spent)
    HELD = "held"  # kept in hand until a dependency every message needs answers again
    DEAD_LETTERED = "dead_lettered"  # published to dlq.<consumer>, then terminated


class Cause(StrEnum):
    """Why a message was not acknowledged."""

    RETRYABLE = "retryable"
    DATABASE_DOWN = "database_down"
    DEPENDENCY_DOWN = "dependency_down"
    POISON = "poison"
    PERMANENT = "permanent"
    EXHAUSTED = "exhausted"


SETTLED = frozenset({Verdict.HANDLED, Verdict.DUPLICATE})  # acknowledged: done with


@dataclass(frozen=True)
class Processed:
    """What processing one delivery came to: handled, a duplicate, or the exception (with its
    traceback when a handler raised it)."""

    duplicate: bool = False
    error: BaseException | None = None
    traceback: str = ""

    HANDLED: ClassVar[Processed]
    DUPLICATE: ClassVar[Processed]

    @classmethod
    def raised(cls, error: BaseException) -> Processed:
        """A handler (or a prepare step) raised ``error``: its traceback goes with it."""
        return cls(error=error, traceback="".join(tb.format_exception(error)).strip())

    @classmethod
    def refused(cls, error: BaseException) -> Processed:
        """The message was refused before any handler ran (poison, or the database was down)."""
        return cls(error=error)


Processed.HANDLED = Processed()
Processed.DUPLICATE = Processed(duplicate=True)


@dataclass(frozen=True)
class Settle:
    verdict: Verdict
    cause: Cause | None = None
    delay: float | None = None  # retried: before the next delivery; held: the pause (or the nak's delay when stopping)


def decide(processed: Processed, *, num_delivered: int, max_deliver: int, backoff: Callable[[int], float]) -> Settle:
    """What to do with a delivery (its ``num_delivered``-th of at most ``max_deliver``)."""
    error = processed.error
    if error is None:
        return Settle(Verdict.DUPLICATE if processed.duplicate else Verdict.HANDLED)
    if isinstance(error, DATABASE_UNAVAILABLE):
        return Settle(Verdict.HELD, Cause.DATABASE_DOWN, DATABASE_RETRY_DELAY)
    if isinstance(error, DependencyDown):
        return Settle(Verdict.HELD, Cause.DEPENDENCY_DOWN, error.pause)
    if isinstance(error, ContractError):
        return Settle(Verdict.DEAD_LETTERED, Cause.POISON)
    if isinstance(error, PermanentError):
        return Settle(Verdict.DEAD_LETTERED, Cause.PERMANENT)
    if num_delivered >= max_deliver:
        return Settle(Verdict.DEAD_LETTERED, Cause.EXHAUSTED)
    delay = error.delay if isinstance(error, RetryableError) else None
    return Settle(Verdict.RETRIED, Cause.RETRYABLE, delay or backoff(num_delivered))
