"""The otp service: activation codes, device secrets, 10-digit TOTP verification, lockout."""
import logging
import uuid
from datetime import timedelta
from functools import partial

from nameko.timer import timer

from shared import events
from shared.clock import isoformat, utcnow
from shared.config import FromSettings, SettingsProvider
from shared.deadline import Deadline
from shared.errors import EXPECTED_ERRORS, Expired, InvalidCredentials, Locked, NotFound, Unavailable
from shared.messaging import EventDispatcher, rpc
from shared.mongo import MongoStorage
from shared.validation import UsernameArgs, load_args
from services.otp import activation_codes, totp
from services.otp.totp import SecretBox
from services.otp.config import OtpSettings
from services.otp.lockout import LockoutPolicy
from services.otp.schemas import ActivateArgs, ActorArgs, DeviceIdArgs, DeviceView, VerifyArgs
from services.otp.storage import OtpStorage

log = logging.getLogger(__name__)

WRONG_CODE = "Unknown username or wrong code"
WRONG_ACTIVATION = "This activation code is not valid"
ACTIVATION_USED = "This activation code has already been used"
ACTIVATION_LOCKED = "This activation code was tried wrongly too often; ask for a new one"
# Verifying against this secret when a username has no authenticator makes an unknown
# user cost the same time as a known one.
_DECOY_SECRET = totp.new_secret()


