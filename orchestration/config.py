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


def dataclass_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of every field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def config_from_fields(
    fields: list[tuple[dataclasses.Field, Any]],
    name: str,
    doc: str,
    base: type = Config,
    overrides: dict[str, tuple[Any, Any]] | None = None,
) -> type:
    """A Dagster ``Config`` (or other pydantic ``base``) subclass with the given dataclass fields (their
    ``metadata["doc"]`` as description); ``overrides``: (type, default) of fields whose Dagster form differs."""
    model_fields: dict[str, tuple[Any, Any]] = {}
    for f, annotation in fields:
        description = f.metadata.get("doc")
        if f.name in (overrides or {}):
            annotation, default = overrides[f.name]
            model_fields[f.name] = (annotation, pydantic.Field(default=default, description=description))
        elif f.default_factory is not dataclasses.MISSING:
            model_fields[f.name] = (annotation, pydantic.Field(default_factory=f.default_factory, description=description))
        else:
            model_fields[f.name] = (annotation, pydantic.Field(default=f.default, description=description))
    return pydantic.create_model(name, __base__=base, __doc__=doc, __module__=__name__, **model_fields)


def config_from_dataclass(
    cls: type, name: str, doc: str, base: type = Config, overrides: dict[str, tuple[Any, Any]] | None = None
) -> type:
    """A Dagster ``Config`` (or other pydantic ``base``) subclass with every field of dataclass ``cls``."""
    return config_from_fields(dataclass_fields(cls), name, doc, base, overrides)


def to_dataclass(cls: type[T], config: pydantic.BaseModel) -> T:
    """The dataclass ``cls`` built from the fields of a generated config."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})
