"""Config files (TOML or JSON) onto frozen dataclasses.

Nested dataclasses map onto nested tables; a field that holds one of several dataclasses
(a Union, e.g. the model's encoder) picks it by the table's `kind`. An unknown key is an
error that names the valid ones; a value of the wrong type, or outside a Literal's
choices, is an error that names the field. A dataclass checks its own values in
`__post_init__`, raising ConfigError("table.field must be ...") with its place in the
training config, so `--set` overrides and files get the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from .errors import TalkmotionError
from .files import loads_json


class ConfigError(TalkmotionError, ValueError):
    """A config that does not fit its dataclass; the message names file and key."""


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if path.suffix == ".json":
        data = loads_json(text, str(path), ConfigError)
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except ValueError as err:    # tomllib.TOMLDecodeError
            raise ConfigError(f"{path}: not valid TOML ({err})") from None
        except RecursionError:
            raise ConfigError(f"{path}: TOML nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a table of settings, not {type(data).__name__}")
    return data


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from a (possibly nested) dict, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are "
                          f"{', '.join(sorted(fields))}")
    missing = sorted(name for name, f in fields.items() if name not in data
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _tagged(options: list[type], value, where: str):
    """One of several dataclasses, chosen by the table's `kind`."""
    kinds = {f.default: cls for cls in options for f in dataclasses.fields(cls) if f.name == "kind"}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table with a kind ({', '.join(kinds)}), got {value!r}")
    if not isinstance(value.get("kind"), str) or value["kind"] not in kinds:
        raise ConfigError(f"{where}.kind: {value.get('kind')!r} is not one of {', '.join(kinds)}")
    return from_dict(kinds[value["kind"]], value, where)


def _convert(hint, value, where):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else typing.Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if len(args) > 1 and all(dataclasses.is_dataclass(a) for a in args):
            return _tagged(args, value, where)
        return _convert(args[0], value, where) if len(args) == 1 else value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    return value


def field_comments(cls) -> dict[str, str]:
    """Each field's comment in `cls`'s source (its documentation), continuation lines joined."""
    import inspect
    import re

    # The class's lines read straight from its file: inspect.getsource tokenizes the whole
    # module, which every command's start-up would pay for.
    lines = Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"class {cls.__name__}"))
    body = lines[first + 1:]
    end = next((i for i, line in enumerate(body) if line and not line[0].isspace()), len(body))
    comments: dict[str, str] = {}
    current = None
    for line in body[:end]:
        field_line = re.match(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$", line)
        if field_line and field_line.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = field_line.group(1)
            comments[current] = field_line.group(2) or ""
        elif current and (more := re.match(r"^\s+#\s*(.*)$", line)):
            comments[current] = f"{comments[current]} {more.group(1)}".strip()
        else:
            current = None
    return comments


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def _inline_value(value, key: str):
    """A --set value given as text in the config file's own syntax: a TOML list or inline
    table (`[{ path = "data/me", weight = 3.0 }]`), as the README writes them; other text as is."""
    if not isinstance(value, str) or not value.lstrip().startswith(("[", "{")):
        return value
    import tomllib

    try:
        return tomllib.loads(f"value = {value}")["value"]
    except ValueError as err:
        raise ConfigError(f"--set {key}: {value!r} is neither JSON nor a TOML value ({err})") from None
    except RecursionError:
        raise ConfigError(f"--set {key}: nested too deeply to read") from None


def load(cls, path: str | Path | None = None, overrides: dict | None = None):
    """Config file (if any) with `overrides` applied on top ("a.b" keys for nesting)."""
    data = read_config_file(path) if path else {}
    return from_dict(cls, with_overrides(data, overrides), str(path) if path else "config")


def with_overrides(data: dict, overrides: dict | None) -> dict:
    """A copy of `data` with each "a.b" = value of `overrides` set (the tables on each key's
    path are copied; the rest is shared with `data`)."""
    data = dict(data)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            child = node.get(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {p} is not a table")
            node[p] = node = dict(child)
        node[leaf] = _inline_value(value, dotted)
    return data


def merged(base: dict, table: dict) -> dict:
    """A copy of `base` with `table`'s settings over it: tables merge key by key, anything else
    (a number, a text, a list such as data.sources) is replaced."""
    out = dict(base)
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
