"""DependencyProviders of the otp service."""
from nameko.extensions import DependencyProvider

from shared.config import load_settings
from services.otp.config import OtpSettings
from services.otp.lockout import LockoutPolicy
from services.otp.secrets import SecretBox


class OtpConfig(DependencyProvider):
    """The validated settings, and the secret box and lockout policy built from them,
    once per container.

    Loading here rather than at import stops the service with the settings' own message
    when the environment is incomplete, before any entrypoint accepts work.
    """

    def setup(self):
        self.settings = load_settings(OtpSettings)
        self.box = SecretBox(self.settings["encryption_keys"])
        self.lockout = LockoutPolicy.from_settings(self.settings)

    def get_dependency(self, worker_ctx):
        return self
