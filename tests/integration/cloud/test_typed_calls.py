"""Every API call of the client is typed: a dataclass (or a path id) in, a dataclass out. A bare str or
None back would leave callers guessing what the cloud said."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

import pytest

from gateway.cloud import DeviceBind, RufusClient, SessionCreate, SessionCreated, Unbound
from gateway.cloud.models import Bound, Closed

API_CALLS = [
    "bind_device", "unbind_device", "list_devices", "device_info", "create_session", "close_session",
    "device_sessions", "active_session", "session_info", "insert_passings", "session_passings", "device_passings",
]  # fmt: skip


def _dataclasses_in(annotation: Any) -> list[type]:
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return [annotation]
    return [t for arg in typing.get_args(annotation) for t in _dataclasses_in(arg)]


@pytest.mark.parametrize("name", API_CALLS)
def test_every_api_call_returns_a_dataclass(name: str) -> None:
    method = getattr(RufusClient, name)
    assert inspect.iscoroutinefunction(method)
    hints = typing.get_type_hints(method)
    assert _dataclasses_in(hints["return"]), f"{name} returns {hints['return']}"
    for param, annotation in hints.items():
        if param != "return":
            assert annotation is not type(None), f"{name}({param})"
    kinds = {p.kind for p in inspect.signature(method).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds


def test_write_requests_are_frozen_dataclasses() -> None:
    for cls in (DeviceBind, SessionCreate, Bound, SessionCreated, Unbound, Closed):
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
    bind = DeviceBind("One4All", "SN-1")
    assert (bind.alias, bind.firmware, bind.type) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        bind.model = "x"  # type: ignore[misc]
