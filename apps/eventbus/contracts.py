"""Typed event contracts.

A contract is a frozen pydantic model whose class attribute ``subject`` is
``<domain>.<event>.v<N>``. Envelope fields live on :class:`Event`; payload fields on the
subclass, side by side in one flat JSON object (what other producers in the field send).
Subclasses register themselves, so the subject on a message finds its class.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SUBJECT_PATTERN = re.compile(r"^(?P<domain>[a-z][a-z0-9_]*)\.(?P<event>[a-z][a-z0-9_.]*)\.v(?P<version>[1-9][0-9]*)$")

_registry: dict[str, type[Event]] = {}


class ContractError(Exception):
    """A message does not match any contract, or not the contract it claims (a poison message)."""


def new_message_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    subject: ClassVar[str]

    message_id: str = Field(default_factory=new_message_id, min_length=1, max_length=100)
    occurred_at: datetime = Field(default_factory=_now)
    correlation_id: str | None = Field(default=None, max_length=100)
    causation_id: str | None = Field(default=None, max_length=100)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        subject = cls.__dict__.get("subject")
        if subject is None:
            return  # an abstract intermediate class
        if not SUBJECT_PATTERN.match(subject):
            raise TypeError(f"{cls.__name__}.subject {subject!r} must look like <domain>.<event>.v<N>")
        existing = _registry.get(subject)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"{subject} is already the subject of {existing.__module__}.{existing.__qualname__}")
        _registry[subject] = cls

    @classmethod
    def contract_name(cls) -> str:
        return cls.subject.rsplit(".v", 1)[0]

    @classmethod
    def contract_version(cls) -> int:
        return int(cls.subject.rsplit(".v", 1)[1])

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    def to_payload(self) -> dict[str, Any]:
        """The JSON-compatible dict that goes on the wire."""
        return self.model_dump(mode="json")


def contract_for(subject: str) -> type[Event]:
    try:
        return _registry[subject]
    except KeyError:
        raise ContractError(f"no contract is registered for subject {subject!r}") from None


def all_contracts() -> dict[str, type[Event]]:
    return dict(sorted(_registry.items()))


def decode(subject: str, data: bytes) -> Event:
    """Parse and validate a message body against the contract of ``subject``."""
    contract = contract_for(subject)
    try:
        return contract.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(body)'}: {error['msg']}" for error in exc.errors()
        )
        raise ContractError(f"{subject} failed validation: {problems}") from None


def validate(event: Event) -> Event:
    """Re-validate an event built in code (model_construct or mutated copies skip validation)."""
    try:
        return type(event).model_validate(event.model_dump(warnings=False))
    except ValidationError as exc:
        raise ContractError(f"{event.subject} failed validation: {exc}") from None
