"""Configuration: read once from the environment, validated, handed to the code.

A service describes its settings as a marshmallow schema whose fields carry the
environment variable names as `data_key`. `load_settings` reads and validates them; a
missing or malformed setting stops the service with one message naming every problem.

Inside a service every reader goes through `settings_of(container, schema_cls)`: the
service's `config` (SettingsProvider), and any DependencyProvider or extension that
needs a setting (`settings_of(self.container, ...)`), so the environment is read once
per container and all its extensions see the same values.
"""
import os
import re
from types import MappingProxyType

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate
from nameko.extensions import DependencyProvider


class ConfigError(Exception):
    """The environment does not describe a working service; the message says what to fix."""


class Settings(Schema):
    class Meta:
        unknown = EXCLUDE

    @post_load
    def freeze(self, data, **kwargs):
        return MappingProxyType(data)


class Boolean(fields.Boolean):
    truthy = {"1", "true", "yes", "on"}
    falsy = {"0", "false", "no", "off", ""}


class CommaList(fields.Field):
    """A comma-separated environment value as a list of non-empty, stripped items."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("must be a comma-separated string")
        return [item.strip() for item in value.split(",") if item.strip()]


class MongoSettings(Settings):
    mongo_url = fields.String(data_key="MONGO_URL", load_default="mongodb://127.0.0.1:27017/",
                              validate=validate.Regexp(r"^mongodb(\+srv)?://"))
    # Lets several stacks (dev, tests, bench) share one server without sharing data.
    mongo_db_prefix = fields.String(data_key="MONGO_DB_PREFIX", load_default="mycepa_",
                                    validate=validate.Regexp(r"^[a-z0-9_]{0,40}$"))
    # The longest any database operation may take (pymongo's operation timeout); inside
    # an RPC the caller's deadline shortens it.
    mongo_timeout_seconds = fields.Float(data_key="MONGO_TIMEOUT_SECONDS", load_default=5.0,
                                         validate=validate.Range(min=0.5, max=60))


class RpcSettings(Settings):
    # How long a call to another service may take before the caller gets 503
    # (architecture.md §6: at most 5 s); inside a call, the caller's deadline shortens it.
    rpc_timeout_seconds = fields.Float(data_key="RPC_TIMEOUT_SECONDS", load_default=4.0,
                                       validate=validate.Range(min=0.1, max=5.0))


def load_settings(schema_cls, environ=None):
    """The settings of `schema_cls`, loaded from the environment (or from `environ`, a
    mapping: tests use this). Not cached: a service reads them through `settings_of`."""
    source = os.environ if environ is None else environ
    wanted = {field.data_key or name for name, field in schema_cls().fields.items()}
    present = {key: value for key, value in source.items() if key in wanted}
    try:
        settings = schema_cls().load(present)
    except ValidationError as error:
        problems = "; ".join(
            f"{key}: {' '.join(_flatten(messages))}" for key, messages in sorted(error.messages.items())
        )
        raise ConfigError(f"invalid configuration ({schema_cls.__name__}): {problems}") from None
    return settings


def settings_of(container, schema_cls):
    """The settings of `schema_cls` for the service in `container`, loaded from the
    environment the first time any of its extensions asks (in `setup()`, so an incomplete
    environment stops the service before any entrypoint accepts work)."""
    # Kept on the container itself, so they live and go with it: nameko hands extensions
    # a weak proxy of their container, which a WeakKeyDictionary cannot key on.
    loaded = getattr(container, "settings_by_schema", None)
    if loaded is None:
        loaded = container.settings_by_schema = {}
    if schema_cls not in loaded:
        loaded[schema_cls] = load_settings(schema_cls)
    return loaded[schema_cls]


def _flatten(messages):
    if isinstance(messages, dict):
        return [text for value in messages.values() for text in _flatten(value)]
    if isinstance(messages, (list, tuple)):
        return [text for value in messages for text in _flatten(value)]
    return [re.sub(r"\s+", " ", str(messages))]


class SettingsProvider(DependencyProvider):
    """A service's validated settings (`self.config[...]`), loaded when its container starts."""

    def __init__(self, schema_cls):
        self.schema_cls = schema_cls

    def setup(self):
        self.settings = settings_of(self.container, self.schema_cls)

    def get_dependency(self, worker_ctx):
        return self.settings


class FromSettings(DependencyProvider):
    """An object built once per container from the service's settings by `build(settings)`
    (the otp key ring, its lockout policy): the worker gets the object, not the settings
    it came from, so the settings themselves are only ever read as `self.config[...]`."""

    def __init__(self, schema_cls, build):
        self.schema_cls = schema_cls
        self.build = build

    def setup(self):
        self.built = self.build(settings_of(self.container, self.schema_cls))

    def get_dependency(self, worker_ctx):
        return self.built
