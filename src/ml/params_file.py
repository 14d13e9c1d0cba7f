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


def dump(tree: Any, handle: IO[str]) -> None:
    round_trip_yaml().dump(tree, handle)
