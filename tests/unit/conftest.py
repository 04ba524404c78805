"""Helpers for the unit layer: no RabbitMQ, no database, every dependency a mock or a fake.

The root conftest (tests/conftest.py) has already patched eventlet and put the test
settings (OTP_FREE_FAILURES=3, OTP_LOCK_BASE_SECONDS=1, OTP_LOCK_MAX_SECONDS=4,
OTP_HARD_LOCK_FAILURES=6, ...) into os.environ; the otp settings here are loaded from it
through an explicit mapping, so nothing is cached between tests.

The otp worker's `storage` is a `Mock(spec=OtpStorage, wraps=FakeOtpStorage())`: every
call is recorded (assert on it as on any mock) and answered by the in-memory fake, which
keeps OtpStorage's contract (claims and tickets handed out once, lockout epochs, the
`$max` summaries). A test seeds the fake (`worker.storage.fake`) or overrides one method
with `return_value` / `side_effect`, which then bypasses the fake for that method.
"""
import copy
import os
import secrets as stdlib_secrets
from unittest.mock import Mock

import pytest
from nameko.testing.services import worker_factory
from pymongo.errors import DuplicateKeyError

from shared.config import FromSettings, load_settings
from shared.repair import Repairs
from services.otp.config import OtpSettings
from services.otp.service import OtpService
from services.otp.lockout import LockState
from services.otp.storage import ACTIVE, REVOKED, OtpStorage


def otp_settings(**overrides):
    """OtpSettings from the test environment, with `overrides` as environment values."""
    environ = {**os.environ, **{key: str(value) for key, value in overrides.items()}}
    return load_settings(OtpSettings, environ=environ)


def settings_dependencies(**overrides):
    """The settings-built dependencies of an otp worker: `config` (the settings from the
    test environment with `overrides`) and every FromSettings dependency of OtpService
    (the SecretBox, the LockoutPolicy...), each built by the service's own `build`, so a
    worker here has every settings-built attribute the running service has."""
    settings = otp_settings(**overrides)
    built = {name: provider.build(settings) for name, provider in vars(OtpService).items()
             if isinstance(provider, FromSettings)}
    return {"config": settings, **built}


