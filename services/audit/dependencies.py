"""The audit service's dependency providers."""
from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider

from shared.messaging import EventsConsumer


class QueueDepth(DependencyProvider):
    """How many events wait in the audit queue (the trail's lag), or None when the broker
    does not say. A passive declare: it reads the queue, never creates it."""

    def setup(self):
        self.uri = self.container.config[AMQP_URI_CONFIG_KEY]
        self.queue_name = next(entrypoint.queue_name for entrypoint in self.container.entrypoints
                               if isinstance(entrypoint, EventsConsumer))

    def get_dependency(self, worker_ctx):
        def depth():
            try:
                with Connection(self.uri, connect_timeout=1, transport_options={"max_retries": 0}) as connection:
                    return connection.default_channel.queue_declare(queue=self.queue_name, passive=True).message_count
            except Exception:   # the broker is away or the queue not there yet: unknown
                return None
        return depth
