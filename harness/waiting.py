"""Waiting for what the system does asynchronously (events, sweeps) in tests and tools."""
import time


def eventually(probe, until, timeout=5.0, interval=0.05):
    """`probe()` again and again until `until(value)` holds or `timeout` seconds passed;
    the last value (so the caller's assertion shows what was seen). `until` may be a
    plain value to compare with."""
    done = until if callable(until) else (lambda value: value == until)
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)
