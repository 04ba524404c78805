"""The push service: the registry of devices that can confirm a login.

Fed by the otp service's DeviceActivated / DeviceRevoked events. Handlers are idempotent
and requeue on error, so a redelivered or retried event is never lost and never applied
twice; a malformed event is logged and dropped, since redelivering it cannot help.
"""
import logging

from nameko.rpc import rpc

from shared import events
from shared.clock import isoformat, utcnow
from shared.errors import EXPECTED_ERRORS, Unavailable
from shared.mongo import MongoStorage
from services.push.storage import PushStorage

log = logging.getLogger(__name__)


class PushService:
    name = "push"

    storage = MongoStorage(PushStorage)

    @rpc
    def ping(self):
        if not self.storage.ping():
            raise Unavailable("push database unreachable")
        return {"service": self.name}

    @events.handles(events.DeviceActivated, requeue_on_error=True)
    def on_device_activated(self, payload):
        event = _parse(events.DeviceActivated, payload)
        if event:
            self.storage.register_device(event, utcnow())

    @events.handles(events.DeviceRevoked, requeue_on_error=True)
    def on_device_revoked(self, payload):
        event = _parse(events.DeviceRevoked, payload)
        if event:
            self.storage.revoke_device(event["device_id"], event["username"], utcnow())

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def devices_of(self, username):
        return [
            {"device_id": device["_id"], "platform": device["platform"], "device_name": device["device_name"],
             "created_at": isoformat(device["created_at"])}
            for device in self.storage.active_devices(username)
        ]


def _parse(event_cls, payload):
    try:
        return events.parse_event(event_cls, payload)
    except events.ValidationError as error:
        log.error("dropping malformed %s event: %s", event_cls.name, sorted(error.messages))
        return None
