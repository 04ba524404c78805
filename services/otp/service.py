"""The otp service: activation codes, device secrets, 10-digit TOTP verification, lockout."""
import math
import uuid
from datetime import timedelta

from nameko.events import EventDispatcher
from nameko.rpc import rpc
from nameko.timer import timer

from shared import events
from shared.clock import isoformat, utcnow
from shared.errors import EXPECTED_ERRORS, Expired, InvalidCredentials, Locked, NotFound, Unavailable
from shared.mongo import MongoStorage
from services.otp import activation_codes, secrets
from services.otp.dependencies import OtpConfig
from services.otp.lockout import lock_after
from services.otp.schemas import (
    ActivateArgs, DeviceIdArgs, DeviceView, UsernameArgs, VerifyArgs, load_args,
)
from services.otp.storage import OtpStorage

WRONG_CODE = "Unknown username or wrong code"
WRONG_ACTIVATION = "This activation code is not valid"
# Verifying against this secret when a username has no authenticator makes an unknown
# user cost the same time as a known one.
_DECOY_SECRET = secrets.new_secret()


class OtpService:
    name = "otp"

    storage = MongoStorage(OtpStorage)
    config = OtpConfig()
    dispatch = EventDispatcher()

    @rpc
    def ping(self):
        if not self.storage.ping():
            raise Unavailable("otp database unreachable")
        return {"service": self.name}

    # -- activation ------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_activation(self, username):
        username = load_args(UsernameArgs, username=username)["username"]
        now = utcnow()
        expires_at = now + timedelta(seconds=self.config.settings["activation_ttl_seconds"])
        for _ in range(10):  # a taken code id is drawn again
            code_id, code = activation_codes.new_code()
            _, secret_part = activation_codes.parse(code)
            if self.storage.add_activation_code(code_id, activation_codes.secret_hash(secret_part),
                                                username, now, expires_at):
                return {"activation_code": code, "username": username, "expires_at": isoformat(expires_at)}
        raise Unavailable("could not allocate an activation code; try again")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def activate_device(self, activation_code, public_key, platform, device_name, push_token=None):
        args = load_args(ActivateArgs, activation_code=activation_code, public_key=public_key,
                         platform=platform, device_name=device_name, push_token=push_token)
        now = utcnow()
        code_id, secret_part = self._check_activation_code(args["activation_code"], now)
        if not self.storage.claim_activation_code(code_id, now):
            raise Expired("This activation code has already been used")
        username = self.storage.find_activation_code(code_id)["username"]

        device_id = f"dev_{uuid.uuid4().hex}"
        secret = secrets.new_secret()
        try:
            self.storage.add_authenticator(device_id, username, self.config.box.encrypt(secret, device_id),
                                           args["platform"], args["device_name"], now)
        except Exception:
            # Nothing half-written: the code works again if the device could not be stored.
            self.storage.release_activation_code(code_id)
            raise
        events.dispatch_event(
            self.dispatch, events.DeviceActivated, device_id=device_id, username=username,
            platform=args["platform"], push_token=args["push_token"], public_key=args["public_key"],
            device_name=args["device_name"])
        return {
            "device_id": device_id,
            "username": username,
            "otp": {"secret": secret, "digits": secrets.DIGITS, "period": secrets.PERIOD,
                    "algorithm": secrets.ALGORITHM},
            "otpauth_uri": secrets.provisioning_uri(secret, username, self.config.settings["issuer"]),
        }

    def _check_activation_code(self, text, now):
        parsed = activation_codes.parse(text)
        record = self.storage.find_activation_code(parsed[0]) if parsed else None
        if record is None:
            raise InvalidCredentials(WRONG_ACTIVATION)
        code_id, secret_part = parsed
        max_tries = self.config.settings["activation_max_tries"]
        if record["failed_tries"] >= max_tries:
            raise Locked("This activation code was tried wrongly too often; ask for a new one")
        if not activation_codes.matches(secret_part, record["secret_hash"]):
            if self.storage.count_activation_failure(code_id) >= max_tries:
                raise Locked("This activation code was tried wrongly too often; ask for a new one")
            raise InvalidCredentials(WRONG_ACTIVATION)
        if record["used_at"] is not None:
            raise Expired("This activation code has already been used")
        if record["expires_at"] <= now:
            raise Expired("This activation code has expired; ask for a new one")
        return code_id, secret_part

    # -- login -----------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def verify(self, username, code):
        """The device whose code this is, accepted once; otherwise a refusal that is the
        same for an unknown user and a wrong code."""
        args = load_args(VerifyArgs, username=username, code=code)
        username, code = args["username"], args["code"]
        now = utcnow()
        self._refuse_if_locked(username, now)

        authenticators = self.storage.active_authenticators(username)
        if not authenticators:
            secrets.matching_step(_DECOY_SECRET, code, now)
        for authenticator in authenticators:
            secret = self.config.box.decrypt(authenticator["secret"], authenticator["_id"])
            step = secrets.matching_step(secret, code, now)
            if step is None:
                continue
            if self.storage.advance_last_step(authenticator["_id"], step, now):
                self.storage.clear_failures(username)
                events.dispatch_event(self.dispatch, events.OtpVerified,
                                      username=username, device_id=authenticator["_id"])
                return {"username": username, "device_id": authenticator["_id"]}
            return self._refuse(username, "replayed", now)
        return self._refuse(username, "invalid", now)

    def _refuse_if_locked(self, username, now):
        lockout = self.storage.lockout(username)
        if lockout["hard_locked"]:
            self._emit_rejected(username, "locked", lockout["failures"])
            raise Locked("This account is locked after too many failed attempts; "
                         "an administrator must unlock it")
        if lockout["locked_until"] and lockout["locked_until"] > now:
            self._emit_rejected(username, "locked", lockout["failures"])
            raise _temporary_lock(lockout["locked_until"], now)

    def _refuse(self, username, reason, now):
        failures = self.storage.count_failure(username, now)
        self._emit_rejected(username, reason, failures)
        until, hard = lock_after(failures, self.config.settings, now)
        if hard or until:
            self.storage.lock(username, until, hard, now)
            events.dispatch_event(self.dispatch, events.AccountLocked, username=username,
                                  consecutive_failures=failures, hard=hard, until=until)
        if hard:
            raise Locked("Too many failed attempts: this account is now locked; "
                         "an administrator must unlock it")
        if until:
            raise _temporary_lock(until, now)
        raise InvalidCredentials(WRONG_CODE)

    def _emit_rejected(self, username, reason, failures):
        events.dispatch_event(self.dispatch, events.OtpRejected, username=username, reason=reason,
                              consecutive_failures=failures)

    # -- administration --------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_devices(self, username):
        username = load_args(UsernameArgs, username=username)["username"]
        return DeviceView(many=True).dump(self.storage.devices_of(username))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def revoke_device(self, device_id, reason="admin"):
        device_id = load_args(DeviceIdArgs, device_id=device_id)["device_id"]
        device = self.storage.revoke_authenticator(device_id, utcnow())
        if device is None:
            raise NotFound("No active device with this id")
        events.dispatch_event(self.dispatch, events.DeviceRevoked, device_id=device_id,
                              username=device["username"], reason=reason)
        return DeviceView().dump(self.storage.find_authenticator(device_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def unlock(self, username):
        username = load_args(UsernameArgs, username=username)["username"]
        now = utcnow()
        previous = self.storage.unlock(username)
        was_locked = bool(previous and (previous.get("hard_locked") or
                                        (previous.get("locked_until") or now) > now))
        if was_locked:
            events.dispatch_event(self.dispatch, events.AccountUnlocked, username=username, by="admin")
        return {"username": username, "was_locked": was_locked}

    @timer(interval=300)
    def purge_expired(self):
        self.storage.purge_expired(utcnow())


def _temporary_lock(until, now):
    seconds = max(1, math.ceil((until - now).total_seconds()))
    return Locked(f"Too many failed attempts; try again in {seconds} seconds", retry_after=seconds)
