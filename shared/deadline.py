"""Call deadlines that travel with an RPC, so a late call is refused instead of processed.

The gateway gives up on a call after RPC_TIMEOUT_SECONDS and answers 503. RabbitMQ's
message expiration drops the call only while it waits in the queue; a message already
pushed to a hung consumer is processed when it wakes. So the caller also puts its
deadline (unix seconds) in nameko's context data, which nameko sends as a message
header, and the service checks it before doing anything that cannot be undone.
"""
import time

from nameko.extensions import DependencyProvider

from shared.errors import Unavailable

CONTEXT_KEY = "mycepa_deadline"


def set_deadline(worker_ctx, seconds_from_now):
    # worker_ctx.data, not .context_data: the latter is a fresh copy on every access.
    worker_ctx.data[CONTEXT_KEY] = time.time() + seconds_from_now


class Deadline(DependencyProvider):
    """`self.deadline.check()` raises Unavailable when the caller has already given up."""

    def get_dependency(self, worker_ctx):
        return _Check(worker_ctx.context_data.get(CONTEXT_KEY))


class _Check:
    def __init__(self, deadline):
        self.deadline = deadline

    def check(self):
        try:
            late = self.deadline is not None and time.time() > float(self.deadline)
        except (TypeError, ValueError):
            late = False
        if late:
            raise Unavailable("The caller gave up before this request was processed")
