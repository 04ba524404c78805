"""DependencyProviders (and the shared extension of waiting browsers) of the gateway."""
import logging
from collections import OrderedDict

import eventlet
import eventlet.event
import eventlet.semaphore
import kombu
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider, SharedExtension

from shared import events
from shared.config import settings_of
from shared.errors import unavailable_from
from shared.messaging import EventDispatcher
from shared.repair import Repairs
from services.gateway.config import GatewaySettings

log = logging.getLogger(__name__)


class BrokerCheck(DependencyProvider):
    """A callable telling whether RabbitMQ accepts a connection now (for /readyz)."""

    def get_dependency(self, worker_ctx):
        return self.reachable

    def reachable(self, timeout=2.0):
        try:
            with kombu.Connection(self.container.config[AMQP_URI_CONFIG_KEY], connect_timeout=timeout) as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
            return True
        except Exception:
            return False


class Announcer(EventDispatcher):
    """`self.announce(event_cls, **payload)`: an event that must go out although the
    request that causes it has answered, or must answer whatever the broker does: a code
    login otp may have accepted that did not end in a session (LoginAbandoned), a
    session started or ended (the audit trail's record of it).

    Published at once when the broker takes it; otherwise kept and retried in the
    background for ten minutes (a LoginAbandoned only matters for the minute a code is
    usable), and given a last chance on graceful stop. The request is never failed by it.
    """

    RETRY_SECONDS = 600.0

    def setup(self):
        super().setup()
        self.repairs = Repairs()

    def stop(self):
        self.repairs.drain(5)

    def get_dependency(self, worker_ctx):
        dispatch = super().get_dependency(worker_ctx)

        def announce(event_cls, **payload):
            event = events.build_event(event_cls, **payload)
            try:
                dispatch(event_cls.name, event)
            except Exception as error:
                if unavailable_from(error) is None:
                    raise
                self.repairs.later(f"announcing {event_cls.name}", lambda: self.publish_later(event_cls.name, event),
                                   for_seconds=self.RETRY_SECONDS, first_delay=0.5)

        return announce


class LoginWaiters(SharedExtension):
    """Browsers of this process waiting (long poll) for their push login's answer.

    Shared by the long-poll entrypoint, which waits here between short workers, and the
    broadcast event handlers, which every gateway instance runs, so a browser learns the
    outcome at once whichever instance it waits on. At most LONG_POLL_MAX wait at once;
    on graceful stop all are woken to answer with what they have.
    """

    # Answers heard lately (request id -> {status, device_id}), for a browser that asks
    # after the broadcast: at most this many, the oldest forgotten first.
    OUTCOMES_KEPT = 50_000

    def setup(self):
        self.waiting = {}
        self.outcomes = OrderedDict()
        self.slots = eventlet.semaphore.Semaphore(settings_of(self.container, GatewaySettings)["long_poll_max"])
        self.stopping = False

    def admit(self):
        """A slot to wait in, or False when LONG_POLL_MAX browsers wait already."""
        return not self.stopping and self.slots.acquire(blocking=False)

    def leave(self):
        self.slots.release()

    @property
    def count(self):
        return sum(len(events_) for events_ in self.waiting.values())

    def wait(self, request_id, seconds):
        if request_id in self.outcomes:
            return   # heard between the handler's answer and this wait
        event = eventlet.event.Event()
        self.waiting.setdefault(request_id, set()).add(event)
        try:
            with eventlet.Timeout(seconds, False):
                event.wait()
        finally:
            waiters = self.waiting.get(request_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self.waiting[request_id]

    def wake(self, request_id):
        for event in self.waiting.pop(request_id, ()):
            event.send(True)

    def settle(self, request_id, outcome):
        """A push login's answer, heard: kept, and its waiting browsers woken."""
        self.outcomes[request_id] = outcome
        while len(self.outcomes) > self.OUTCOMES_KEPT:
            self.outcomes.popitem(last=False)
        self.wake(request_id)

    def outcome(self, request_id):
        return self.outcomes.get(request_id)

    def wake_all(self):
        self.stopping = True
        for request_id in list(self.waiting):
            self.wake(request_id)


class Waiters(DependencyProvider):
    """The process's LoginWaiters, for the event handlers that wake them."""

    registry = LoginWaiters()

    def get_dependency(self, worker_ctx):
        return self.registry
