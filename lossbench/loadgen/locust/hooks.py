"""Locust's event hooks, typed: Locust leaves ``EventHook``'s methods unannotated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from locust.event import EventHook


class Hook(Protocol):
    """What the plugin calls on a Locust event: add a listener, or fire it with keyword arguments."""

    def add_listener(self, handler: Callable[..., None]) -> Callable[..., None]: ...

    def fire(self, *, reverse: bool = False, **kwargs: Any) -> None: ...


def hook(event: EventHook) -> Hook:
    return cast(Hook, event)
