"""Typed stage results: dataclasses that save and load their JSON file.

Each results file a stage writes is one :class:`StageResults` subclass, made of
:class:`ResultSection` parts, all frozen keyword-only dataclasses. A field's
annotation is the contract of its key:

- a section class or a scalar (``int``, ``float``, ``str``, ``bool``) where the
  keys are fixed: ``results.reconstruction.model.pearson_r_median``;
- ``dict[str, X]`` where the keys are data, not names chosen by the code (a
  value per OOD kind, per method, per task category): the values are still typed;
- :data:`Table` for a table stored row by row, as pandas'
  ``to_dict(orient="index")`` writes it, whose columns belong to the code that
  builds the frame;
- ``Any`` for a value the class only carries (a request's metadata).

Values are checked and normalised when an object is built, in code or from a
file: nested mappings become their section classes, numpy scalars and arrays
plain numbers and lists (as :func:`sematlas.core.io.write_json` writes them), a
``float`` field takes an ``int`` unchanged, so the JSON written is the JSON
the values give. A file is refused, naming the file and the key, when a key is
unknown or missing, a value has the wrong type, or its ``schema_version`` is not
the class's :attr:`StageResults.SCHEMA_VERSION`.
"""

from __future__ import annotations

import os
import string
import types
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar, Union, get_args, get_origin, get_type_hints

from sematlas.core.io import read_json, write_json
from sematlas.core.paths import ProfilePaths

#: The key every results file carries besides its class's fields.
SCHEMA_KEY = "schema_version"

#: A table stored row by row: row name -> column -> value (pandas ``to_dict(orient="index")``).
Table = dict[str, dict[str, Any]]

_Section = TypeVar("_Section", bound="ResultSection")


class ResultsError(ValueError):
    """A results file or object that does not fit its class: an unknown or missing key, a wrong type,
    another schema version."""


@dataclass(frozen=True, kw_only=True)
class ResultSection:
    """Base of every typed part of a results file: its fields are checked and normalised when it is built.

    Raises
    ------
    ResultsError
        A value that does not fit its field's annotation (the message names the class and the key).
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            converted = _convert(hints[f.name], getattr(self, f.name), f.name, type(self).__name__)
            object.__setattr__(self, f.name, converted)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, numbers, strings, ``None``), as the JSON file holds it."""
        plain: dict[str, Any] = _plain(self)
        return plain


@dataclass(frozen=True, kw_only=True)
class StageResults(ResultSection):
    """A results file: a :class:`ResultSection` that knows its file and its version.

    Subclasses set :attr:`LOCATION`, and raise :attr:`SCHEMA_VERSION`
    whenever a key is added, removed or changes meaning.
    """

    #: The version of the keys; a file of another version is refused by :meth:`load`.
    SCHEMA_VERSION: ClassVar[int] = 1
    #: The file under ``ProfilePaths.results``; ``{field}`` placeholders name fields, e.g. ``{variant}``.
    LOCATION: ClassVar[str]
    #: The number of the stage that writes the file.

    @classmethod
    def path(cls, paths: ProfilePaths, **names: str) -> Path:
        """Where the file of this class lies for a profile, e.g. ``path(paths, variant=variant)``."""
        return paths.results / cls.LOCATION.format(**names)

    def location(self, paths: ProfilePaths) -> Path:
        """Where this object's file lies for a profile (placeholders filled from its own fields)."""
        names = {name: str(getattr(self, name)) for _, name, _, _ in string.Formatter().parse(self.LOCATION) if name}
        return self.path(paths, **names)

    def to_dict(self) -> dict[str, Any]:
        """The file's content: every field as plain data and :data:`SCHEMA_KEY`."""
        return {SCHEMA_KEY: self.SCHEMA_VERSION, **super().to_dict()}

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike[str] | None = None) -> Self:
        """Build from the file's content, checking its schema version and every key.

        Parameters
        ----------
        data : mapping
            What :meth:`to_dict` gives (a JSON object).
        source : path or str, optional
            Named in error messages; the class name when omitted.

        Raises
        ------
        ResultsError
            Another schema version, an unknown or missing key, a value of the wrong type.
        """
        where = str(source) if source is not None else cls.__name__
        if not isinstance(data, Mapping):
            raise ResultsError(f"{where}: a results file holds a JSON object, got {type(data).__name__}")
        if SCHEMA_KEY not in data:
            raise ResultsError(f"{where}: missing key '{SCHEMA_KEY}' (a file from before versioned results)")
        if data[SCHEMA_KEY] != cls.SCHEMA_VERSION:
            raise ResultsError(
                f"{where}: schema version {data[SCHEMA_KEY]!r}, but {cls.__name__} reads version "
                f"{cls.SCHEMA_VERSION}: rerun the stage that writes it (python -m sematlas.pipeline status names it)"
            )
        built: Self = _build(cls, {key: value for key, value in data.items() if key != SCHEMA_KEY}, "", where)
        return built

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the file atomically (sorted keys, :func:`sematlas.core.io.write_json`).

        What is written is checked by :meth:`from_dict` first, so a file that
        :meth:`load` would refuse is never written.
        """
        data = self.to_dict()
        type(self).from_dict(data, path)
        return write_json(data, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read and check a file written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            No such file.
        ResultsError
            As :meth:`from_dict`, naming the file.
        """
        return cls.from_dict(read_json(path), path)


