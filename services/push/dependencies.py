"""DependencyProviders of the push service."""
from nameko.extensions import DependencyProvider

from shared.config import load_settings
from services.push.config import PushSettings


class PushConfig(DependencyProvider):
    def setup(self):
        self.settings = load_settings(PushSettings)

    def get_dependency(self, worker_ctx):
        return self.settings


class PushProviders(DependencyProvider):
    """The delivery providers by platform ("ios" -> APNs, "android" -> FCM), built once.

    A platform whose provider is not configured gets None: its devices are reported as
    PushFailed and can still answer in poll mode.
    """

    def setup(self):
        self.by_platform = {}

    def get_dependency(self, worker_ctx):
        return self

    def get(self, platform):
        return self.by_platform.get(platform)

    def message(self, challenge, ttl_seconds):
        raise NotImplementedError
