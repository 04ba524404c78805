"""nameko 2.14's messaging extensions, made to outlive RabbitMQ going away.

nameko kills a whole service container when an extension's greenthread raises, and
three of its messaging paths raise when the broker is gone (measured: otp exited in
3 of 3 broker restarts under load):
- an RPC reply that cannot be published (`RpcConsumer.handle_result`), because the
  reply is sent from the worker's result handler;
- an ack or requeue on a dead connection (`QueueConsumer.ack_message` /
  `requeue_message` catch only amqp's ConnectionError; a socket error such as
  ConnectionResetError escapes), for RPC, events and the RPC reply listener alike;
- publishing, which retries with nameko's default policy for about 9 s: far past the
  caller's RPC bound, with a worker and a browser waiting.

The subclasses here fix those where they happen. An ack that cannot be sent is dropped
(the broker redelivers an unacknowledged message by itself); a reply that cannot be sent
within the caller's deadline is given up, and what the call committed is undone
(shared/deadline.py); publishing is bounded. Consuming needs no change: kombu's
ConsumerMixin reconnects forever and nameko re-declares its queues on every reconnect.
Every service uses `rpc`, `event_handler`, `EventDispatcher` and `ServiceRpc` from here.
"""
import logging
import time
from contextlib import contextmanager
from functools import partial

import eventlet
from nameko import events as nameko_events
from nameko import rpc as nameko_rpc
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY, DEFAULT_SERIALIZER, LOGIN_METHOD_CONFIG_KEY, SERIALIZER_CONFIG_KEY,
)
from kombu import Connection, Queue, binding
from kombu.entity import TRANSIENT_DELIVERY_MODE as TRANSIENT
from kombu.exceptions import OperationalError
from nameko.exceptions import ContainerBeingKilled, UnknownService
from nameko.messaging import QueueConsumer

from shared.config import RpcSettings, settings_of
from shared.deadline import (
    CONTEXT_KEY, REPLY_MARGIN_SECONDS, deadline_of, run_undo_actions, seconds_left, set_deadline,
)
from shared.errors import Unavailable, unavailable_from

log = logging.getLogger(__name__)

