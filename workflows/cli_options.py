"""Command-line options built from a pydantic settings model.

``eocausal estimate`` takes its estimator options from
:class:`~eocausal.models.effects.settings.EffectSettings` (the run config's ``estimator``
section is that model too), so a setting, its default and its bounds are declared once.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import click
from pydantic import BaseModel

__all__ = ["OptionalNumber", "settings_options"]


class OptionalNumber(click.ParamType):
    """An int or float, or ``none`` for a setting whose default is "no limit"."""

    name = "number|none"

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or isinstance(value, self.kind):
            return value
        if str(value).strip().lower() in ("none", "null", ""):
            return None
        try:
            return self.kind(value)
        except ValueError:
            self.fail(f"{value!r} is not a {self.kind.__name__} or 'none'", param, ctx)


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """click type for a field annotation, and whether the field may be None."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return click.Choice([str(a) for a in args]), optional
    if annotation in (int, float):
        return (OptionalNumber(annotation) if optional else annotation), optional
    if annotation is bool:
        return bool, optional
    return str, optional


def settings_options(model: type[BaseModel], *, exclude: Iterable[str] = ()
                     ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding ``--field-name`` for every field of ``model`` (default: the model's)."""
    skip = set(exclude)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name, info in reversed(list(model.model_fields.items())):
            if name in skip:
                continue
            kind, optional = _click_type(info.annotation)
            flag = f"--{name.replace('_', '-')}"
            help_text = (info.description or "") + (" ('none' for no value)" if optional else "")
            if kind is bool:
                func = click.option(f"{flag}/--no-{name.replace('_', '-')}", name,
                                    default=info.default, show_default=True,
                                    help=help_text)(func)
            else:
                func = click.option(flag, name, type=kind, default=info.default,
                                    show_default=True, help=help_text)(func)
        return func

    return decorate
