"""Contract snapshots, and whether a contract's JSON Schema still keeps the promise of its last one.

A subject is a promise: a consumer built against ``<domain>.<event>.v1`` keeps reading every
message of that subject, whichever producer (and whichever release of it) sent it, and a message
in a stream outlives the code that wrote it. So within a version a schema may only grow.

Breaking (old is the snapshot, new is the code):

- a property removed (a consumer may still read it);
- a property newly required: an optional one made required, or a new required one;
- a value kind no longer accepted: ``integer`` -> ``string``, ``number`` -> ``integer``, null no
  longer accepted, an ``anyOf``/``oneOf`` variant gone;
- an enum or const narrowed (a value removed, or a fixed set where any value was accepted);
- a constraint tightened: a maximum (``maxLength``, ``maxItems``, ``maximum``, ``max_digits``...)
  lowered or added, a minimum raised or added, an exclusive bound where it was inclusive,
  ``uniqueItems`` or ``additionalProperties: false`` added, ``multipleOf`` changed to a value the
  old one is not a multiple of. A ``pattern`` or ``format`` added or changed is breaking whatever
  it says: regular expressions are not compared;
- any other validation keyword added or changed (not analysed, so taken as breaking);
- a subject removed from the code while the snapshot has it (retired deliberately with
  ``check_contracts --update --accept-breaking`` once no producer sends it and no stream holds it).

Compatible: a new optional property, a widened enum, a loosened or dropped constraint, a changed
title, description or default (a default changes meaning, not shape: the snapshot's diff shows it),
a required property made optional, a new subject (a ``.v2`` beside its ``.v1``). These widen what
the code accepts; a message that uses the wider part still needs its consumers deployed before
its producers. Local ``$ref`` (``$defs``), ``allOf``, array ``items``/``prefixItems`` and
``additionalProperties`` schemas are followed; a recursive model is walked once.

This module knows contracts only as pydantic models and schemas as dicts: nothing of a domain.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.eventbus.contracts import Event, all_contracts

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_SUFFIX = ".schema.json"

# Keywords that describe and never refuse a value.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment", "$id"}
    | {"$schema", "$anchor", "$defs", "definitions", "contentMediaType", "contentEncoding", "discriminator"}
)
# Bounds: keyword -> exclusive? (``ge``/``gt``/``le``/``lt`` are pydantic's, on Decimal fields).
_LOWER_BOUNDS = {"minimum": False, "exclusiveMinimum": True, "ge": False, "gt": True}
_UPPER_BOUNDS = {"maximum": False, "exclusiveMaximum": True, "le": False, "lt": True}
_MAXIMA = ("maxLength", "maxItems", "maxProperties", "max_digits", "decimal_places")
_MINIMA = ("minLength", "minItems", "minProperties")
_EXACT = ("pattern", "format")
_HANDLED = frozenset(
    {"type", "enum", "const", "anyOf", "oneOf", "allOf", "properties", "required", "additionalProperties"}
    | {"items", "prefixItems", "uniqueItems", "multipleOf", *_LOWER_BOUNDS, *_UPPER_BOUNDS, *_MAXIMA, *_MINIMA, *_EXACT}
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SnapshotError(Exception):
    """A snapshot file cannot be read as a JSON Schema."""


@dataclass(frozen=True)
class BreakingChange:
    subject: str
    path: str  # a JSON path into a message of the subject: ``$``, ``$.lines[*].sku``
    reason: str

    def __str__(self) -> str:
        return f"{self.subject} {self.path}: {self.reason}"


# -- schemas and snapshot files ---------------------------------------------------------------


def contract_schema(contract: type[Event]) -> dict[str, Any]:
    """The JSON Schema a consumer of ``contract`` validates against, as exported and snapshotted."""
    schema = contract.model_json_schema(mode="validation")
    schema = {
        "$schema": SCHEMA_DIALECT,
        "$id": f"urn:orders-platform:event:{contract.subject}",
        "title": contract.subject,
        "description": inspect.cleandoc(contract.__doc__ or ""),
        "x-nats-subject": contract.subject,
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
    }
    return json.loads(dump_schema(schema))  # exactly what a file read back gives


def contract_schemas(contracts: Mapping[str, type[Event]] | None = None) -> dict[str, dict[str, Any]]:
    """Subject -> schema for ``contracts`` (default: every registered contract), sorted by subject."""
    contracts = all_contracts() if contracts is None else contracts
    return {subject: contract_schema(contracts[subject]) for subject in sorted(contracts)}


def dump_schema(schema: Mapping[str, Any]) -> str:
    """Stable text (sorted keys, one value a line) so a snapshot reads well in a diff."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_path(directory: Path, subject: str) -> Path:
    return directory / f"{subject}{SCHEMA_SUFFIX}"