# Without a caller's deadline (events, timers), how long a publish may keep trying.
PUBLISH_SECONDS = 5.0
# Short connection retries: the caller's deadline, not kombu's schedule, ends the wait.
QUICK_RETRY = {"max_retries": 20, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


class BoundedPublisher(Publisher):
    """nameko's publisher with retries that fit inside a deadline instead of 2+3+4 s."""

    retry_policy = QUICK_RETRY

    @property
    def transport_options(self):
        # A fresh dict per publish: nameko writes `confirm_publish` into it, and kombu
        # pools connections by these options, so a shared dict would mix the pools of
        # confirmed and unconfirmed publishers.
        return dict(QUICK_RETRY)

    def __init__(self, *args, within=PUBLISH_SECONDS, **kwargs):
        super().__init__(*args, **kwargs)
        self.within = within

    def publish(self, payload, within=None, **kwargs):
        """Publish, or raise Unavailable once `within` seconds (default: the publisher's)
        have passed."""
        try:
            with eventlet.Timeout(max(self.within if within is None else within, 0.01)):
                return super().publish(payload, **kwargs)
        except eventlet.Timeout:
            raise Unavailable("The message broker is unreachable; try again") from None


class SafeQueueConsumer(QueueConsumer):
    """Acks and requeues that never raise: on a dead connection the broker has already
    taken the message back and redelivers it. And a reconnect that tries every second:
    kombu's default backs off 2, 4, 6 ... up to 30 s, so a consumer could wait many
    seconds after the broker was back (measured: 7.5 s after a 10 s outage)."""

    @contextmanager
    def establish_connection(self):
        with self.create_connection() as connection:
            connection.ensure_connection(self.on_connection_error, self.connect_max_retries,
                                         interval_start=0.2, interval_step=0.4, interval_max=1.0)
            yield connection

    def ack_message(self, message):
        self._settle(message, "ack")

    def requeue_message(self, message):
        self._settle(message, "requeue")

    @staticmethod
    def _settle(message, action):
        try:
            if message.channel.connection:
                getattr(message, action)()
        except Exception as error:
            log.warning("could not %s a message (%s); the broker redelivers it", action, type(error).__name__)


class RpcConsumer(nameko_rpc.RpcConsumer):
    queue_consumer = SafeQueueConsumer()

    def handle_result(self, message, result, exc_info, worker_ctx=None):
        """Reply within the caller's deadline, or give the reply up and undo the call;
        never raise (nameko would kill the container)."""
        if exc_info is not None:
            unavailable = unavailable_from(exc_info[1])
            if unavailable is not None and unavailable is not exc_info[1]:
                log.warning("%s: answered 503 (%s)", routing_key_of(message), type(exc_info[1]).__name__)
                exc_info = (Unavailable, unavailable, None)
        config = self.container.config
        responder = nameko_rpc.Responder(
            config[AMQP_URI_CONFIG_KEY], nameko_rpc.get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER), message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY), login_method=config.get(LOGIN_METHOD_CONFIG_KEY))
        # The reply may use the margin the call kept free for it (REPLY_MARGIN_SECONDS).
        within = PUBLISH_SECONDS if worker_ctx is None else seconds_left(worker_ctx, PUBLISH_SECONDS)
        responder.publisher_cls = partial(TransientPublisher, within=within + REPLY_MARGIN_SECONDS)
        delivered = False
        try:
            result, exc_info = responder.send_response(result, exc_info)
            delivered = exc_info is None
        except Exception as error:
            log.warning("%s: the reply could not be sent (%s)", routing_key_of(message), type(error).__name__)
        if worker_ctx is not None and not delivered:
            run_undo_actions(worker_ctx)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class Rpc(nameko_rpc.Rpc):
    rpc_consumer = RpcConsumer()

    def handle_result(self, message, worker_ctx, result, exc_info):
        return self.rpc_consumer.handle_result(message, result, exc_info, worker_ctx)


rpc = Rpc.decorator


class EventHandler(nameko_events.EventHandler):
    queue_consumer = SafeQueueConsumer()


event_handler = EventHandler.decorator


class EventsConsumer(EventHandler):
    """Every event of `event_classes` from one durable queue of the service's own, the
    handler called with (event type, payload).

    nameko's event handler binds a queue to one event of one service: a consumer of every
    event (the audit trail) would need a queue and a handler per event, and its backlog
    would be spread over all of them. One queue bound to every event's exchange and
    routing key keeps them in arrival order and makes the backlog one number (its depth).
    """

    def __init__(self, event_classes, **kwargs):
        self.event_classes = tuple(event_classes)
        super().__init__(None, None, requeue_on_error=True, **kwargs)

    @property
    def queue_name(self):
        return f"evt-all--{self.container.service_name}.{self.method_name}"

    def setup(self):
        config = self.container.config
        self.queue = Queue(self.queue_name, durable=True, bindings=[
            binding(nameko_events.get_event_exchange(event_cls.service, config), routing_key=event_cls.name)
            for event_cls in self.event_classes])
        self.queue_consumer.register_provider(self)

    def handle_message(self, body, message):
        context_data = self.unpack_message_headers(message)
        handle_result = partial(self.handle_result, message)
        try:
            self.container.spawn_worker(self, (routing_key_of(message), body), {}, context_data=context_data,
                                        handle_result=handle_result)
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)


consume_events = EventsConsumer.decorator


