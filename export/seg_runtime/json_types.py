"""Type predicates for values read from JSON (``model.json``, records): ``bool`` is never a number."""

from __future__ import annotations

from typing import Any


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_str_list_or_none(value: Any) -> bool:
    return value is None or is_str_list(value)


def is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_int(v) for v in value)


def is_str_int_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(is_int(v) for v in value.values())


def is_str_str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def is_str_number_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(is_number(v) for v in value.values())


def is_str_int_list_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(is_int_list(v) for v in value.values())
