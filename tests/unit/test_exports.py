"""The public face, as trio checks its own: ``shmring.__all__`` names every
public class and function once, each one exists, has a docstring (and so do
its public members), and each exception shows and pickles as ``shmring.X``."""

from __future__ import annotations

import inspect
import pickle
import types
from typing import Any

import pytest

import shmring

EXPORTED = list(shmring.__all__)
EXCEPTIONS = [n for n in EXPORTED
              if isinstance(getattr(shmring, n), type)
              and issubclass(getattr(shmring, n), BaseException)]


def test_every_name_in_all_exists() -> None:
    missing = [n for n in EXPORTED if not hasattr(shmring, n)]
    assert not missing, f"in __all__ but not in shmring: {missing}"


def test_every_name_is_exported_exactly_once() -> None:
    assert len(EXPORTED) == len(set(EXPORTED)), "a name appears twice in __all__"
    by_object: dict[int, list[str]] = {}
    for n in EXPORTED:
        by_object.setdefault(id(getattr(shmring, n)), []).append(n)
    aliases = [names for names in by_object.values() if len(names) > 1]
    assert not aliases, f"one object exported under several names: {aliases}"


def test_every_public_name_is_in_all() -> None:
    public = [n for n, obj in vars(shmring).items()
              if not n.startswith("_") and not isinstance(obj, types.ModuleType)]
    assert sorted(set(public) - set(EXPORTED)) == []


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_exceptions_show_as_shmring(name: str) -> None:
    cls = getattr(shmring, name)
    assert cls.__module__ == "shmring"
    assert cls.__qualname__ == name


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_exceptions_pickle_round_trip(name: str) -> None:
    cls = getattr(shmring, name)
    e = cls("what went wrong")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls
    assert back.args == e.args
    assert str(back) == str(e)


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """Public attributes that shmring itself defines on ``cls`` or its bases."""
    out = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("shmring"):
            continue
        out.append((name, inspect.getattr_static(owner, name)))
    return out


@pytest.mark.parametrize("name", EXPORTED)
def test_every_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(shmring, name)
    assert (obj.__doc__ or "").strip(), f"shmring.{name} has no docstring"
    if not isinstance(obj, type):
        return
    undocumented = []
    for member, value in _public_members(obj):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, types.MemberDescriptorType):
            continue  # a __slots__ attribute: its class's docstring tells
        if not (callable(value) or inspect.isdatadescriptor(value)):
            continue  # a constant or type variable: nothing to document
        if not (getattr(value, "__doc__", None) or "").strip():
            undocumented.append(member)
    assert not undocumented, f"shmring.{name} members without a docstring: {undocumented}"
