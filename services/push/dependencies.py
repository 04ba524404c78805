"""DependencyProviders of the push service."""
from datetime import timedelta

from nameko.extensions import DependencyProvider

from shared.config import ConfigError, settings_of
from services.push.config import PushSettings
from services.push import notices
from services.push.providers import NoticeMessage, PushMessage, providers_from_settings


class PushProviders(DependencyProvider):
    """The delivery providers by platform ("ios" -> APNs, "android" -> FCM), built once.

    A platform whose provider is not configured gets None: its devices are reported as
    PushFailed and can still answer in poll mode. Built in setup(), after eventlet's
    patching, so their HTTP/2 connections are green.
    """

    def setup(self):
        settings = settings_of(self.container, PushSettings)
        try:
            self.by_platform = providers_from_settings({
                **settings,
                "apns_key_pem": _read(settings["apns_key_file"], "APNS_KEY_FILE"),
                "fcm_service_account_json": _read(settings["fcm_service_account_file"], "FCM_SERVICE_ACCOUNT_FILE"),
            })
        except ValueError as error:
            raise ConfigError(f"invalid configuration (PushSettings): {error}") from None

    def stop(self):
        for provider in self.by_platform.values():
            if provider is not None:
                provider.close()

    def get_dependency(self, worker_ctx):
        return self

    def get(self, platform):
        return self.by_platform.get(platform)

    @staticmethod
    def message(challenge, ttl_seconds):
        return PushMessage(challenge["_id"], challenge["username"], challenge["expires_at"], ttl_seconds)

    @staticmethod
    def notice_message(notice, title, body):
        return NoticeMessage(notice["_id"], notice["kind"], title, body,
                             notice["occurred_at"] + timedelta(seconds=notices.ALERT_TTL_SECONDS),
                             notices.ALERT_TTL_SECONDS)


def _read(path, variable):
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise ConfigError(f"invalid configuration (PushSettings): {variable}: cannot read the file "
                          f"({error.strerror})") from None
