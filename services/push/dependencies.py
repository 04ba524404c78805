"""DependencyProviders of the push service."""
import logging
from datetime import timedelta

import eventlet
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider

from shared.config import ConfigError, settings_of
from shared.messaging import queue_depth
from services.push.config import PushSettings
from services.push import notices
from services.push.providers import NoticeMessage, PushMessage, providers_from_settings


log = logging.getLogger(__name__)


class RegistryCatchUp(DependencyProvider):
    """Whether the device registry may still be behind otp, the authority on devices.

    Push started after an outage can find DeviceRevoked events waiting in its queue while
    the first device requests come in, and consumes both at once: a phone revoked
    meanwhile could confirm a login before its revocation is applied here. So `behind`
    holds from the start until the registry's queues were seen empty CHECKS_NEEDED times
    in a row, CHECK_SECONDS apart, with none of their events in hand; meanwhile a device
    is confirmed with otp (service.py `_device`). After a start with no backlog that is
    about a second; afterwards it costs nothing. (Another push instance may still be
    applying an event it took from the shared queue: it takes milliseconds, the checks
    leave it a second.)"""

    CHECK_SECONDS = 0.3
    CHECKS_NEEDED = 3
    HANDLERS = ("on_device_activated", "on_device_revoked")

    def setup(self):
        self.behind = True
        self.in_hand = 0

    def start(self):
        self.container.spawn_managed_thread(self._watch, identifier="RegistryCatchUp._watch")

    def _watch(self):
        uri = self.container.config[AMQP_URI_CONFIG_KEY]
        queues = [entrypoint.queue.name for entrypoint in self.container.entrypoints
                  if entrypoint.method_name in self.HANDLERS]
        empty_in_a_row = 0
        while empty_in_a_row < self.CHECKS_NEEDED:
            eventlet.sleep(self.CHECK_SECONDS)
            empty = self.in_hand == 0 and all(queue_depth(uri, name) == 0 for name in queues)
            empty_in_a_row = empty_in_a_row + 1 if empty else 0
        self.behind = False
        log.info("device registry caught up with otp's events")

    def worker_setup(self, worker_ctx):
        if worker_ctx.entrypoint.method_name in self.HANDLERS:
            self.in_hand += 1

    def worker_teardown(self, worker_ctx):
        if worker_ctx.entrypoint.method_name in self.HANDLERS:
            self.in_hand -= 1

    def get_dependency(self, worker_ctx):
        return self


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
