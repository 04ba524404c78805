"""The audit service's dependency providers."""
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider

from shared.messaging import EventsConsumer, queue_depth


class QueueDepth(DependencyProvider):
    """How many events wait in the audit queue (the trail's lag), or None when the broker
    does not say."""

    def setup(self):
        self.uri = self.container.config[AMQP_URI_CONFIG_KEY]
        self.queue_name = next(entrypoint.queue_name for entrypoint in self.container.entrypoints
                               if isinstance(entrypoint, EventsConsumer))

    def get_dependency(self, worker_ctx):
        return lambda: queue_depth(self.uri, self.queue_name)
