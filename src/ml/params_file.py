"""Writing params.yaml back: only the keys asked for change; comments and layout stay."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ruamel.yaml import YAML

from common import files, paths
from ml import config


def round_trip_yaml() -> YAML:
    """Round-trip YAML in the style `dvc exp run -S` writes (block lists indented as their key,
    null as an empty value), so that params.yaml has one style whoever edits it."""
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # never re-wrap a line
    return yaml


def set_values(values: Mapping[str, Any], path: Path = paths.PARAMS_FILE) -> None:
    """Set each dotted key (as `-S` names them) in params.yaml; an invalid result is refused
    and params.yaml is left as it was."""
    yaml = round_trip_yaml()
    tree = yaml.load(path.read_text())
    for key, value in values.items():
        config.set_path(tree, key, value)
    with files.atomic_path(path) as tmp:
        with tmp.open("w") as handle:
            yaml.dump(tree, handle)
        config.load(tmp)


def set_sections(sections: Mapping[str, Any], path: Path = paths.PARAMS_FILE) -> list[str]:
    """Make params.yaml's top-level `sections` equal to the values given, setting only the keys
    that differ (so its comments and layout stay); return those keys."""
    now = config.load(path).model_dump(mode="json")
    changes: dict[str, Any] = {}
    for name, wanted in sections.items():
        changes |= differences(now[name], wanted, name)
    if changes:
        set_values(changes, path)
    return list(changes)


def differences(now: Any, wanted: Any, key: str) -> dict[str, Any]:
    """The dotted keys, with their values, that turn `now` into `wanted`: leaf by leaf where
    both are mappings or lists of one length, else the whole value."""
    if isinstance(now, Mapping) and isinstance(wanted, Mapping):
        pairs = [(f"{key}.{name}", now.get(name), value) for name, value in wanted.items()]
    elif isinstance(now, list) and isinstance(wanted, list) and len(now) == len(wanted):
        pairs = [
            (f"{key}.{i}", old, new) for i, (old, new) in enumerate(zip(now, wanted, strict=True))
        ]
    else:
        return {} if now == wanted else {key: wanted}
    return {
        found: value for k, old, new in pairs for found, value in differences(old, new, k).items()
    }


def dump(tree: Any, handle: IO[str]) -> None:
    round_trip_yaml().dump(tree, handle)
