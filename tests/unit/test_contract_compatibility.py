"""apps/eventbus/compatibility.py and ``check_contracts``: what a contract may change within its version.

The rules run on schemas of small pydantic models made here; the command runs against a snapshot
folder of the test's own. No database, no NATS.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from apps.eventbus.compatibility import (
    BreakingChange,
    breaking_changes,
    compare_snapshot,
    contract_schema,
    contract_schemas,
    dump_schema,
    read_snapshot,
    schema_path,
    write_schemas,
)
from apps.eventbus.contracts import all_contracts
from tests.testapp.events import SomethingHappened

SUBJECT = "testing.rules.v1"


def schema(config: ConfigDict | None = None, **fields: Any) -> dict:
    """The JSON Schema of a model with these fields: ``name=type`` (required) or ``name=(type, default)``."""
    spec = {name: value if isinstance(value, tuple) else (value, ...) for name, value in fields.items()}
    return create_model("Contract", __config__=config, **spec).model_json_schema()


def reasons(old: dict, new: dict) -> list[str]:
    return [f"{change.path}: {change.reason}" for change in breaking_changes(SUBJECT, old, new)]


def money(**constraints: Any) -> Any:
    """A Decimal shaped like apps/eventbus/money.py's Money (pydantic then writes ge/max_digits as keywords)."""
    return Annotated[Decimal, BeforeValidator(lambda value: value), Field(**constraints)]


def text(max_length: int | None = None, **constraints: Any) -> Any:
    return Annotated[str, Field(max_length=max_length, **constraints)]


def integer(**constraints: Any) -> Any:
    return Annotated[int, Field(**constraints)]


# -- the rules, one each way ------------------------------------------------------------------

BREAKING = {
    "a property removed": (
        schema(a=int, b=(str, "")),
        schema(a=int),
        "$.b: was removed, but a consumer may still read it",
    ),
    "an optional property made required": (
        schema(b=(str, "")),
        schema(b=str),
        "$.b: was optional and is now required: messages without it are refused",
    ),
    "a new required property": (
        schema(a=int),
        schema(a=int, c=int),
        "$.c: is a new required property: messages sent before it lack it",
    ),
    "integer -> string": (schema(a=int), schema(a=str), "$.a: no longer accepts integer (now string)"),
    "number -> integer": (schema(a=float), schema(a=int), "$.a: no longer accepts number (now integer)"),
    "nullable removed": (schema(a=(str | None, None)), schema(a=(str, "")), "$.a: no longer accepts null (now string)"),
    "an anyOf variant removed": (schema(a=int | str), schema(a=int), "$.a: no longer accepts string (now integer)"),
    "an enum value removed": (
        schema(a=Literal["x", "y"]),
        schema(a=Literal["x"]),
        '$.a: no longer accepts the value(s) "y"',
    ),
    "a const changed": (schema(a=Literal["x"]), schema(a=Literal["y"]), '$.a: no longer accepts the value(s) "x"'),
    "an enum imposed": (schema(a=str), schema(a=Literal["x", "y"]), '$.a: is now restricted to "x", "y"'),
    "maxLength lowered": (schema(a=text(10)), schema(a=text(5)), "$.a: maxLength lowered from 10 to 5"),
    "maxLength added": (schema(a=str), schema(a=text(5)), "$.a: maxLength 5 was added"),
    "minLength raised": (schema(a=str), schema(a=text(min_length=1)), "$.a: minLength raised from 0 to 1"),
    "minimum raised": (
        schema(a=integer(ge=0)),
        schema(a=integer(ge=1)),
        "$.a: lower bound tightened from >= 0 to >= 1",
    ),
    "inclusive -> exclusive": (
        schema(a=Annotated[float, Field(ge=0)]),
        schema(a=Annotated[float, Field(gt=0)]),
        "$.a: lower bound tightened from >= 0 to > 0",
    ),
    "maximum added": (schema(a=int), schema(a=integer(le=100)), "$.a: upper bound <= 100 was added"),
    "money: max_digits lowered": (
        schema(a=money(ge=0, max_digits=14, decimal_places=2)),
        schema(a=money(ge=0, max_digits=12, decimal_places=2)),
        "$.a: max_digits lowered from 14 to 12",
    ),
    "money: ge raised": (
        schema(a=money(ge=0, max_digits=14)),
        schema(a=money(ge=1, max_digits=14)),
        "$.a: lower bound tightened from >= 0 to >= 1",
    ),
    "a pattern changed (even a wider one)": (
        schema(a=text(pattern="^[A-Z]{3}$")),
        schema(a=text(pattern="^[A-Z]{2,3}$")),
        "$.a: pattern changed from '^[A-Z]{3}$' to '^[A-Z]{2,3}$'",
    ),
    "a pattern added": (schema(a=str), schema(a=text(pattern="^x$")), "$.a: pattern '^x$' was added"),
    "a format added": (schema(a=str), schema(a=datetime), "$.a: format 'date-time' was added"),
    "multipleOf tightened": (
        schema(a=integer(multiple_of=2)),
        schema(a=integer(multiple_of=4)),
        "$.a: multipleOf changed from 2 to 4",
    ),
    "items made unique": (schema(a=list[int]), schema(a=set[int]), "$.a: items must now be unique"),
    "extra properties forbidden": (
        schema(a=int),
        schema(ConfigDict(extra="forbid"), a=int),
        "$: no longer accepts properties it does not declare (additionalProperties: false)",
    ),
    "array items narrowed": (
        schema(a=list[int | str]),
        schema(a=list[int]),
        "$.a[*]: no longer accepts string (now integer)",
    ),
    "dict values narrowed": (
        schema(a=dict[str, int | str]),
        schema(a=dict[str, int]),
        "$.a.*: no longer accepts string (now integer)",
    ),
    "a tuple member narrowed": (
        schema(a=tuple[int, int | str]),
        schema(a=tuple[int, int]),
        "$.a[1]: no longer accepts string (now integer)",
    ),
    "a keyword not analysed (propertyNames)": (
        schema(a=dict[str, int]),
        schema(a=dict[text(3), int]),
        "$.a: propertyNames changed to {'maxLength': 3} (not analysed, so taken as breaking)",
    ),
}


