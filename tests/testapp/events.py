from typing import Literal

from apps.eventbus.contracts import Event


class SomethingHappened(Event):
    """Something happened (v1)."""

    subject = "testing.happened.v1"
    value: int
    mode: Literal["ok", "permanent", "retry", "fail", "slow", "long", "die", "strict"] = "ok"


class SomethingHappenedV2(Event):
    """Something happened (v2: the value became a labelled amount)."""

    subject = "testing.happened.v2"
    amount: int
    label: str
