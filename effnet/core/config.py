"""Pipeline configuration: load YAML, validate against the JSON Schema, fill defaults.

The same schema (``effnet/schemas/config.schema.yaml``) backs Snakemake's
``validate`` in the workflow, so a config that the package accepts is the one
the workflow accepts. Errors name the file, the key path and what was expected.
"""
from __future__ import annotations

import argparse
import copy
import re
import warnings
from pathlib import Path
from typing import Any

import yaml

from effnet.core.errors import UserError

SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = "config/config.yaml"  # the demo, relative to the checkout (where Snakemake runs)
SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
BATCH_KEYS = ("runs", "sweep")  # several runs in one config, which the workflow expands (effnet.core.batch_runs)


class ConfigError(UserError):
    """A configuration that does not match the schema."""


def load_schema() -> dict[str, Any]:
    """Return the configuration JSON Schema as a dict."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _validator(schema: dict[str, Any]):
    """A validator of ``schema`` that also fills in each property's ``default``."""
    import jsonschema  # here, not above: `doctor` names a missing jsonschema instead of failing to start

    base = jsonschema.validators.validator_for(schema)
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def _describe(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    return f"{path}: {error.message}"


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` in place, filling defaults; raise ConfigError listing every problem."""
    validator = _validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  {_describe(e)}" for e in errors)
        raise ConfigError(f"{source}: invalid configuration:\n{lines}")
    return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, batch: bool = False) -> dict[str, Any]:
    """Read a YAML config, merge ``overrides`` (nested dict) over it, validate and return it. A config of
    several runs (``runs:``/``sweep:``) warns unless ``batch``: a stage runs one and ignores them (the workflow
    calls it with the run's keys as overrides)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    config = validate(merge(config, overrides or {}), str(path))
    several = [key for key in BATCH_KEYS if config.get(key)]
    if several and not batch:
        warnings.warn(f"{path}: {', '.join(several)} ignored: a stage runs the top level's settings and its --set "
                      "values; only the workflow expands runs (README, \"Batch runs\")", stacklevel=2)
    return config


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str | None = "YAML config",
                         set_help: str = "override a config key by its dotted path, value as YAML (repeatable), "
                                         "e.g. --set train.epochs=4") -> None:
    """A stage's ``--config`` (default DEFAULT_CONFIG; none when ``config_help`` is None) and ``--set KEY=VALUE``
    (what ``parse_overrides`` reads)."""
    if config_help is not None:
        parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"{config_help} (default {DEFAULT_CONFIG})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=4", "model.image_size=64"]`` as a nested dict; values are parsed as YAML."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
        if isinstance(value, str) and SCIENTIFIC.fullmatch(value):  # YAML 1.1 reads 5e-6 as a string
            value = float(value)
        try:
            set_dotted(overrides, key, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: {exc}") from None
    return overrides


def set_dotted(node: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` ("train.epochs") of the nested ``node`` to ``value``, adding mappings on the way;
    ConfigError when a key on the way holds a value."""
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{part!r} is also set to a value")
    node[last] = value


def get_dotted(node: dict[str, Any], key: str) -> Any:
    """The value of the dotted ``key`` ("train.epochs") in the nested ``node``."""
    for part in key.split("."):
        node = node[part]
    return node


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into ``base`` key by key (nested mappings merge, other values replace); return ``base``."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base
