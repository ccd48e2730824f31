"""Component specs: the strings that name an activation, initialiser, optimiser or schedule.

A spec is ``"name"`` or ``"name(arg, key=value, ...)"`` with literal arguments, e.g.
``"leaky_relu(alpha=0.01)"`` or ``"step(step_size=10, gamma=0.5)"``; config files and CLI
flags use the same strings. Parsing never evaluates code: arguments must be Python literals.
"""

from __future__ import annotations

import ast
import inspect
import math
import types
import typing

from shared.text import did_you_mean, repeated, shortened

SPEC_FORM = "expected 'name' or 'name(key=value, ...)'"


def parse_spec(spec: str) -> tuple[str, list, dict]:
    """Split ``"name(a, k=v)"`` into ``(name, [a], {"k": v})``; names are lower-cased."""
    text = spec.strip()
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # the last two: nesting too deep
        raise ValueError(f"cannot parse {shortened(repr(spec))}: {SPEC_FORM}") from None
    if isinstance(node, ast.Name):
        return node.id.lower(), [], {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"cannot parse {shortened(repr(spec))}: {SPEC_FORM}")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):  # TypeError: {[1]: 2}
        raise ValueError(f"cannot parse {shortened(repr(spec))}: arguments must be literal numbers, strings or "
                         "lists") from None
    if None in kwargs:
        raise ValueError(f"cannot parse {spec!r}: '**' is not allowed")
    if twice := repeated(k.arg for k in node.keywords):  # f(a=1, a=2) parses, and the last would win unseen
        raise ValueError(f"cannot parse {shortened(repr(spec))}: {', '.join(twice)} "
                         f"{'is' if len(twice) == 1 else 'are'} given more than once")
    return node.func.id.lower(), args, kwargs


def build(registry: dict, spec, kind: str, **overrides):
    """Instantiate ``registry[name](*args, **kwargs, **overrides)`` from a spec string.

    ``spec`` may also be a dict ``{"name": ..., **kwargs}``. ``kind`` names the component in
    error messages ("activation", "optimizer", ...)."""
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name, args = str(kwargs.pop("name")).lower(), []
    elif isinstance(spec, str):
        name, args, kwargs = parse_spec(spec)
    else:
        raise TypeError(f"{kind} spec must be a string or a dict, not {type(spec).__name__}")
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}{did_you_mean(name, registry)}; known: {', '.join(sorted(registry))}")
    what = f"{kind} {name!r}"
    if args:
        kwargs.update(_positional(registry[name], args, kwargs, overrides, what))
    _check_arguments(registry[name], kwargs, overrides, what, name)
    kwargs.update(overrides)
    try:
        return registry[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {what}: {exc}") from None


def _positional(factory, args: list, kwargs: dict, overrides: dict, what: str) -> dict:
    """The spec's positional values by name. They fill the parameters the caller does not supply:
    ``step(5)`` is ``step_size=5`` when the trainer gives ``lr`` itself (Python would give 5 to ``lr``
    and then refuse the ``lr`` keyword as given twice)."""
    names = [name for name, parameter in inspect.signature(factory).parameters.items()
             if name not in overrides and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(names):
        takes = f"it takes at most {len(names)} ({', '.join(names)})" if names else "it takes none"
        raise ValueError(f"bad arguments for {what}: {len(args)} values without names; {takes}")
    named = dict(zip(names, args))
    if twice := sorted(set(named) & set(kwargs)):
        raise ValueError(f"bad arguments for {what}: {', '.join(twice)} given both by position and by name")
    return named


def _check_arguments(factory, kwargs: dict, overrides: dict, what: str, name: str) -> None:
    """Refuse a spec's argument that the component does not take, or of the wrong kind, and one it
    needs that is missing, in words (not Python's "'float' object is not iterable" or "<lambda>()
    missing 1 required positional argument"): each is checked against its annotation."""
    parameters = {name: parameter for name, parameter in inspect.signature(factory, eval_str=True).parameters.items()
                  if name not in overrides and parameter.kind != parameter.VAR_POSITIONAL}
    takes_any = any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters.values())
    settable = [name for name, parameter in parameters.items() if parameter.kind != parameter.VAR_KEYWORD]
    for key, value in kwargs.items():
        if key not in parameters and not takes_any:
            takes = f"its arguments: {', '.join(settable)}" if settable else "it takes no arguments"
            raise ValueError(f"bad arguments for {what}: no argument {key!r} ({takes})")
        expected = _mismatch(value, parameters[key].annotation) if key in parameters else None
        if expected:
            raise ValueError(f"bad arguments for {what}: {key} must be {expected}, got {shortened(repr(value))}")
    needed = [key for key, parameter in parameters.items() if parameter.default is parameter.empty
              and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) and key not in kwargs]
    if needed:
        example = ", ".join(f"{key}=..." for key in needed)
        raise ValueError(f"{what} needs {' and '.join(needed)}: give it as {name}({example})")


def _mismatch(value, annotation) -> str | None:
    """What ``value`` should be when it does not fit ``annotation`` (float, int, bool, a tuple of
    them, or one of those or None); None when it fits or the parameter is not annotated."""
    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in kinds:
        return None
    kind = next((k for k in kinds if k is not type(None)), inspect.Parameter.empty)
    if kind is bool:
        return None if isinstance(value, bool) else "True or False"
    if kind in (int, float):
        number = "a finite whole number" if kind is int else "a finite number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            return number
        return number if kind is int and value != int(value) else None
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        fits = isinstance(value, (tuple, list)) and len(value) == len(items)
        if not fits or any(_mismatch(v, k) for v, k in zip(value, items)):
            return f"a list of {len(items)} finite numbers"
    return None


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer beyond a float's range
        return False
