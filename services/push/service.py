"""The push service: the registry of devices that can confirm a login.

Fed by the otp service's DeviceActivated / DeviceRevoked events. Handlers are idempotent
and requeue on error, so a redelivered or retried event is never lost and never applied
twice; a malformed event, or one the database refuses as a document, is logged and
dropped, since redelivering it cannot help and would loop forever.
"""
import logging
from contextlib import contextmanager

from bson.errors import InvalidDocument

from nameko.rpc import rpc

from shared import events
from shared.clock import utcnow
from shared.errors import Unavailable
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
            with _dropping_unstorable(events.DeviceActivated):
                self.storage.register_device(event, utcnow())

    @events.handles(events.DeviceRevoked, requeue_on_error=True)
    def on_device_revoked(self, payload):
        event = _parse(events.DeviceRevoked, payload)
        if event:
            with _dropping_unstorable(events.DeviceRevoked):
                self.storage.revoke_device(event["device_id"], event["username"], utcnow())


@contextmanager
def _dropping_unstorable(event_cls):
    """Drop an event the database can never store; let everything else requeue."""
    try:
        yield
    except (InvalidDocument, UnicodeEncodeError) as error:
        log.error("dropping %s event the database cannot store: %s", event_cls.name, type(error).__name__)


def _parse(event_cls, payload):
    try:
        return events.parse_event(event_cls, payload)
    except events.ValidationError as error:
        log.error("dropping malformed %s event: %s", event_cls.name, sorted(error.messages))
        return None