class FakeOtpStorage:
    """OtpStorage in memory: the same public methods with the same signatures (a test
    compares them), the same semantics, no concurrency. Every read returns a copy, as a
    database would, so a caller never holds a live reference to the stored state.

    The `seed_*` methods are for arranging a test; they are not part of OtpStorage.
    """

    def __init__(self):
        self.activation_codes = {}         # code_id -> record
        self.activation_claims = set()     # code_id
        self.activation_failures = {}      # "code_id#n" -> when
        self.accounts = {}                 # username -> [device_id, ...]
        self.authenticators = {}           # device_id -> record
        self.used_steps = {}               # "device_id#step" -> the attempt that holds it
        self.failures = {}                 # "username#epoch#n" -> when
        self.lockouts = {}                 # username -> {epoch, failures, updated_at}

    # -- arranging a test ------------------------------------------------------------

    def seed_activation_code(self, record):
        """Store `record` and the tickets of its `failed_tries` wrong tries."""
        self.activation_codes[record["_id"]] = copy.deepcopy(record)
        for number in range(1, record["failed_tries"] + 1):
            self.activation_failures[f"{record['_id']}#{number}"] = None

    def seed_authenticator(self, device_id, username, encrypted_secret, status=ACTIVE, now=None):
        self.add_authenticator(device_id, username, encrypted_secret, "poll", "Test phone", now)
        self.authenticators[device_id]["status"] = status
        if status == REVOKED:
            self.authenticators[device_id]["revoked_at"] = now

    def seed_failures(self, username, failures, at):
        """`failures` consecutive failures in the current epoch, the last one at `at`."""
        state = self.lock_state(username)
        for _ in range(failures):
            state = self.count_failure(state, at)

    # -- Storage ---------------------------------------------------------------------

    def ping(self):
        return True

    def purge_expired(self, now, hard_lock_failures):
        return 0

    # -- activation codes ------------------------------------------------------------

    def add_activation_code(self, code_id, secret_hash, username, now, expires_at):
        if code_id in self.activation_codes:
            return False
        self.activation_codes[code_id] = {
            "_id": code_id, "secret_hash": secret_hash, "username": username, "created_at": now,
            "expires_at": expires_at, "used_at": None, "failed_tries": 0}
        return True

    def find_activation_code(self, code_id):
        return copy.deepcopy(self.activation_codes.get(code_id))

    def count_activation_failure(self, record, now):
        tries = _next_ticket(self.activation_failures, record["_id"], record["failed_tries"])
        stored = self.activation_codes[record["_id"]]
        stored["failed_tries"] = max(stored["failed_tries"], tries)
        return tries

    def activation_tries_exhausted(self, record, max_tries):
        return record["failed_tries"] >= max_tries or f"{record['_id']}#{max_tries}" in self.activation_failures

    def claim_activation_code(self, code_id, now):
        if code_id in self.activation_claims:
            return False
        self.activation_claims.add(code_id)
        if code_id in self.activation_codes:
            self.activation_codes[code_id]["used_at"] = now
        return True

    def undo_activation(self, code_id, device_id, username):
        if device_id in self.accounts.get(username, []):
            self.accounts[username].remove(device_id)
        self.authenticators.pop(device_id, None)
        self.activation_claims.discard(code_id)
        if code_id in self.activation_codes:
            self.activation_codes[code_id]["used_at"] = None

    # -- authenticators --------------------------------------------------------------

    def add_authenticator(self, device_id, username, encrypted_secret, platform, device_name, now):
        if device_id in self.authenticators:
            raise DuplicateKeyError(f"duplicate key: {device_id}")
        self.authenticators[device_id] = {
            "_id": device_id, "username": username, "secret": encrypted_secret,
            "platform": platform, "device_name": device_name, "status": ACTIVE,
            "created_at": now, "last_used_at": None, "revoked_at": None, "last_step": 0}
        device_ids = self.accounts.setdefault(username, [])
        if device_id not in device_ids:
            device_ids.append(device_id)

    def authenticators_of(self, username, active_only=True):
        found = [self.authenticators[device_id] for device_id in self.accounts.get(username, [])
                 if device_id in self.authenticators]
        return [copy.deepcopy(record) for record in found if record["status"] == ACTIVE or not active_only]

    def accept_step(self, authenticator, step, attempt, now):
        if step < authenticator["last_step"]:
            return False
        key = f"{authenticator['_id']}#{step}"
        if key in self.used_steps:
            return self.used_steps[key] == attempt
        self.used_steps[key] = attempt
        stored = self.authenticators[authenticator["_id"]]
        stored["last_step"] = max(stored["last_step"], step)
        stored["last_used_at"] = now
        return True

    def release_step(self, device_id, step, attempt):
        key = f"{device_id}#{step}"
        if self.used_steps.get(key) != attempt:
            return False
        del self.used_steps[key]
        return True

    def revoke_authenticator(self, device_id, now):
        authenticator = self.authenticators.get(device_id)
        if authenticator is None or authenticator["status"] != ACTIVE:
            return None
        before = copy.deepcopy(authenticator)
        authenticator.update(status=REVOKED, revoked_at=now)
        return before

    def find_authenticator(self, device_id):
        return copy.deepcopy(self.authenticators.get(device_id))

    # -- lockout ---------------------------------------------------------------------

    def lock_state(self, username):
        summary = self.lockouts.get(username)
        if summary is None:
            return LockState(username, "0", 0)
        key, failures = f"{username}#{summary['epoch']}", summary["failures"]
        while f"{key}#{failures + 1}" in self.failures:
            failures += 1
        return LockState(username, summary["epoch"], failures,
                         self.failures[f"{key}#{failures}"] if failures else summary["updated_at"])

    def count_failure(self, state, now):
        failures = _next_ticket(self.failures, f"{state.username}#{state.epoch}", state.failures, now)
        summary = self.lockouts.setdefault(state.username, {"epoch": state.epoch, "failures": 0, "updated_at": now})
        if summary["epoch"] != state.epoch:
            # OtpStorage's epoch guard: a failure counted in an epoch that a success or an
            # unlock has ended keeps its ticket but does not touch the current epoch's
            # summary, and the caller learns the current epoch's state.
            return self.lock_state(state.username)
        summary["failures"] = max(summary["failures"], failures)
        summary["updated_at"] = max(summary["updated_at"], now)
        return LockState(state.username, state.epoch, failures, now)

    def start_new_epoch(self, state, force=False):
        if not (force or state.failures):
            return False
        # An update without upsert, as OtpStorage's: no summary, nothing written.
        if state.username in self.lockouts:
            self.lockouts[state.username].update(epoch=stdlib_secrets.token_hex(8), failures=0)
        return True


def _next_ticket(tickets, key, after, at=None):
    """OtpStorage.take_ticket on a dict of ids (each one's time)."""
    number = max(0, int(after))
    while f"{key}#{number + 1}" in tickets:
        number += 1
    tickets[f"{key}#{number + 1}"] = at
    return number + 1


def otp_storage():
    """A recording storage that starts as a clean database: no lock, no authenticator.

    `storage.fake` is the FakeOtpStorage behind it, for seeding and for checking state.
    """
    fake = FakeOtpStorage()
    storage = Mock(name="storage", spec=OtpStorage, wraps=fake)
    storage.fake = fake
    # Real: a repair runs at once in memory, as it does when the database answers.
    storage.repairs = Repairs()
    return storage


@pytest.fixture
def make_otp_worker():
    """make_otp_worker(**setting_overrides) -> an OtpService worker with a recording fake
    storage, mocked dispatcher and deadline, and real settings-built dependencies (settings_dependencies above)."""

    def make(**overrides):
        # Both dispatchers (confirmed lifecycle events, unconfirmed login outcomes) record
        # into one mock, so tests see every event in the order it was sent.
        events_sent = Mock(name="dispatch")
        return worker_factory(OtpService, storage=otp_storage(), **settings_dependencies(**overrides),
                              dispatch=events_sent, dispatch_outcome=events_sent, deadline=Mock(name="deadline"))

    return make