@pytest.mark.parametrize(("old", "new", "expected"), list(BREAKING.values()), ids=list(BREAKING))
def test_a_breaking_change_is_reported_with_its_path(old, new, expected):
    assert reasons(old, new) == [expected]


COMPATIBLE = {
    "nothing changed": (schema(a=int), schema(a=int)),
    "a new optional property": (schema(a=int), schema(a=int, b=(str | None, None))),
    "a required property made optional": (schema(a=int), schema(a=(int, 0))),
    "an enum widened": (schema(a=Literal["x"]), schema(a=Literal["x", "y"])),
    "an enum dropped": (schema(a=Literal["x", "y"]), schema(a=str)),
    "nullable added": (schema(a=str), schema(a=(str | None, None))),
    "integer -> number": (schema(a=int), schema(a=float)),
    "an anyOf variant added": (schema(a=int), schema(a=int | str)),
    "maxLength raised": (schema(a=text(5)), schema(a=text(10))),
    "maxLength dropped": (schema(a=text(5)), schema(a=str)),
    "minimum lowered": (schema(a=integer(ge=1)), schema(a=integer(ge=0))),
    "exclusive -> inclusive": (schema(a=integer(gt=0)), schema(a=integer(ge=1))),
    "money loosened": (schema(a=money(ge=1, max_digits=12)), schema(a=money(ge=0, max_digits=14))),
    "a pattern dropped": (schema(a=text(pattern="^x$")), schema(a=str)),
    "multipleOf loosened": (schema(a=integer(multiple_of=4)), schema(a=integer(multiple_of=2))),
    "descriptions, titles, defaults": (
        schema(a=(int, Field(0, description="old"))),
        schema(a=(int, Field(5, description="new", title="Other"))),
    ),
    "extra properties allowed again": (schema(ConfigDict(extra="forbid"), a=int), schema(a=int)),
    "array items widened": (schema(a=list[int]), schema(a=list[int | str])),
    "dict values widened": (schema(a=dict[str, int]), schema(a=dict[str, int | str])),
}


@pytest.mark.parametrize(("old", "new"), list(COMPATIBLE.values()), ids=list(COMPATIBLE))
def test_an_additive_change_passes(old, new):
    assert reasons(old, new) == []


# -- nested models: $ref/$defs, arrays, optional models, recursion ---------------------------


class Line(BaseModel):
    sku: str
    quantity: int


class LineWithoutQuantity(BaseModel):
    sku: str


