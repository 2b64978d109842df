"""Bound a free-form JSON document a client sends (a job spec): depth, strings, numbers.

Checked before anything else touches the document: serializers and database JSON
operators fail on what JSON parsing lets through (deep nesting, NaN, lone surrogates,
integers of thousands of digits).
"""

import math
from typing import Any

from app.core.validation.text import text_fault
from trajx.errors import InvalidInput

# Integers beyond int64 do not fit a PostgreSQL bigint nor most clients' JSON parsers.
MAX_JSON_INT = 2**63 - 1


def check_json_document(document: Any, field: str, max_depth: int) -> None:
    """422 `validation_error` naming the path of the first value that may not be stored."""
    stack: list[tuple[Any, str, int]] = [(document, field, 1)]
    while stack:
        value, path, depth = stack.pop()
        fault = _fault(value, depth, max_depth)
        if fault is not None:
            raise InvalidInput(f"{path}: {fault}", code="validation_error",
                               errors=[{"field": path, "message": fault}])
        if isinstance(value, dict):
            for key, item in value.items():
                key_fault = text_fault(key) if isinstance(key, str) else "keys must be strings"
                if key_fault is not None:
                    raise InvalidInput(f"{path}: a key {key_fault}", code="validation_error",
                                       errors=[{"field": path, "message": f"a key {key_fault}"}])
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _fault(value: Any, depth: int, max_depth: int) -> str | None:
    if isinstance(value, dict | list) and depth > max_depth:
        return f"nested deeper than {max_depth} levels"
    if isinstance(value, str):
        return text_fault(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN and Infinity are not JSON numbers"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INT:
        return f"integer out of range (|x| <= {MAX_JSON_INT})"
    return None
