"""Name -> model factory registry shared by the node, training and checkpoints.

A factory is registered once with :func:`register_architecture` and built by name with
:func:`build_model`; checkpoints store the name and the config, so what is trained is what runs.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]

ARCHITECTURES: dict[str, ModelFactory] = {}


class UnknownArchitectureError(KeyError):
    """Raised by :func:`build_model` for a name that was never registered."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def register_architecture(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register ``factory(**config) -> nn.Module`` under ``name``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = factory
        return factory

    return decorator


def build_model(name: str, config: dict | None = None) -> nn.Module:
    """Build the registered architecture ``name`` with keyword arguments ``config``.

    The model maps a normalised N x 3 x H x W image (H, W divisible by 32) to N x 1 x H x W depth
    in metres, >= 0. Raises :class:`UnknownArchitectureError` (a KeyError) listing the known names,
    or TypeError for config keys the factory does not take.
    """
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES)) or "none"
        raise UnknownArchitectureError(f"unknown architecture {name!r}; known architectures: {known}")
    try:
        return ARCHITECTURES[name](**(config or {}))
    except TypeError as err:
        raise TypeError(f"bad config for architecture {name!r} ({config!r}): {err}") from err