class LineWithNote(BaseModel):
    sku: str
    quantity: int
    note: str = ""


class LineWithRequiredNote(BaseModel):
    sku: str
    quantity: int
    note: str


class LineWithTextQuantity(BaseModel):
    sku: str
    quantity: str


def test_a_nested_model_is_followed_through_its_ref_and_array_items():
    old = schema(lines=(list[Line], []), main=(Line | None, None))  # main: anyOf [$ref, null]
    assert "$ref" in json.dumps(old["properties"])
    assert reasons(old, schema(lines=(list[LineWithoutQuantity], []), main=(Line | None, None))) == [
        "$.lines[*].quantity: was removed, but a consumer may still read it"
    ]
    assert reasons(old, schema(lines=(list[LineWithRequiredNote], []), main=(Line | None, None))) == [
        "$.lines[*].note: is a new required property: messages sent before it lack it"
    ]
    assert reasons(old, schema(lines=(list[Line], []), main=(LineWithTextQuantity | None, None))) == [
        "$.main.quantity: no longer accepts integer (now string)"
    ]


def test_a_nested_model_may_grow_and_be_renamed():
    old = schema(lines=(list[Line], []))
    assert reasons(old, schema(lines=(list[LineWithNote], []))) == []  # $defs/Line -> $defs/LineWithNote


class Node(BaseModel):
    name: str
    children: list[Node] = []


class NodeWithoutName(BaseModel):
    children: list[NodeWithoutName] = []


def test_a_recursive_model_is_walked_once():
    assert Node.model_json_schema()["$ref"] == "#/$defs/Node"
    assert reasons(Node.model_json_schema(), NodeWithoutName.model_json_schema()) == [
        "$.name: was removed, but a consumer may still read it"
    ]
    assert reasons(Node.model_json_schema(), Node.model_json_schema()) == []


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]


class Fish(BaseModel):
    kind: Literal["fish"]


def test_a_discriminated_union_may_gain_a_variant_but_not_lose_one():
    two = schema(pet=Annotated[Cat | Dog, Field(discriminator="kind")])
    three = schema(pet=Annotated[Cat | Dog | Fish, Field(discriminator="kind")])
    assert "discriminator" in json.dumps(two)
    assert reasons(two, three) == []
    assert reasons(three, two) == ['$.pet.kind: no longer accepts the value(s) "fish"']


def test_a_breaking_change_reads_as_a_sentence_naming_subject_and_path():
    (change,) = breaking_changes(SUBJECT, schema(a=int, b=(str, "")), schema(a=int))
    assert change == BreakingChange(SUBJECT, "$.b", "was removed, but a consumer may still read it")
    assert str(change) == "testing.rules.v1 $.b: was removed, but a consumer may still read it"


def test_a_snapshot_may_gain_subjects_and_change_compatibly_but_not_lose_one():
    v1 = schema(a=int)
    result = compare_snapshot(
        {"testing.rules.v1": v1, "testing.gone.v1": v1, "testing.grown.v1": v1},
        {"testing.rules.v1": v1, "testing.rules.v2": schema(a=str), "testing.grown.v1": schema(a=int, b=(int, 0))},
    )
    assert result.added == ["testing.rules.v2"]
    assert result.compatible == ["testing.grown.v1"]
    assert [str(change) for change in result.breaking] == [
        "testing.gone.v1 $: the contract was removed, but a consumer may still read it or a stream still hold it "
        "(retire it deliberately: check_contracts --update --accept-breaking)"
    ]
    assert not result.up_to_date
    assert compare_snapshot({"testing.rules.v1": v1}, {"testing.rules.v1": v1}).up_to_date


# -- the command ------------------------------------------------------------------------------


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """A snapshot folder that matches the code (test contracts included)."""
    write_schemas(tmp_path, contract_schemas())
    return tmp_path


def check(snapshot: Path, *options: str) -> str:
    out = StringIO()
    call_command("check_contracts", "--snapshot", str(snapshot), *options, stdout=out, stderr=StringIO())
    return out.getvalue()


def edit(snapshot: Path, subject: str, change) -> str:
    """Rewrite one snapshot file as if the code had been different when it was taken; return the new text."""
    path = schema_path(snapshot, subject)
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(dump_schema(schema))
    return path.read_text()


def had_a_label(schema: dict) -> None:  # the code has since removed it: breaking
    schema["properties"]["label"] = {"type": "string", "title": "Label"}


