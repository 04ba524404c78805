"""Call deadlines that travel with an RPC, so a late call is refused instead of processed.

The gateway gives up on a call after RPC_TIMEOUT_SECONDS and answers 503. RabbitMQ's
message expiration drops the call only while it waits in the queue; a message already
pushed to a hung consumer is processed when it wakes. So the caller also puts its
deadline (unix seconds) in nameko's context data, which nameko sends as a message
header, and the service refuses a call whose caller has given up. The same deadline
bounds the call's database operations (shared/mongo.py) and the publishing of its reply
(shared/messaging.py), so nothing commits after the caller stopped listening.

A call that committed something only its success may keep (a code accepted) registers
how to undo it with `undo_unless_delivered`: the RPC entrypoint (shared/messaging.py)
runs it when the call then fails, or when its successful reply cannot be sent, so an
answer nobody received leaves nothing behind.
"""
import logging
import time

import eventlet
from nameko.extensions import DependencyProvider

from shared.errors import Unavailable

log = logging.getLogger(__name__)

CONTEXT_KEY = "mycepa_deadline"
# Kept free at the end of a call for its reply to travel back: a commit needs at least
# this much time left, or it is not attempted.
REPLY_MARGIN_SECONDS = 0.5
_UNDO = "mycepa_undo"


def set_deadline(worker_ctx, seconds_from_now):
    """Give the call at most `seconds_from_now`, never more than it already had."""
    deadline = time.time() + seconds_from_now
    current = deadline_of(worker_ctx)
    # worker_ctx.data, not .context_data: the latter is a fresh copy on every access.
    worker_ctx.data[CONTEXT_KEY] = deadline if current is None else min(current, deadline)


def deadline_of(worker_ctx):
    """The caller's deadline (unix seconds), or None when the caller set none."""
    try:
        return float(worker_ctx.data[CONTEXT_KEY])
    except (KeyError, TypeError, ValueError):
        return None


def seconds_left(worker_ctx, default):
    """Seconds this call may still spend before its reply must leave; `default` without
    a caller's deadline. Zero or less: the caller is about to give up."""
    deadline = deadline_of(worker_ctx)
    return default if deadline is None else deadline - REPLY_MARGIN_SECONDS - time.time()


def undo_unless_delivered(worker_ctx, action):
    if getattr(worker_ctx, _UNDO, None) is None:
        setattr(worker_ctx, _UNDO, [])
    getattr(worker_ctx, _UNDO).append(action)


def run_undo_actions(worker_ctx):
    """Run what the call registered to undo, once; a failing action is logged (one that
    must survive a dead database retries by itself, shared/repair.py)."""
    for action in getattr(worker_ctx, _UNDO, None) or ():
        try:
            # In a greenthread of its own: the call's database timeout (shared/mongo.py)
            # has usually run out by now, and the undo must not inherit it.
            eventlet.spawn(action).wait()
        except Exception as error:  # never let an undo crash the entrypoint that runs it
            log.error("undoing an unanswered call failed: %s", type(error).__name__)
    setattr(worker_ctx, _UNDO, [])


class Deadline(DependencyProvider):
    """`self.deadline.check()` raises Unavailable when the caller has (nearly) given up;
    `self.deadline.undo_unless_delivered(fn)`: what to undo unless the caller receives
    this call's success."""

    def get_dependency(self, worker_ctx):
        return _Call(worker_ctx)


class _Call:
    def __init__(self, worker_ctx):
        self.worker_ctx = worker_ctx

    def check(self):
        if seconds_left(self.worker_ctx, default=1.0) <= 0:
            raise Unavailable("The caller gave up before this request was processed")

    def undo_unless_delivered(self, action):
        undo_unless_delivered(self.worker_ctx, action)