class EventDispatcher(nameko_events.EventDispatcher):
    """Dispatch that gives up within the worker's deadline with Unavailable."""

    publisher_cls = BoundedPublisher

    def get_dependency(self, worker_ctx):
        # An event is not bound by the deadline of the call that emits it: nobody waits
        # for its handlers, which must run whenever the event arrives.
        extra_headers = {key: value for key, value in self.get_message_headers(worker_ctx).items()
                         if not key.endswith(CONTEXT_KEY)}

        def dispatch(event_type, event_data):
            within = seconds_left(worker_ctx, PUBLISH_SECONDS) + REPLY_MARGIN_SECONDS
            self.publisher.publish(event_data, within=within,
                                   exchange=self.exchange, routing_key=event_type, extra_headers=extra_headers)

        return dispatch

    def publish_later(self, event_type, event_data):
        """Publish outside any worker (a repair after the worker answered): no headers."""
        self.publisher.publish(event_data, exchange=self.exchange, routing_key=event_type)


class ReplyListener(nameko_rpc.ReplyListener):
    queue_consumer = SafeQueueConsumer()


class TransientPublisher(BoundedPublisher):
    """For RPC requests and replies: not written to RabbitMQ's disk. A call is worth
    nothing after its caller's deadline (seconds), so surviving a broker restart cannot
    help it, and persisting every request and reply was measured as the broker's largest
    cost per login. (Events stay persistent: their handlers are durable.)"""

    delivery_mode = TRANSIENT


class MethodProxy(nameko_rpc.MethodProxy):
    publisher_cls = TransientPublisher


class ServiceProxy(nameko_rpc.ServiceProxy):
    def __getattr__(self, name):
        return MethodProxy(self.worker_ctx, self.service_name, name, self.reply_listener, **self.options)


class RpcProxy(nameko_rpc.RpcProxy):
    """Calls published with short retries, replies heard by a listener that survives the
    broker going away. (nameko 2 waits for the reply forever: ServiceRpc bounds it.)"""

    rpc_reply_listener = ReplyListener()

    def get_dependency(self, worker_ctx):
        return ServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener, **self.options)


class ServiceRpc(RpcProxy):
    """An RpcProxy whose calls give up after RPC_TIMEOUT_SECONDS with Unavailable (503).

    nameko 2's RpcProxy waits forever for a stopped service. Here the wait is bounded,
    and the request message carries the same expiration, so RabbitMQ drops a call nobody
    picked up in time; and the deadline travels in the call's headers (shared/deadline.py)
    so a service that was hung refuses the call instead of processing a stale login.
    A call made inside a call waits no longer than its caller's deadline.
    """

    def setup(self):
        self.timeout = settings_of(self.container, RpcSettings)["rpc_timeout_seconds"]
        self.options["expiration"] = self.timeout
        super().setup()

    def get_dependency(self, worker_ctx):
        return _BoundedProxy(super().get_dependency(worker_ctx), worker_ctx, self.target_service, self.timeout)


class _BoundedProxy:
    def __init__(self, proxy, worker_ctx, service_name, timeout):
        self._proxy = proxy
        self._worker_ctx = worker_ctx
        self._service_name = service_name
        self._timeout = timeout

    def __getattr__(self, method_name):
        method = getattr(self._proxy, method_name)

        def call(*args, **kwargs):
            set_deadline(self._worker_ctx, self._timeout)
            try:
                with eventlet.Timeout(max(0.0, deadline_of(self._worker_ctx) - time.time())):
                    return method(*args, **kwargs)
            except eventlet.Timeout:
                raise Unavailable(f"The {self._service_name} service did not answer in time") from None
            except UnknownService:
                raise Unavailable(f"The {self._service_name} service is not running") from None
            except (OSError, OperationalError):
                raise Unavailable("The message broker is unreachable") from None

        return call


def queue_depth(amqp_uri, queue_name):
    """How many messages wait in `queue_name` (ready ones: not those delivered and not yet
    acknowledged), or None when the broker does not say (away, or no such queue yet).
    A passive declare: it reads the queue, never creates it."""
    try:
        with Connection(amqp_uri, connect_timeout=1, transport_options={"max_retries": 0}) as connection:
            return connection.default_channel.queue_declare(queue=queue_name, passive=True).message_count
    except Exception:
        return None


def routing_key_of(message):
    return message.delivery_info.get("routing_key", "?")