def had_no_mode(schema: dict) -> None:  # the code has since added an optional property: compatible
    del schema["properties"]["mode"]


def texts(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


def test_check_passes_when_the_snapshot_matches(snapshot):
    assert f"{len(all_contracts())} contract(s) match the snapshot" in check(snapshot, "--strict")


def test_check_fails_on_a_breaking_change_naming_subject_path_and_the_fix(snapshot):
    edit(snapshot, "testing.happened.v1", had_a_label)
    with pytest.raises(CommandError) as error:
        check(snapshot)
    message = str(error.value)
    assert "1 breaking change(s)" in message
    assert "testing.happened.v1 $.label: was removed, but a consumer may still read it" in message
    assert "<domain>.<event>.v<N+1>" in message


def test_compatible_changes_pass_and_name_the_subjects_but_fail_strict(snapshot):
    edit(snapshot, "testing.happened.v1", had_no_mode)
    schema_path(snapshot, "testing.happened.v2").unlink()
    out = check(snapshot)
    assert "testing.happened.v1: changed compatibly" in out
    assert "testing.happened.v2: new contract" in out
    assert "is out of date: run `manage.py check_contracts --update`" in out
    with pytest.raises(CommandError, match="is out of date"):
        check(snapshot, "--strict")


def test_update_writes_compatible_changes_and_a_second_run_changes_nothing(snapshot):
    edit(snapshot, "testing.happened.v1", had_no_mode)
    schema_path(snapshot, "testing.happened.v2").unlink()
    out = check(snapshot, "--update")
    assert "wrote" in out and "testing.happened.v2.schema.json" in out
    after = texts(snapshot)
    assert after == {schema_path(Path(), s).name: dump_schema(x) for s, x in contract_schemas().items()}
    assert "up to date; nothing written" in check(snapshot, "--update")
    assert texts(snapshot) == after
    check(snapshot, "--strict")


def test_update_refuses_a_breaking_change_unless_it_is_accepted(snapshot):
    before = edit(snapshot, "testing.happened.v1", had_a_label)
    with pytest.raises(CommandError, match=r"(?s)\$\.label: was removed.*The snapshot was not updated"):
        check(snapshot, "--update")
    assert schema_path(snapshot, "testing.happened.v1").read_text() == before
    with pytest.raises(CommandError, match="--accept-breaking only applies to --update"):
        check(snapshot, "--accept-breaking")

    check(snapshot, "--update", "--accept-breaking")
    assert "label" not in schema_path(snapshot, "testing.happened.v1").read_text()
    check(snapshot, "--strict")


def test_a_removed_contract_is_breaking_and_retired_only_deliberately(snapshot):
    write_schemas(snapshot, {"testing.retired.v1": contract_schema(SomethingHappened)})
    with pytest.raises(CommandError, match=r"testing\.retired\.v1 \$: the contract was removed"):
        check(snapshot)
    check(snapshot, "--update", "--accept-breaking")
    assert not schema_path(snapshot, "testing.retired.v1").exists()


def test_an_unreadable_snapshot_file_is_named(snapshot):
    schema_path(snapshot, "testing.happened.v1").write_text("{not json")
    with pytest.raises(CommandError, match=r"testing\.happened\.v1\.schema\.json is not a readable JSON Schema"):
        check(snapshot)


def test_export_schemas_writes_what_the_snapshot_holds(tmp_path):
    call_command("export_schemas", str(tmp_path), stdout=StringIO())
    assert texts(tmp_path) == {schema_path(Path(), s).name: dump_schema(x) for s, x in contract_schemas().items()}


def test_the_committed_snapshot_matches_the_code():
    """CI runs ``make check-contracts``; this says the same in the suite (the test app's contracts aside)."""
    contracts = {subject: c for subject, c in all_contracts().items() if not c.__module__.startswith("tests.")}
    folder = Path(settings.BASE_DIR) / "contracts"
    current = contract_schemas(contracts)
    result = compare_snapshot(read_snapshot(folder), current)
    advice = "run `manage.py check_contracts --update` and commit contracts/"
    assert result.breaking == [], advice
    assert {"changed": result.changed, "new": result.added, "removed": result.removed} == {
        "changed": [],
        "new": [],
        "removed": [],
    }, advice
    for subject, schema in current.items():
        assert schema_path(folder, subject).read_text() == dump_schema(schema), advice
