"""The lockout policy of code login (architecture.md §5), in one place.

Failed codes lock *code* login of an account, progressively: OTP_FREE_FAILURES failures
are free, then each further failure locks for OTP_LOCK_BASE_SECONDS doubling, capped at
OTP_LOCK_MAX_SECONDS (15 minutes at most), and OTP_HARD_LOCK_FAILURES consecutive
failures (100 at most, NIST 800-63B's ceiling) lock it until an administrator unlocks
it. Push login is not affected: the phone proves possession. Any successful login, code
or push, starts counting from zero again.

The count lives in the otp storage as failure tickets (exact under any concurrency); a
`LockState` is what one read of it says: how many consecutive failures in the current
epoch, and when the last one happened. The lock is derived from those two, never stored.
"""
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import Locked

HARD_LOCKED = ("This account's code login is locked after too many failed attempts; "
               "log in with push, or ask an administrator to unlock it")


@dataclass(frozen=True)
class LockState:
    username: str
    epoch: str
    failures: int                  # consecutive failures in this epoch
    last_failure_at: datetime = None


@dataclass(frozen=True)
class LockoutPolicy:
    free_failures: int
    base_seconds: int
    max_seconds: int
    hard_failures: int

    @classmethod
    def from_settings(cls, settings):
        return cls(settings["free_failures"], settings["lock_base_seconds"], settings["lock_max_seconds"],
                   settings["hard_lock_failures"])

    def hard(self, failures):
        return failures >= self.hard_failures

    def wait_after(self, failures):
        """Seconds code login stays locked after the failure numbered `failures`."""
        over = failures - self.free_failures
        return 0 if over <= 0 else min(self.base_seconds * 2 ** min(over - 1, 30), self.max_seconds)

    def locked_until(self, state):
        if not state.failures or state.last_failure_at is None:
            return None
        return state.last_failure_at + timedelta(seconds=self.wait_after(state.failures))

    def locked(self, state, now):
        until = self.locked_until(state)
        return self.hard(state.failures) or (until is not None and until > now)

    def refusal(self, state, now):
        """The Locked error that refuses a code now, or None when a code may be tried."""
        if self.hard(state.failures):
            return Locked(HARD_LOCKED)
        until = self.locked_until(state)
        if until is not None and until > now:
            seconds = max(1, math.ceil((until - now).total_seconds()))
            return Locked(f"Too many failed attempts; try again in {seconds} seconds", retry_after=seconds)
        return None

    def starts_a_lock(self, failures):
        """Whether the failure numbered `failures` is the one that locks: the first
        temporary lock of the epoch, or the hard lock (what the user is told about)."""
        return failures == self.free_failures + 1 or failures == self.hard_failures
