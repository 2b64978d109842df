"""Pydantic validation errors in the project's own words: each names its field as users
write it (`spec.method.decay`), without pydantic's "Value error, " prefix, and an unknown
key or an enumerated value gets a did-you-mean from the names that would be accepted.
Pure Python (no torch), so the API and the CLI share it."""

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

# A validator's message that starts with the field it is about: "eval_data: a sweep ...".
_FIELD_FIRST = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]]*): (.+)$", re.DOTALL)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'mlp'?)` when a choice is close to `word`, else ``."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def field_path(loc: Iterable[str | int]) -> str:
    """A location as users write it: `spec.targets[0].seed`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found += _models_in(arg)
    return found


def _keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> set[str]:
    """The keys the models at `loc` (the unknown key's parent) accept."""
    models = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        inner = [m for parent in models if part in parent.model_fields
                 for m in _models_in(parent.model_fields[part].annotation)]
        models = inner or models  # not a field: a tagged union's tag (`method.ema.decay`)
    return {name for m in models for name in m.model_fields}


def _message(error: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind, message, loc = error["type"], error["msg"], error["loc"]
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "extra_forbidden" and model is not None and loc:
        key = str(loc[-1])
        return f"unknown key {key!r}{did_you_mean(key, _keys_at(model, loc[:-1]))}"
    if kind == "literal_error" and isinstance(error.get("input"), str):
        expected = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        return f"{message}{did_you_mean(error['input'], expected)}"
    return message


def readable_errors(exc: ValidationError, prefix: Sequence[str] = (), model: type[BaseModel] | None = None,
                    ) -> list[dict[str, str]]:
    """[{field, message}] for each error of `exc`, located under `prefix`; `model` (the one
    validated) lets an unknown key be matched against the keys it accepts."""
    errors = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
        message = _message(error, model)
        named = _FIELD_FIRST.match(message) if error["type"] == "value_error" else None
        if named and not loc:  # a model-wide check that names its field
            loc, message = named.group(1).split("."), named.group(2)
        errors.append({"field": field_path([*prefix, *loc]) or ".".join(prefix), "message": message})
    return errors
