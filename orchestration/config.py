"""Dagster config classes generated from the library's config dataclasses (one source of truth).

A field added to a dataclass such as ``TrainConfig`` appears in the Dagster run config (and in
the launchpad of the UI, with its ``metadata["doc"]`` as description) with no second copy here.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

import pydantic
from dagster import Config

T = TypeVar("T")


def _pydantic_fields(cls: type) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(cls)
    result = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            default = pydantic.Field(default_factory=f.default_factory, description=f.metadata.get("doc"))
        else:
            default = pydantic.Field(default=f.default, description=f.metadata.get("doc"))
        result[f.name] = (hints[f.name], default)
    return result


def config_from_dataclass(
    cls: type, name: str, doc: str, base: type = Config, overrides: dict[str, tuple[Any, Any]] | None = None
) -> type:
    """A Dagster ``Config`` (or other pydantic ``base``) subclass with every field of dataclass ``cls``;
    ``overrides``: (type, default) of fields whose Dagster form differs (their description is kept)."""
    fields = _pydantic_fields(cls)
    for field_name, (annotation, default) in (overrides or {}).items():
        fields[field_name] = (annotation, pydantic.Field(default=default, description=fields[field_name][1].description))
    return pydantic.create_model(name, __base__=base, __doc__=doc, __module__=__name__, **fields)


def to_dataclass(cls: type[T], config: pydantic.BaseModel) -> T:
    """The dataclass ``cls`` built from the fields of a generated config."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})