class OtpService:
    name = "otp"

    storage = MongoStorage(OtpStorage)
    config = SettingsProvider(OtpSettings)
    box = FromSettings(OtpSettings, SecretBox.from_settings)          # the device secrets' key ring
    lockout = FromSettings(OtpSettings, LockoutPolicy.from_settings)  # code login's lockout rule
    dispatch = EventDispatcher()
    # OtpVerified / OtpRejected: one per login attempt, an audit trail rather than state
    # any service depends on, so not worth a broker round trip (publisher confirm) on
    # every login. Lifecycle events (devices, locks) go through `dispatch`, confirmed.
    dispatch_outcome = EventDispatcher(use_confirms=False)
    deadline = Deadline()

    @rpc
    def ping(self):
        if not self.storage.ping():
            raise Unavailable("otp database unreachable")
        return {"service": self.name}

    # -- activation ------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_activation(self, username, actor=None):
        args = load_args(ActorArgs, username=username, actor=actor)
        username = args["username"]
        now = utcnow()
        expires_at = now + timedelta(seconds=self.config["activation_ttl_seconds"])
        for _ in range(10):  # a taken code id is drawn again
            code_id, code = activation_codes.new_code()
            _, secret_part = activation_codes.parse(code)
            if self.storage.add_activation_code(code_id, activation_codes.secret_hash(secret_part),
                                                username, now, expires_at):
                events.dispatch_event(self.dispatch, events.ActivationCreated, username=username,
                                      actor=args["actor"], expires_at=expires_at)
                return {"activation_code": code, "username": username, "expires_at": isoformat(expires_at)}
        raise Unavailable("could not allocate an activation code; try again")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def activate_device(self, activation_code, public_key, platform, device_name, push_token=None):
        args = load_args(ActivateArgs, activation_code=activation_code, public_key=public_key,
                         platform=platform, device_name=device_name, push_token=push_token)
        self.deadline.check()
        now = utcnow()
        code_id, secret_part = self._check_activation_code(args["activation_code"], now)
        if not self.storage.claim_activation_code(code_id, now):
            raise Expired(ACTIVATION_USED)
        username = self.storage.find_activation_code(code_id)["username"]

        device_id = f"dev_{uuid.uuid4().hex}"
        secret = totp.new_secret()
        try:
            self.storage.add_authenticator(device_id, username, self.box.encrypt(secret, device_id),
                                           args["platform"], args["device_name"], now)
            events.dispatch_event(
                self.dispatch, events.DeviceActivated, device_id=device_id, username=username,
                platform=args["platform"], push_token=args["push_token"], public_key=args["public_key"],
                device_name=args["device_name"])
        except Exception:
            # Nothing half-written: a device that could not be stored, or that push never
            # heard of, is removed again and the activation code works again.
            self.storage.repairs.now_or_later("undoing an activation that did not complete",
                                              partial(self.storage.undo_activation, code_id, device_id, username))
            raise
        return {
            "device_id": device_id,
            "username": username,
            "otp": {"secret": secret, "digits": totp.DIGITS, "period": totp.PERIOD,
                    "algorithm": totp.ALGORITHM},
            "otpauth_uri": totp.provisioning_uri(secret, username, self.config["issuer"]),
        }

    def _check_activation_code(self, text, now):
        parsed = activation_codes.parse(text)
        record = self.storage.find_activation_code(parsed[0]) if parsed else None
        if record is None:
            raise InvalidCredentials(WRONG_ACTIVATION)
        code_id, secret_part = parsed
        max_tries = self.config["activation_max_tries"]
        if self.storage.activation_tries_exhausted(record, max_tries):
            raise Locked(ACTIVATION_LOCKED)
        if not activation_codes.matches(secret_part, record["secret_hash"]):
            if self.storage.count_activation_failure(record, now) >= max_tries:
                raise Locked(ACTIVATION_LOCKED)
            raise InvalidCredentials(WRONG_ACTIVATION)
        if record["used_at"] is not None:
            raise Expired(ACTIVATION_USED)
        if record["expires_at"] <= now:
            raise Expired("This activation code has expired; ask for a new one")
        return code_id, secret_part

    # -- login -----------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def verify(self, username, code, attempt_id=None, source=None):
        """The device whose code this is, accepted once; otherwise a refusal that is the
        same for an unknown user and a wrong code.

        `attempt_id` names the caller's login attempt: the same attempt asking again is
        answered the same, and a LoginAbandoned event for it releases the code. The code
        stays accepted only if the caller receives this success.
        """
        args = load_args(VerifyArgs, username=username, code=code, attempt_id=attempt_id, source=source)
        username, code, source = args["username"], args["code"], args["source"]
        attempt_id = args["attempt_id"] or uuid.uuid4().hex
        self.deadline.check()
        now = utcnow()
        state = self.storage.lock_state(username)
        refusal = self.lockout.refusal(state, now)
        if refusal is not None:
            self._emit_rejected(username, "locked", state.failures, source)
            raise refusal

        authenticators = self.storage.authenticators_of(username)
        if not authenticators:
            totp.matching_step(_DECOY_SECRET, code, now)
        for authenticator in authenticators:
            step = totp.matching_step(self._secret_of(authenticator), code, now)
            if step is None:
                continue
            self._refuse_if_locked_meanwhile(state, now, source)
            if not self.storage.accept_step(authenticator, step, attempt_id, now):
                return self._refuse(state, "replayed", now, source)
            self.deadline.undo_unless_delivered(partial(
                self.storage.repairs.now_or_later, "releasing a code whose login did not answer",
                partial(self.storage.release_step, authenticator["_id"], step, attempt_id)))
            self.storage.start_new_epoch(state)
            events.dispatch_event(self.dispatch_outcome, events.OtpVerified,
                                  username=username, device_id=authenticator["_id"], source=source)
            return {"username": username, "device_id": authenticator["_id"]}
        return self._refuse(state, "invalid", now, source)

    def _refuse_if_locked_meanwhile(self, state, now, source):
        """A right code is accepted only if code login is still open now that it matched:
        in a burst, every guess reads the count before any is counted, and without this
        look the guesses beyond the lock would all be checked (one read, on success only)."""
        current = self.storage.lock_state(state.username)
        if current.failures > state.failures:
            refusal = self.lockout.refusal(current, now)
            if refusal is not None:
                self._emit_rejected(state.username, "locked", current.failures, source)
                raise refusal

    def _secret_of(self, authenticator):
        try:
            return self.box.decrypt(authenticator["secret"], authenticator["_id"])
        except ValueError:
            # A key was removed from OTP_ENCRYPTION_KEYS while secrets still use it: this
            # device cannot verify until it is re-activated. An operator must see this.
            log.error("cannot decrypt the OTP secret of device %s: its key is not configured",
                      authenticator["_id"])
            return _DECOY_SECRET

    def _refuse(self, state, reason, now, source):
        """Count the failure; the refusal, which says "locked" once it locks."""
        state = self.storage.count_failure(state, now)
        self._emit_rejected(state.username, reason, state.failures, source)
        policy = self.lockout
        if policy.starts_a_lock(state.failures):
            hard = policy.hard(state.failures)
            events.dispatch_event(self.dispatch, events.AccountLocked, username=state.username,
                                  consecutive_failures=state.failures, hard=hard,
                                  until=None if hard else policy.locked_until(state), source=source)
        raise policy.refusal(state, now) or InvalidCredentials(WRONG_CODE)

    def _emit_rejected(self, username, reason, failures, source):
        events.dispatch_event(self.dispatch_outcome, events.OtpRejected, username=username, reason=reason,
                              consecutive_failures=failures, source=source)

    # -- administration --------------------------------------------------------------

    @events.handles(events.LoginAbandoned, requeue_on_error=True)
    def on_login_abandoned(self, payload):
        """The gateway did not answer 200 for a login whose code may have been accepted:
        make the code usable again. The step is not in the event (the gateway may never
        have heard it), so the user's recent steps are looked up: a few `_id` reads."""
        try:
            event = events.parse_event(events.LoginAbandoned, payload)
        except events.ValidationError:
            log.error("dropping malformed LoginAbandoned event")
            return
        current = totp.time_step(utcnow())
        released = sum(self.storage.release_step(authenticator["_id"], step, event["attempt_id"])
                       for authenticator in self.storage.authenticators_of(event["username"])
                       for step in range(current - totp.RELEASE_LOOKBACK_STEPS, current + totp.WINDOW + 1))
        log.info("a login of %s was abandoned (%s): %s", event["username"], event["reason"],
                 "its code released" if released else "no code of it was accepted")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_devices(self, username):
        username = load_args(UsernameArgs, username=username)["username"]
        return DeviceView(many=True).dump(self.storage.authenticators_of(username, active_only=False))

    @events.handles(events.AccessConfirmed, requeue_on_error=True)
    def on_access_confirmed(self, payload):
        """A push login succeeded: any successful login resets the count of failed codes."""
        try:
            event = events.parse_event(events.AccessConfirmed, payload)
        except events.ValidationError:
            log.error("dropping malformed AccessConfirmed event")
            return
        if self.storage.start_new_epoch(self.storage.lock_state(event["username"])):
            log.info("failed codes of %s forgotten after a push login", event["username"])

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def account_state(self, username):
        """Whether a push login makes sense: the account has an active device. (A locked
        code login does not stop push: the phone proves possession.)"""
        username = load_args(UsernameArgs, username=username)["username"]
        return {"username": username, "code_login_locked": self.lockout.locked(
                    self.storage.lock_state(username), utcnow()),
                "active_devices": len(self.storage.authenticators_of(username))}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def find_device(self, device_id):
        """The device `device_id` (DeviceView), or None when none was ever activated."""
        device = self.storage.find_authenticator(load_args(DeviceIdArgs, device_id=device_id)["device_id"])
        return DeviceView().dump(device) if device else None

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def revoke_device(self, device_id, reason="admin", actor=None):
        args = load_args(DeviceIdArgs, device_id=device_id, reason=reason, actor=actor)
        device_id = args["device_id"]
        device = self.storage.revoke_authenticator(device_id, utcnow())
        if device is None:
            raise NotFound("No active device with this id")
        events.dispatch_event(self.dispatch, events.DeviceRevoked, device_id=device_id,
                              username=device["username"], reason=reason,
                              active_devices_left=len(self.storage.authenticators_of(device["username"])),
                              actor=args["actor"])
        return DeviceView().dump(self.storage.find_authenticator(device_id))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def unlock(self, username, actor=None):
        args = load_args(ActorArgs, username=username, actor=actor)
        username = args["username"]
        state = self.storage.lock_state(username)
        was_locked = self.lockout.locked(state, utcnow())
        if state.failures:
            self.storage.start_new_epoch(state, force=True)
        if was_locked:
            events.dispatch_event(self.dispatch, events.AccountUnlocked, username=username, by="admin",
                                  actor=args["actor"])
        return {"username": username, "was_locked": was_locked}

    @timer(interval=300)
    def purge_expired(self):
        self.storage.purge_expired(utcnow(), self.lockout.hard_failures)
