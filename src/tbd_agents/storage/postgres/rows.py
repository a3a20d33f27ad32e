"""Rows of our own typed tables → domain models, without validating them a second time.

Every row of an entity table was validated by the model on its way in (the repository writes
only model instances) and every column has the SQL type derived from the field's annotation
(`schema.py`), so asyncpg already returns the right Python types: text → str, integer → int,
double → float, boolean → bool, text[] / double[] → list, JSONB → dict/list, TIMESTAMPTZ →
timezone-aware UTC datetime. What remains is turning enum text back into enum members and
making sure datetimes are UTC; the record is then made as `model_construct` makes it, without its per-field
bookkeeping (~10x cheaper than `model_validate`, which costs ~19 µs for an agent).

Length and number bounds of fields (`min_length`, `ge`…) are checked, since the tables do not
enforce all of them. A model with a field of any other kind or constraint gets no fast builder,
and a row whose enum text is not an exact member value or whose value is out of bounds (a row
written by other means) gives None, so the caller falls back to full validation, which names
the field.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, get_args, get_origin

import annotated_types
from pydantic import AfterValidator
from pydantic.fields import FieldInfo

from tbd_agents.domain.models import Entity, NameRule
from tbd_agents.domain.types import LenientEnum, to_utc

#: Types asyncpg returns as they are for their columns (no conversion needed).
_PLAIN = (str, int, float, bool)
_Converter = Callable[[Any], Any]
#: Validators whose work the converters below do (UTC datetimes, lenient enum input).
_CONVERTED_VALIDATORS = (AfterValidator(to_utc), LenientEnum)
#: Marks a field whose value is taken as the driver returned it.
_AS_IS = None
Builder = Callable[[Mapping[str, Any]], Entity | None]


def _utc(value: Any) -> Any:
    if value is None or value.tzinfo is UTC:  # asyncpg's TIMESTAMPTZ values: already UTC
        return value
    return to_utc(value)


def _bounds_check(info: FieldInfo) -> Callable[[Any], bool] | None:
    """A test of the field's length/number bounds (which the tables do not all enforce), or None
    if the field has none. Any other kind of constraint: the model gets no fast builder."""
    low_len = high_len = None
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.MinLen):
            low_len = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            high_len = item.max_length
        elif isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, NameRule):
            continue  # a rule for request bodies, not for stored records
        elif item not in _CONVERTED_VALIDATORS:
            raise _Unsupported
    if low_len is None and high_len is None and low is None and high is None:
        return None

    def ok(value: Any) -> bool:
        if value is None:
            return True
        if low_len is not None and len(value) < low_len:
            return False
        if high_len is not None and len(value) > high_len:
            return False
        return (low is None or value >= low) and (high is None or value <= high)

    return ok


class _Unsupported(Exception):
    """A field constraint this module does not check."""


def _enum_converter(enum: type[Enum]) -> _Converter:
    members = {m.value: m for m in enum}

    def convert(value: Any) -> Any:
        if value is None:
            return None
        return members[value]  # KeyError: not an exact value; the caller validates the row

    return convert


def _unwrap_optional(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _plain_container(annotation: Any) -> bool:
    """list[str], list[float], dict[str, Any], dict[str, str], list[dict[str, Any]]."""
    origin = get_origin(annotation)
    args = [_strip_annotated(a) for a in get_args(annotation)]
    if origin is list and len(args) == 1:
        item = args[0]
        return item in (str, float) or (get_origin(item) is dict and _plain_container(item))
    if origin is dict and len(args) == 2:
        return args[0] is str and args[1] in (Any, str)
    return False


def _converter(info: FieldInfo) -> tuple[bool, _Converter | None]:
    """(supported, converter) for one field; converter None = take the value as it is."""
    annotation = _strip_annotated(_unwrap_optional(_strip_annotated(info.annotation)))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return True, _enum_converter(annotation)
    if annotation is datetime:
        return True, _utc
    if annotation in _PLAIN or annotation is Any or _plain_container(annotation):
        return True, _AS_IS
    return False, None


def _plain_class(model: type[Entity]) -> bool:
    """No aliases, post-init hook, private attributes or extras: `model_construct` would only
    set `__dict__` and the fields set, which `build` then does directly."""
    return (
        not model.__pydantic_post_init__
        and not model.__private_attributes__
        and model.model_config.get("extra") != "allow"
        and all(f.alias is None and f.validation_alias is None for f in model.model_fields.values())
    )


@functools.cache
def row_builder(model: type[Entity]) -> Builder | None:
    """A function building `model` from a dict of one row of its table (column → value), or None
    if some field of the model is of a kind this module does not build (use `model_validate`).
    The function returns None for a row it cannot trust (see the module's docstring)."""
    names: list[str] = []
    converted: list[tuple[str, _Converter]] = []
    checked: list[tuple[str, Callable[[Any], bool]]] = []
    for name, info in model.model_fields.items():
        supported, convert = _converter(info)
        try:
            check = _bounds_check(info)
        except _Unsupported:
            return None
        if not supported:
            return None
        names.append(name)
        if check is not None:
            checked.append((name, check))
        if convert is not None:
            converted.append((name, convert))
    if not _plain_class(model):
        return None
    new, setattr_ = model.__new__, object.__setattr__
    all_set = frozenset(names)

    def build(row: Mapping[str, Any]) -> Entity | None:
        try:
            values = {name: row[name] for name in names}  # in field order, as validation makes
            for name, convert in converted:
                values[name] = convert(values[name])
        except KeyError:
            return None
        for name, check in checked:
            if not check(values[name]):
                return None  # out of bounds: validation names the field
        record = new(model)
        setattr_(record, "__dict__", values)
        setattr_(record, "__pydantic_fields_set__", set(all_set))
        setattr_(record, "__pydantic_extra__", None)
        setattr_(record, "__pydantic_private__", None)
        return record

    return build