def read_snapshot(directory: Path) -> dict[str, dict[str, Any]]:
    """Subject -> schema of every ``<subject>.schema.json`` in ``directory`` (none if it does not exist)."""
    snapshot = {}
    for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
        try:
            schema = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SnapshotError(f"{path} is not a readable JSON Schema: {exc}") from None
        if not isinstance(schema, dict):
            raise SnapshotError(f"{path} is not a JSON Schema (a JSON object)")
        snapshot[path.name.removesuffix(SCHEMA_SUFFIX)] = schema
    return snapshot


def write_schemas(directory: Path, schemas: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Write one ``<subject>.schema.json`` per schema into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for subject, schema in schemas.items():
        path = schema_path(directory, subject)
        path.write_text(dump_schema(schema))
        paths.append(path)
    return paths


# -- comparing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotComparison:
    """The code's schemas against a snapshot: what broke, what changed compatibly, what is new."""

    breaking: list[BreakingChange] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # subjects in both whose schema differs
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def compatible(self) -> list[str]:
        broken = {change.subject for change in self.breaking}
        return [subject for subject in self.changed if subject not in broken]

    @property
    def up_to_date(self) -> bool:
        return not (self.changed or self.added or self.removed)


def compare_snapshot(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> SnapshotComparison:
    """Compare every subject of the snapshot ``old`` with the schemas of the code ``new``."""
    result = SnapshotComparison(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        changed=sorted(subject for subject in set(old) & set(new) if old[subject] != new[subject]),
    )
    for subject in result.removed:
        result.breaking.append(
            BreakingChange(
                subject,
                "$",
                "the contract was removed, but a consumer may still read it or a stream still hold it "
                "(retire it deliberately: check_contracts --update --accept-breaking)",
            )
        )
    for subject in result.changed:
        result.breaking.extend(breaking_changes(subject, old[subject], new[subject]))
    return result


def breaking_changes(subject: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[BreakingChange]:
    """Every way the schema ``new`` of ``subject`` breaks the promise of ``old`` (empty: compatible)."""
    comparison = _Comparison(subject, old, new)
    comparison.nodes(old, new, "$", frozenset())
    return list(dict.fromkeys(comparison.changes))  # a constraint shared by anyOf variants is said once


@dataclass(frozen=True)
class _Variant:
    """One alternative of a node (an ``anyOf`` member, one ``type`` of a list), ``$ref``s resolved."""

    schema: Mapping[str, Any]
    ref: str | None  # the ``$ref`` it was reached through, to walk a recursive model once

    @property
    def kind(self) -> str | None:  # None: any kind of value
        return self.schema.get("type")


class _Comparison:
    def __init__(self, subject: str, old_root: Mapping[str, Any], new_root: Mapping[str, Any]):
        self.subject = subject
        self.old_root = old_root
        self.new_root = new_root
        self.changes: list[BreakingChange] = []

    def nodes(self, old: Any, new: Any, path: str, seen: frozenset) -> None:
        """Every value ``old`` accepts must be accepted by ``new``: each old variant finds a new one."""
        old_variants = _variants(old, self.old_root)
        new_variants = _variants(new, self.new_root)
        for old_variant in old_variants:
            candidates = [variant for variant in new_variants if _covers_kind(variant.kind, old_variant.kind)]
            if not candidates:
                now = ", ".join(sorted({variant.kind or "any value" for variant in new_variants})) or "nothing"
                accepted = "any value" if old_variant.kind is None else old_variant.kind
                self._add(path, f"no longer accepts {accepted} (now {now})")
                continue
            attempts = []
            for candidate in candidates:
                pair = (old_variant.ref, candidate.ref)
                if old_variant.ref and candidate.ref and pair in seen:
                    attempts = [[]]  # this pair of models is being compared further up
                    break
                attempt = _Comparison(self.subject, self.old_root, self.new_root)
                attempt.variant(old_variant.schema, candidate.schema, path, seen | {pair})
                attempts.append(attempt.changes)
                if not attempt.changes:
                    break
            self.changes.extend(min(attempts, key=len))

    def variant(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, seen: frozenset) -> None:
        self._values(old, new, path)
        self._bounds(old, new, path)
        self._object(old, new, path, seen)
        self._array(old, new, path, seen)
        for key in sorted(set(new) - _HANDLED - _ANNOTATIONS):
            if not key.startswith("x-") and old.get(key) != new[key]:
                before = f" from {old[key]!r}" if key in old else ""
                self._add(path, f"{key} changed{before} to {new[key]!r} (not analysed, so taken as breaking)")

    def _values(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_values, new_values = _allowed_values(old), _allowed_values(new)
        if new_values is None:
            return
        if old_values is None:
            self._add(path, f"is now restricted to {_listing(new_values)}")
            return
        removed = [value for value in old_values if not any(_same_value(value, kept) for kept in new_values)]
        if removed:
            self._add(path, f"no longer accepts the value(s) {_listing(removed)}")

    def _bounds(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        integer = new.get("type") == "integer"
        for bounds, sign, side in ((_LOWER_BOUNDS, 1, "lower bound"), (_UPPER_BOUNDS, -1, "upper bound")):
            before, after = _bound(old, bounds, sign, integer), _bound(new, bounds, sign, integer)
            if after is None:
                continue
            if before is None:
                self._add(path, f"{side} {_show_bound(after, sign)} was added")
            elif (sign * after[0], after[1]) > (sign * before[0], before[1]):
                self._add(path, f"{side} tightened from {_show_bound(before, sign)} to {_show_bound(after, sign)}")
        for key in _MAXIMA:
            if _number(new.get(key)) is None:
                continue
            if _number(old.get(key)) is None:
                self._add(path, f"{key} {new[key]} was added")
            elif new[key] < old[key]:
                self._add(path, f"{key} lowered from {old[key]} to {new[key]}")
        for key in _MINIMA:
            if _number(new.get(key)) is not None and new[key] > (_number(old.get(key)) or 0):
                self._add(path, f"{key} raised from {old.get(key, 0)} to {new[key]}")
        for key in _EXACT:
            if key in new and key not in old:
                self._add(path, f"{key} {new[key]!r} was added")
            elif key in new and old[key] != new[key]:
                self._add(path, f"{key} changed from {old[key]!r} to {new[key]!r}")
        if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
            self._add(path, "items must now be unique")
        step, old_step = _number(new.get("multipleOf")), _number(old.get("multipleOf"))
        if step and (not old_step or not math.isclose(math.remainder(old_step, step), 0, abs_tol=1e-9)):
            self._add(path, f"multipleOf changed{f' from {old_step}' if old_step else ''} to {step}")

    def _object(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, seen: frozenset) -> None:
        old_properties, new_properties = old.get("properties") or {}, new.get("properties") or {}
        old_required, new_required = set(old.get("required") or ()), set(new.get("required") or ())
        for name in old_properties:
            if name not in new_properties:
                self._add(_member(path, name), "was removed, but a consumer may still read it")
        for name in sorted(new_required - old_required):
            if name in old_properties:
                self._add(_member(path, name), "was optional and is now required: messages without it are refused")
            else:
                self._add(_member(path, name), "is a new required property: messages sent before it lack it")
        for name in old_properties:
            if name in new_properties:
                self.nodes(old_properties[name], new_properties[name], _member(path, name), seen)
        if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
            self._add(path, "no longer accepts properties it does not declare (additionalProperties: false)")
        else:
            self._subschema(old.get("additionalProperties"), new.get("additionalProperties"), f"{path}.*", seen)

    def _array(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, seen: frozenset) -> None:
        old_prefix, new_prefix = old.get("prefixItems") or [], new.get("prefixItems") or []
        for index in range(max(len(old_prefix), len(new_prefix))):
            before = old_prefix[index] if index < len(old_prefix) else old.get("items")
            after = new_prefix[index] if index < len(new_prefix) else new.get("items")
            self._subschema(before, after, f"{path}[{index}]", seen)
        self._subschema(old.get("items"), new.get("items"), f"{path}[*]", seen)

    def _subschema(self, old: Any, new: Any, path: str, seen: frozenset) -> None:
        """``items``/``additionalProperties``: absent or true accepts anything, false nothing."""
        if new is None or new is True or old is False:
            return
        if new is False:
            self._add(path, "is no longer accepted")
            return
        self.nodes({} if old is None or old is True else old, new, path, seen)

    def _add(self, path: str, reason: str) -> None:
        self.changes.append(BreakingChange(self.subject, path, reason))


def _variants(node: Any, root: Mapping[str, Any], ref: str | None = None, depth: int = 0) -> list[_Variant]:
    """The alternatives a node accepts: ``anyOf``/``oneOf`` members, one per ``type``, ``$ref``s followed."""
    if node is False:
        return []  # the schema that accepts nothing
    if not isinstance(node, Mapping) or depth > 50:
        return [_Variant({}, ref)]
    node, ref = _resolve(node, root, ref)
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            shared = {name: value for name, value in node.items() if name not in (key, *_ANNOTATIONS)}
            return [
                _Variant({**shared, **variant.schema}, variant.ref)
                for option in node[key]
                for variant in _variants(option, root, ref, depth + 1)
            ]
    kinds = node.get("type")
    if isinstance(kinds, list):
        return [_Variant({**node, "type": kind}, ref) for kind in kinds]
    if kinds is None and _allowed_values(node) is not None:
        values = _allowed_values(node)
        by_kind: dict[str, list] = {}
        for value in values:
            by_kind.setdefault(_kind_of(value), []).append(value)
        rest = {name: value for name, value in node.items() if name not in ("enum", "const")}
        return [_Variant({**rest, "type": kind, "enum": kept}, ref) for kind, kept in by_kind.items()]
    return [_Variant(node, ref)]


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any], ref: str | None) -> tuple[Mapping[str, Any], str | None]:
    """Follow local ``$ref``s (siblings kept) and merge ``allOf`` parts; a remote ``$ref`` stays as it is."""
    followed = set()
    while isinstance(node.get("$ref"), str) and node["$ref"].startswith("#") and node["$ref"] not in followed:
        target = _pointer(root, node["$ref"])
        if not isinstance(target, Mapping):
            break
        followed.add(node["$ref"])
        ref = node["$ref"]
        node = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    if isinstance(node.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in node["allOf"]:
            if isinstance(part, Mapping):
                resolved, part_ref = _resolve(part, root, None)
                merged.update(resolved)
                ref = ref or part_ref
        node = {**merged, **{key: value for key, value in node.items() if key != "allOf"}}
    return node, ref


def _pointer(root: Mapping[str, Any], ref: str) -> Any:
    target: Any = root
    for part in ref.removeprefix("#").split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, Mapping) or part not in target:
            return None
        target = target[part]
    return target


def _covers_kind(new: str | None, old: str | None) -> bool:
    return new is None or new == old or (new == "number" and old == "integer")


def _allowed_values(schema: Mapping[str, Any]) -> list | None:
    if "const" in schema:
        return [schema["const"]]
    values = schema.get("enum")
    return list(values) if isinstance(values, list) else None


def _kind_of(value: Any) -> str:
    kinds = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"))
    return next(
        (kind for python_type, kind in kinds if isinstance(value, python_type)), "null" if value is None else "object"
    )


def _same_value(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bound(schema: Mapping[str, Any], keywords: Mapping[str, bool], sign: int, integer: bool) -> tuple | None:
    """The tightest bound as (value, exclusive); ``sign`` 1 for a lower bound, -1 for an upper one."""
    bounds = []
    for keyword, exclusive in keywords.items():
        value = _number(schema.get(keyword))
        if value is None:
            continue
        if integer and exclusive and float(value).is_integer():
            value, exclusive = value + sign, False  # > 0 on an integer is >= 1
        bounds.append((value, exclusive))
    return max(bounds, key=lambda bound: (sign * bound[0], bound[1]), default=None)


def _show_bound(bound: tuple, sign: int) -> str:
    value, exclusive = bound
    return f"{'>' if sign > 0 else '<'}{'' if exclusive else '='} {value}"


def _listing(values: Iterable[Any]) -> str:
    return ", ".join(json.dumps(value) for value in values)


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if _IDENTIFIER.match(name) else f"{path}[{json.dumps(name)}]"
