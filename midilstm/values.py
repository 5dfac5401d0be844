"""Parameter values as plain data: what ``-p NAME VALUE`` and a grid file may hold.

A value is read as YAML that can only be data: a number, a string, null, a list or a map. Tags
(``!!python/object``, ``!!omap``, ``!x``), anchors and aliases are refused, and dates stay the
text they were, so nothing but plain literals ever reaches a notebook: papermill pastes each
value's ``repr`` into the notebook as code. ``check_parameters`` then checks every value
against the parameter table (``params.validate``): types, ranges and combinations.
"""
from __future__ import annotations

import yaml

from . import params as parameters
from .errors import ParameterError


class _PlainLoader(yaml.SafeLoader):
    """YAML that can only be data: scalars, lists and maps. Tags (``!!omap``, ``!!python/..``,
    ``!x``), anchors and aliases are refused; dates stay strings."""

    depth, key = 0, None  # key: the top-level map key whose value is being read (a grid's name)

    def compose_node(self, parent, index):
        if self.depth == 1 and isinstance(index, yaml.ScalarNode):
            self.key = index.value
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _NotData(self.key, "YAML anchors and aliases (& and *) are not allowed")
        if getattr(event, "tag", None) is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise _NotData(self.key, f"YAML tags are not allowed (got {tag}): give a plain "
                                     f"number, string, list or map")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _NotData(Exception):
    def __init__(self, key, reason):
        super().__init__(reason)
        self.key, self.reason = key, reason


def load_yaml(text: str, name: str, source: str = ""):
    """Plain YAML data from ``text``; ``ParameterError`` naming the parameter (for a grid file,
    the entry at fault) and ``source`` (the file) otherwise."""
    try:
        return yaml.load(text, Loader=_PlainLoader)
    except _NotData as err:
        raise ParameterError(err.key or name, source + err.reason) from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ParameterError(name, f"{source}not valid YAML: {problem}{where}") from None


def parse_value(text: str, name: str):
    """A ``-p NAME VALUE`` value, read as plain YAML: ``0.5``, ``[0, 1]``, ``null``, ``log``."""
    return plain(load_yaml(text, name), name)


def plain(value, name: str):
    """``value`` if it is plain data (str, int, float, bool, None, and lists and string-keyed
    dicts of them), the only values papermill writes into a notebook as literals; else
    ``ParameterError``. Tuples, sets, dates and any other object are refused."""
    if value is None or isinstance(value, (str, bool, int, float)):
        if type(value) not in (type(None), str, bool, int, float):  # a subclass can override repr
            raise ParameterError(name, f"must be plain data, got a {type(value).__name__}")
        return value
    if type(value) is list:
        return [plain(v, name) for v in value]
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                raise ParameterError(name, f"map keys must be strings, got {key!r}")
        return {k: plain(v, name) for k, v in value.items()}
    raise ParameterError(name, f"must be plain data (a number, string, list or map), "
                               f"got a {type(value).__name__}")


def check_parameters(params: dict) -> dict:
    """Every value plain data and valid (types, ranges, combinations) for the whole series;
    returns them normalised. Refused in one line that names the parameter, before anything runs."""
    if "run_dir" in params:
        raise ParameterError("run_dir", "is set by the command: give the run directory with --out")
    return parameters.validate({name: plain(value, name) for name, value in params.items()})
