"""Component specs: the strings that name an activation, initialiser, optimiser or schedule.

A spec is ``"name"`` or ``"name(arg, key=value, ...)"`` with literal arguments, e.g.
``"leaky_relu(alpha=0.01)"`` or ``"step(step_size=10, gamma=0.5)"``; config files and CLI
flags use the same strings. Parsing never evaluates code: arguments must be Python literals.
"""

from __future__ import annotations

import ast
import inspect


def parse_spec(spec: str) -> tuple[str, list, dict]:
    """Split ``"name(a, k=v)"`` into ``(name, [a], {"k": v})``; names are lower-cased."""
    text = spec.strip()
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ValueError(f"cannot parse {spec!r}: expected 'name' or 'name(key=value, ...)'") from None
    if isinstance(node, ast.Name):
        return node.id.lower(), [], {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"cannot parse {spec!r}: expected 'name' or 'name(key=value, ...)'")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise ValueError(f"cannot parse {spec!r}: arguments must be literal numbers, strings or lists") from None
    if None in kwargs:
        raise ValueError(f"cannot parse {spec!r}: '**' is not allowed")
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
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} {name!r}; known: {known}")
    if args and overrides:
        kwargs.update(_positional(registry[name], args, kwargs, overrides, f"{kind} {name!r}"))
        args = []
    kwargs.update(overrides)
    try:
        return registry[name](*args, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {kind} {name!r}: {exc}") from None


def _positional(factory, args: list, kwargs: dict, overrides: dict, what: str) -> dict:
    """The spec's positional values by name. They fill the parameters the caller does not supply:
    ``step(5)`` is ``step_size=5`` when the trainer gives ``lr`` itself (Python would give 5 to ``lr``
    and then refuse the ``lr`` keyword as given twice)."""
    names = [name for name, parameter in inspect.signature(factory).parameters.items()
             if name not in overrides and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(names):
        raise ValueError(f"bad arguments for {what}: {len(args)} values without names; it takes at most "
                         f"{len(names)} ({', '.join(names)})")
    named = dict(zip(names, args))
    if twice := sorted(set(named) & set(kwargs)):
        raise ValueError(f"bad arguments for {what}: {', '.join(twice)} given both by position and by name")
    return named
