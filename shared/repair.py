"""Repairs: actions that must happen although they just failed, retried until they do.

A failure after a commit is repaired, never swallowed (architecture.md §6): a code accepted for a
login that then could not answer is released, and the release itself may meet the same
dead database or broker. Each repair runs in its own greenthread with growing pauses
until it succeeds or its time is up (after which it has no purpose: a code is only
usable for about a minute), and a graceful stop gives the pending ones a last chance
before the connections close.
"""
import logging
import time

import eventlet

log = logging.getLogger(__name__)


class Repairs:
    def __init__(self):
        self.pending = set()

    def now_or_later(self, what, action, for_seconds=120.0):
        """Run `action` now; if it raises, keep retrying it in the background."""
        try:
            action()
        except Exception as error:
            log.warning("%s failed (%s); retrying in the background", what, type(error).__name__)
            self.later(what, action, for_seconds, first_delay=0.2)

    def later(self, what, action, for_seconds=120.0, first_delay=0.0):
        thread = eventlet.spawn(self._keep_trying, what, action, time.monotonic() + for_seconds, first_delay)
        self.pending.add(thread)
        thread.link(self.pending.discard)

    def _keep_trying(self, what, action, give_up_at, delay):
        attempts = 0
        while True:
            eventlet.sleep(delay)
            attempts += 1
            try:
                action()
            except Exception as error:
                if time.monotonic() + delay >= give_up_at:
                    log.error("%s: gave up after %d attempts (%s)", what, attempts, type(error).__name__)
                    return
                delay = min(2.0, max(0.2, delay * 2))
                continue
            if attempts > 1 or delay:
                log.info("%s: done after %d attempt(s)", what, attempts)
            return

    def drain(self, seconds):
        """Wait up to `seconds` for the pending repairs; those still failing are logged."""
        with eventlet.Timeout(seconds, False):
            for thread in list(self.pending):
                thread.wait()
        for thread in list(self.pending):
            log.error("stopping with a repair still pending")
            thread.kill()
