"""The user's own functions named in a run file as `package.module:function`, imported and
checked before anything heavy loads: a missing module, a missing name or a signature that
cannot take the arguments is a one-line `ConfigError` naming the key."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from largeforge.domain.errors import ConfigError


def import_function(path: str, where: str) -> Callable[..., Any]:
    """The callable at `path` (`package.module:function`); the current directory is importable,
    as it is for `python -m`."""
    module_name, _, attribute = path.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ConfigError(f"{where}: cannot import {path!r}: no module named {missing!r}") from None
    except Exception as exc:  # the user's module failed while it was imported
        raise ConfigError(
            f"{where}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, attribute, None)
    if function is None:
        raise ConfigError(f"{where}: module {module_name!r} has no {attribute!r}")
    if not callable(function):
        raise ConfigError(f"{where}: {path!r} is a {type(function).__name__}, not a function")
    return function  # type: ignore[no-any-return]


def takes_kwargs(function: Callable[..., Any]) -> bool:
    """Whether `function` takes `**kwargs` (False when it has no readable signature)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_keywords(function: Callable[..., Any], keywords: Iterable[str], where: str) -> None:
    """`ConfigError` unless `function` can be called with exactly these keyword arguments
    (each named as a parameter, or taken by `**kwargs`) and needs no other."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C function without a signature: it is called as it is
    given = set(keywords)
    params = signature.parameters.values()
    takes_any = takes_kwargs(function)
    named = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    shown = f"({', '.join(sorted(given))}, **kwargs)"
    required = {
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind is not inspect.Parameter.VAR_KEYWORD
        and p.kind is not inspect.Parameter.VAR_POSITIONAL
    }
    positional_only = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    if positional_only:
        raise ConfigError(
            f"{where}: {function.__name__} takes {positional_only[0]!r} by position only; it is "
            f"called with keywords {shown}"
        )
    unknown = sorted(required - given)
    if unknown:
        raise ConfigError(
            f"{where}: {function.__name__} needs {unknown[0]!r}, which is not passed; it is "
            f"called with keywords {shown}"
        )
    if not takes_any and not given <= named:
        missing = sorted(given - named)[0]
        raise ConfigError(
            f"{where}: {function.__name__} cannot take {missing!r}: give it **kwargs; it is "
            f"called with keywords {shown}"
        )
