"""The test-suite file format as pydantic models, and the JSON Schema published from them."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from verdict.cedar_json import parse_uid
from verdict.errors import RequestError
from verdict.json_values import LONG_MAX, LONG_MIN
from verdict.model import EntityUid
from verdict.uid_arg import parse_uid_arg

SCHEMA_ID = "https://verdict.example/schemas/policy-test-suite.schema.json"
# Cedar's datetime forms: a date, or a date and time with Z or a +hhmm/-hhmm offset.
DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{3})?(Z|[+-]\d{4}))?$"
DecisionName = Literal["allow", "deny", "invalid"]

_UID_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "pattern": "^.+::.+$",
            "description": 'TYPE::"ID" (Cedar\'s form, with its escapes) or TYPE::ID '
            "(split at the last ::, id verbatim)",
        },
        {
            "type": "object",
            "properties": {"type": {"type": "string"}, "id": {"type": "string"}},
            "required": ["type", "id"],
            "additionalProperties": False,
        },
    ]
}


def _to_uid(value: Any) -> EntityUid:
    if isinstance(value, str):
        try:
            return parse_uid_arg(value, "uid")
        except RequestError:
            raise PydanticCustomError(
                "uid",
                'must be written TYPE::"ID" or TYPE::ID, e.g. Loan::"loan-1001" or Loan::loan-1001',
            ) from None
    uid = parse_uid(value)
    if uid is None or "__entity" in value:
        raise PydanticCustomError(
            "uid", 'must be TYPE::"ID", TYPE::ID or {"type": <type name>, "id": <string>}'
        )
    return uid


Uid = Annotated[EntityUid, PlainValidator(_to_uid), WithJsonSchema(_UID_SCHEMA)]
JsonRecord = dict[str, Any]


def check_cedar_json(value: Any) -> None:
    """Reject what Cedar JSON cannot hold: floats, huge integers, non-JSON types (from YAML)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if not LONG_MIN <= item <= LONG_MAX:
                raise PydanticCustomError("cedar_json", "integer outside Cedar's 64-bit range")
        elif isinstance(item, float):
            raise PydanticCustomError("cedar_json", 'Cedar has no floats (use decimal("..."))')
        elif isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                raise PydanticCustomError("cedar_json", "record keys must be strings")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            raise PydanticCustomError(
                "cedar_json", "value is not JSON ({kind})", {"kind": type(item).__name__}
            )


class Expectation(BaseModel):
    """What a case must produce: the decision, and optionally its evidence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: DecisionName = Field(description="allow, deny, or invalid (request rejected)")
    policies: list[str] | None = Field(
        default=None, description="exact set of determining policy ids (omit: not checked)"
    )
    errors: list[str] = Field(
        default_factory=list,
        description="exact set of policy ids whose evaluation errors (omit: none allowed)",
    )
    field: str | None = Field(
        default=None, description="for invalid: the request field at fault, e.g. context_json"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Expectation:
        if self.decision == "invalid" and (self.policies is not None or self.errors):
            raise ValueError("an invalid request has no determining policies or errors")
        if self.decision != "invalid" and self.field is not None:
            raise ValueError("field only applies to decision: invalid")
        return self


def _expect_shorthand(value: Any) -> Any:
    return {"decision": value} if isinstance(value, str) else value


class Case(BaseModel):
    """One request and the answer it must get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="unique within the suite")
    description: str = ""
    principal: Uid
    action: Uid
    resource: Uid
    context: JsonRecord = Field(
        default_factory=dict, description="merged over the suite's context; null removes a key"
    )
    now: str | None = Field(
        default=None, pattern=DATETIME_PATTERN, description="pins the time attribute of the context"
    )
    entities: list[JsonRecord] = Field(
        default_factory=list, description="extra Cedar JSON entities for this case only"
    )
    expect: Annotated[Expectation, BeforeValidator(_expect_shorthand)]

    @field_validator("context")
    @classmethod
    def _context_json(cls, value: JsonRecord) -> JsonRecord:
        # A top-level null removes an attribute the suite sets; Cedar itself has no null.
        check_cedar_json([v for v in value.values() if v is not None])
        return value

    @field_validator("entities")
    @classmethod
    def _entities_json(cls, value: list[JsonRecord]) -> list[JsonRecord]:
        check_cedar_json(value)
        return value


class Suite(BaseModel):
    """A named list of cases run against one policy store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_uri: str | None = Field(
        default=None, alias="$schema", description="JSON Schema of this file, for editors"
    )
    name: str = Field(min_length=1)
    description: str = ""
    store: str | None = Field(
        default=None, description="store id; default: the store whose tests/ holds the file"
    )
    entities: list[JsonRecord] | str | None = Field(
        default=None,
        description="Cedar JSON entities inline, or a file path relative to this file; "
        "default: the store's entities.json",
    )
    context: JsonRecord = Field(default_factory=dict, description="context defaults for cases")
    now: str | None = Field(
        default=None, pattern=DATETIME_PATTERN, description="default time for every case"
    )
    time_attribute: str = Field(
        default="now", min_length=1, description="context attribute that now: fills"
    )
    cases: list[Case] = Field(min_length=1)

    @field_validator("context", "entities")
    @classmethod
    def _cedar_json(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            check_cedar_json(value)
        return value


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``where: problem``, naming the allowed keys for an unknown one."""
    where = _dotted(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(tuple(error["loc"][:-1])))
        return f"{where}: unknown key (allowed here: {allowed})"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _allowed_keys(parent: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = Suite
    if len(parent) >= 2:
        model = Case
    if len(parent) == 3 and parent[2] == "expect":
        model = Expectation
    return [info.alias or name for name, info in model.model_fields.items()]


def _dotted(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def suite_json_schema() -> dict[str, Any]:
    """The JSON Schema of a suite file, generated from the models (``expect`` shorthand added)."""
    schema = copy.deepcopy(Suite.model_json_schema(by_alias=True))
    case = schema["$defs"]["Case"]["properties"]
    case["expect"] = {
        "anyOf": [
            {"type": "string", "enum": ["allow", "deny", "invalid"]},
            {"$ref": "#/$defs/Expectation"},
        ],
        "description": "a decision, or a mapping with the decision and its evidence",
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
