"""The lockout policy: how long an account is locked after `failures` consecutive failures."""
from datetime import timedelta


def lock_after(failures, settings, now):
    """(locked_until or None, hard) for the count of consecutive failures just reached."""
    if failures >= settings["hard_lock_failures"]:
        return None, True
    over = failures - settings["free_failures"]
    if over <= 0:
        return None, False
    seconds = min(settings["lock_base_seconds"] * 2 ** (over - 1), settings["lock_max_seconds"])
    return now + timedelta(seconds=seconds), False