def parse(cls: type[_Section], data: Any, source: str | None = None) -> _Section:
    """Build a section from a mapping (e.g. an evaluation's summary), refusing unknown and missing keys.

    Parameters
    ----------
    cls : type
        A :class:`ResultSection` subclass.
    data : mapping
    source : str, optional
        Named in error messages; the class name when omitted.
    """
    built: _Section = _build(cls, data, "", source or cls.__name__)
    return built


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of a dataclass, computed once per class."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _build(cls: Any, data: Any, prefix: str, source: str) -> Any:
    """An instance of the dataclass ``cls`` (a section or a parameter section) from a mapping."""
    if not isinstance(data, Mapping):
        raise ResultsError(f"{source}: '{prefix.rstrip('.') or 'the top level'}' must be an object, got {data!r}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(str(key) for key in data if key not in names)
    if unknown:
        raise ResultsError(f"{source}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(names)})")
    missing = [name for name in names if name not in data]
    if missing:
        raise ResultsError(f"{source}: missing key '{prefix}{missing[0]}'")
    hints = _hints(cls)
    return cls(**{name: _convert(hints[name], data[name], f"{prefix}{name}", source) for name in names})


def _convert(hint: Any, value: Any, key: str, source: str) -> Any:
    """``value`` checked against ``hint`` and normalised; ``key`` is its dotted path, for messages."""
    value = _plain_leaf(value)
    if hint is Any:
        return _plain(value)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, key, source)
            except ResultsError as error:
                errors.append(error)
        raise errors[0]
    if isinstance(hint, type) and is_dataclass(hint):
        return value if isinstance(value, hint) else _build(hint, value, f"{key}.", source)
    if hint is list or origin is list:
        if not isinstance(value, list | tuple):
            raise ResultsError(f"{source}: '{key}' must be a list, got {value!r}")
        (item,) = get_args(hint) or (Any,)
        return [_convert(item, v, f"{key}.{i}", source) for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ResultsError(f"{source}: '{key}' must be an object, got {value!r}")
        key_type, item = get_args(hint) or (str, Any)
        return {_key(key_type, k, key, source): _convert(item, v, f"{key}.{k}", source) for k, v in value.items()}
    return _scalar(hint, value, key, source)


def _key(key_type: Any, name: Any, key: str, source: str) -> Any:
    # JSON object keys are strings: an int key (a year) is read back from its digits.
    if key_type is int and not isinstance(name, bool):
        try:
            return int(name)
        except ValueError:
            raise ResultsError(f"{source}: '{key}' has a key {name!r} that is not an integer") from None
    if not isinstance(name, str):
        raise ResultsError(f"{source}: '{key}' has a key {name!r} that is not a string")
    return name


def _scalar(hint: Any, value: Any, key: str, source: str) -> Any:
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint)
    if accepted is None:
        raise TypeError(f"results field '{key}' has an annotation results files cannot hold: {hint!r}")
    if isinstance(value, bool) and hint is not bool or not isinstance(value, accepted):
        raise ResultsError(f"{source}: '{key}' must be {hint.__name__}, got {value!r}")
    return value


def _plain_leaf(value: Any) -> Any:
    # The rule of write_json: numpy/torch values through tolist(), paths as text.
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, list | tuple | Mapping) and hasattr(value, "tolist"):
        return value.tolist()
    return value


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return _plain_leaf(value)


__all__ = ["SCHEMA_KEY", "ResultSection", "ResultsError", "StageResults", "Table", "parse"]
