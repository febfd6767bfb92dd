"""Type hints as a config's values meet them: whether a plain value (what a resolved config holds:
None, bool, int, float, str, list, dict) is of the type a constructor's hint names, and the type in
words for the message that refuses it (scalinglab.guards.check_types)."""

from __future__ import annotations

import contextlib
import functools
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


@functools.cache
def constructor_hints(cls: type) -> dict[str, Any]:
    """A class's constructor type hints, its bases' included (a subclass's win); a base whose
    hints do not evaluate (a name imported only for type checkers) is left unchecked."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            with contextlib.suppress(Exception):
                hints |= typing.get_type_hints(klass.__init__)
    hints.pop("return", None)
    return hints


_LISTS = (list, tuple, set, frozenset, Sequence, Iterable)  # what a config's list may be given as
_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def conforms(value: Any, hint: Any) -> bool:
    """Whether a config's plain value is of the type `hint` names. A node that builds an object
    (`_target_`), and a hint that names no type (Any, a TypeVar, a string), pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(value, dict) and "_target_" in value:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return (
            isinstance(value, list) and len(value) == len(args) and all(map(conforms, value, args))
        )
    if origin in _LISTS or hint in _LISTS:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value if args)
    if origin in (dict, Mapping):
        return isinstance(value, dict)
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, int | float)
    if hint is type(None):
        return value is None
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return isinstance(value, str)
    return isinstance(value, hint) if isinstance(hint, type) else True


def described(hint: Any) -> str:
    """What a hint asks of a config's value, in words; a union leaves out the classes a config
    cannot give (`float | Tensor` is "a number")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        given = [a for a in args if not _object_only(a)] or list(args)
        return " or ".join(dict.fromkeys(map(described, given)))
    if origin is typing.Literal:
        return f"one of {', '.join(map(repr, args))}"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"[{', '.join(map(described, args))}]"
    if origin in _LISTS or hint in _LISTS:
        return "a list"
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping"
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return "a path"
    return _WORDS.get(hint) or f"a {getattr(hint, '__name__', hint)}"


def _object_only(hint: Any) -> bool:
    """A class that only Python code can give (a Tensor), never a config's value."""
    return (
        isinstance(hint, type)
        and hint not in (*_WORDS, type(None), dict, *_LISTS)
        and not issubclass(hint, os.PathLike)
    )
