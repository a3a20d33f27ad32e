"""The parameters schema of a custom tool, inferred from its entry point's signature.

The source is only parsed (`ast`), never imported or run.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from tbd_agents.engine.sandbox import entry_point
from tbd_agents.errors import InvalidData

#: JSON Schema types of the annotations a signature may carry (others: any value).
_TYPES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
    "set": "array",
    "dict": "object",
}


def _json_type(annotation: ast.expr | None) -> str | None:
    """The JSON Schema type of an annotation (`int`, `list[str]`, `Optional[int]`, `"int"`)."""
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(annotation, ast.Subscript):
        base = annotation.value
        if isinstance(base, ast.Name | ast.Attribute) and _name(base) == "Optional":
            return _json_type(annotation.slice)
        annotation = base
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        kinds = {_json_type(annotation.left), _json_type(annotation.right)} - {"null"}
        return kinds.pop() if len(kinds) == 1 else None
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return "null"
    return _TYPES.get(_name(annotation) or "")


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def infer_parameters_schema(source: str, tool_name: str) -> dict[str, Any]:
    """The JSON Schema of the entry point's keyword arguments, from its signature: one property
    per parameter (typed from its annotation when it is a basic type), parameters without a
    default are required. Raises InvalidData (syntax error, no entry point) like a save would."""
    entry = entry_point(source, tool_name)
    tree = ast.parse(source)
    func = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry
    )
    args = func.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    params = [
        *zip(positional, defaults, strict=True),
        *zip(args.kwonlyargs, args.kw_defaults, strict=True),
    ]
    properties: dict[str, Any] = {}
    required: list[str] = []
    for arg, default in params:
        prop: dict[str, Any] = {}
        kind = _json_type(arg.annotation)
        if kind and kind != "null":
            prop["type"] = kind
        if default is None:
            required.append(arg.arg)
        else:
            try:
                value = ast.literal_eval(default)
                json.dumps(value)
                prop["default"] = value
            except (ValueError, TypeError, SyntaxError, RecursionError):
                pass
        properties[arg.arg] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


#: What a tool's `parameters_schema` is when nobody wrote one (the model's default, or `{}`).
EMPTY_SCHEMAS: tuple[dict[str, Any], ...] = (
    {},
    {"type": "object", "properties": {}},
    {"type": "object"},
)


def is_empty_schema(schema: Any) -> bool:
    return schema is None or schema in EMPTY_SCHEMAS


def inferred_or_none(source: str, tool_name: str) -> dict[str, Any] | None:
    """The inferred schema, or None when the source does not parse or has no entry point
    (saving such a tool is allowed; validate and run say what is wrong with it)."""
    try:
        return infer_parameters_schema(source, tool_name)
    except InvalidData:
        return None


__all__ = ["EMPTY_SCHEMAS", "infer_parameters_schema", "inferred_or_none", "is_empty_schema"]
