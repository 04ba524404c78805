"""The push service: devices that can confirm a login, and the login challenges they answer.

Fed by events: DeviceActivated / DeviceRevoked from otp keep the registry; LoginRequested
from the gateway becomes a challenge, notified to every active device of the user
(PushDispatched / PushFailed per device). A device's signed answer is accepted once
(AccessConfirmed / AccessDenied); nobody answering in time ends as LoginExpired.

Handlers are idempotent and requeue on error, so a redelivered or retried event is never
lost and never applied twice, and each step is written so that a delivery interrupted
half way (a killed process) is finished by the next one; a malformed event, or one the
database refuses as a document, is logged and dropped, since redelivering it cannot help
and would loop forever.
"""
import logging
from contextlib import contextmanager

from bson.errors import InvalidDocument
from nameko.timer import timer

from shared import events
from shared.clock import isoformat, utcnow
from shared.config import SettingsProvider
from shared.errors import (
    EXPECTED_ERRORS, Conflict, Expired, Forbidden, InvalidCredentials, NotFound, Unavailable,
)
from shared.messaging import EventDispatcher, consume_events, rpc
from shared.mongo import MongoStorage
from shared.validation import load_args
from services.push import challenges, notices
from services.push.challenges import signature_id
from services.push.config import PushSettings
from services.push.dependencies import PushProviders
from services.push.schemas import PollArgs, ResponseArgs, TokenArgs, UsernameArgs
from services.push.storage import ACTIVE, PENDING, PushStorage

log = logging.getLogger(__name__)


class PushService:
    name = "push"

    storage = MongoStorage(PushStorage)
    config = SettingsProvider(PushSettings)
    providers = PushProviders()
    dispatch = EventDispatcher()

    @rpc
    def ping(self):
        if not self.storage.ping():
            raise Unavailable("push database unreachable")
        return {"service": self.name}

    # -- the device registry ---------------------------------------------------------

    @events.handles(events.DeviceActivated, requeue_on_error=True)
    def on_device_activated(self, payload):
        event = _parse(events.DeviceActivated, payload)
        if event:
            with _dropping_unstorable(events.DeviceActivated):
                self.storage.register_device(event, utcnow())

    @events.handles(events.DeviceRevoked, requeue_on_error=True)
    def on_device_revoked(self, payload):
        event = _parse(events.DeviceRevoked, payload)
        if event:
            with _dropping_unstorable(events.DeviceRevoked):
                self.storage.revoke_device(event["device_id"], event["username"], utcnow())

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_push_token(self, device_id, push_token, timestamp, signature):
        args = load_args(TokenArgs, device_id=device_id, push_token=push_token, timestamp=timestamp,
                         signature=signature)
        device = self._signed_in_device(args["device_id"], args["timestamp"])
        self._use_signature(challenges.token_signature_valid(
            device["public_key"], device["_id"], args["timestamp"], args["push_token"], args["signature"]),
            device, args["signature"])
        self.storage.set_push_token(device["_id"], args["push_token"], utcnow())
        return {"device_id": device["_id"]}

    # -- login challenges ------------------------------------------------------------

    @events.handles(events.LoginRequested, requeue_on_error=True)
    def on_login_requested(self, payload):
        request = _parse(events.LoginRequested, payload)
        if not request:
            return
        now = utcnow()
        challenge = {
            "_id": challenges.challenge_id_for(request["request_id"]),
            "request_id": request["request_id"], "username": request["username"],
            "nonce": challenges.new_nonce(), "number": request["number"],
            "number_choices": (challenges.number_choices(request["number"])
                               if self.config["number_entry"] == "choose" else []),
            "context": request["context"], "expires_at": request["expires_at"],
            "status": PENDING, "created_at": now,
        }
        with _dropping_unstorable(events.LoginRequested):
            # A redelivered request finds the challenge it made and finishes what an
            # interrupted delivery left undone: the entries the device and the expiry
            # sweep read, and the notifications not yet sent.
            challenge = self.storage.add_challenge(challenge)
            for device in self.storage.active_devices(request["username"]):
                if challenge["status"] == PENDING and not self.storage.dispatched(challenge["_id"], device["_id"]):
                    self._notify(device, challenge)
                    self.storage.record_dispatch(challenge["_id"], device["_id"], now)

    def _notify(self, device, challenge):
        common = {"request_id": challenge["request_id"], "challenge_id": challenge["_id"],
                  "username": challenge["username"], "device_id": device["_id"]}
        if device["platform"] == "poll":
            # The app asks for its challenges itself; nothing to deliver.
            events.dispatch_event(self.dispatch, events.PushDispatched, provider="poll", **common)
            return
        provider_name = "apns" if device["platform"] == "ios" else "fcm"
        provider = self.providers.get(device["platform"])
        if provider is None:
            result_reason, permanent, ok, token_dead = "provider not configured", True, False, False
        elif not device.get("push_token") or device.get("push_token_dead"):
            result_reason, permanent, ok, token_dead = "no live push token", True, False, False
        else:
            ttl = max(1, int((challenge["expires_at"] - utcnow()).total_seconds()))
            result = provider.send(device["push_token"], self.providers.message(challenge, ttl))
            result_reason, permanent, ok, token_dead = result.reason, result.permanent, result.ok, result.token_dead
        if token_dead:
            self.storage.mark_push_token_dead(device["_id"], device["push_token"])
        if ok:
            events.dispatch_event(self.dispatch, events.PushDispatched, provider=provider_name, **common)
        else:
            events.dispatch_event(self.dispatch, events.PushFailed, provider=provider_name,
                                  reason=result_reason[:200], permanent=permanent, **common)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def pending_challenges(self, device_id, timestamp, signature):
        """The challenges a polling device may answer, after it proved it holds its key."""
        args = load_args(PollArgs, device_id=device_id, timestamp=timestamp, signature=signature)
        device = self._signed_in_device(args["device_id"], args["timestamp"])
        self._use_signature(challenges.poll_signature_valid(
            device["public_key"], device["_id"], args["timestamp"], args["signature"]), device, args["signature"])
        return {"challenges": [_as_device_sees_it(challenge)
                               for challenge in self.storage.pending_challenges_of(device["username"], utcnow())],
                "notices": [_notice_as_device_sees_it(notice)
                            for notice in self.storage.unseen_notices(device, notices.SHOWN)]}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def respond(self, challenge_id, device_id, decision, number, signature, fraud=False):
        """Accept a device's answer: a valid signature from an active device of that user,
        the matching number, before expiry, once."""
        args = load_args(ResponseArgs, challenge_id=challenge_id, device_id=device_id, decision=decision,
                         number=number, signature=signature, fraud=fraud)
        challenge = self.storage.find_challenge(args["challenge_id"])
        if challenge is None:
            raise NotFound("No such login request")
        device = self.storage.find_device(args["device_id"])
        if device is None or device["status"] != ACTIVE or device["username"] != challenge["username"]:
            raise Forbidden("This device cannot answer this login request")
        if not challenges.response_signature_valid(device["public_key"], challenge, args["decision"],
                                                   args["number"], args["signature"]):
            raise InvalidCredentials("The signature does not match this device")
        now = utcnow()
        outcome, reason = _outcome_of(args, challenge)
        fraud = args["fraud"] and outcome == "denied"
        answer = self.storage.find_answer(challenge["_id"])
        if challenge["status"] == PENDING and _same_answer(answer, outcome, device["_id"], fraud, reason):
            # This device's answer was recorded, but the delivery that recorded it did not
            # finish (a killed process, a lost reply): finish it now.
            self._announce(challenge, answer, now)
            return _answered(challenge, answer)
        if challenge["status"] == "expired" or challenge["expires_at"] <= now:
            raise Expired("This login request has expired")
        if challenge["status"] != PENDING or answer is not None:
            raise Conflict("This login request has already been answered")
        answer = self.storage.claim_answer(challenge["_id"], outcome, device["_id"], fraud, now, reason)
        if answer is None:
            raise Conflict("This login request has already been answered")
        self._announce(challenge, answer, now)
        return _answered(challenge, answer)

    def _announce(self, challenge, answer, now):
        """Emit the event of a challenge's one answer, then settle the challenge: in this
        order, so a challenge still pending with an answer is one whose event may not have
        gone out, and repeating this is what finishes it."""
        common = {"request_id": challenge["request_id"], "challenge_id": challenge["_id"],
                  "username": challenge["username"]}
        if answer["outcome"] == "approved":
            events.dispatch_event(self.dispatch, events.AccessConfirmed, device_id=answer["device_id"], **common)
        elif answer["outcome"] == "denied":
            if answer["fraud"]:
                self.storage.block_for_fraud(challenge["username"], challenge["_id"], answer["device_id"], now)
            events.dispatch_event(self.dispatch, events.AccessDenied, device_id=answer["device_id"],
                                  fraud=answer["fraud"], reason=answer.get("reason", "user"), **common)
        else:
            events.dispatch_event(self.dispatch, events.LoginExpired, **common)
        self.storage.settle_challenge(challenge, answer["outcome"], answer["device_id"], now)

    @timer(interval=1)
    def expire_overdue(self):
        """Nobody answered in time: LoginExpired. A challenge past its expiry that has an
        answer whose delivery did not finish gets that answer announced instead."""
        now = utcnow()
        for challenge in self.storage.overdue_challenges(now):
            answer = (self.storage.claim_answer(challenge["_id"], "expired", None, False, now)
                      or self.storage.find_answer(challenge["_id"]))
            if answer is not None:
                self._announce(challenge, answer, now)

    # -- security notices (services/push/notices.py) ------------------------------------

    @consume_events(notices.SOURCES)
    def keep_notice(self, event_type, payload):
        """A notice of what happened to the user's account, for each of their devices."""
        event_cls = notices.SOURCES_BY_NAME[event_type]
        event = _parse(event_cls, payload)
        notice = notices.notice_of(event_cls, event) if event else None
        if notice is None:
            return
        with _dropping_unstorable(event_cls):
            self.storage.add_notice(notice)
            self._alert(notice)

    def _alert(self, notice):
        """A plain alert through APNs / FCM to each active push device of the user, once
        (a redelivered event finds its alerts claimed); a device activated after the
        notice's event is not told of it."""
        title, body = notices.alert_of(notice)
        message = self.providers.notice_message(notice, title, body)
        for device in self.storage.active_devices(notice["username"]):
            provider = self.providers.get(device["platform"])
            if (provider is None or not device.get("push_token") or device.get("push_token_dead")
                    or device["created_at"] > notice["occurred_at"]
                    or not self.storage.claim_alert(device["_id"], notice["_id"], utcnow())):
                continue
            result = provider.send(device["push_token"], message)
            if result.token_dead:
                self.storage.mark_push_token_dead(device["_id"], device["push_token"])

    # -- fraud blocks ----------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def push_block(self, username):
        username = load_args(UsernameArgs, username=username)["username"]
        block = self.storage.fraud_block(username)
        return {"username": username, "blocked": block is not None,
                "since": isoformat(block["since"]) if block else None}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def clear_push_block(self, username):
        username = load_args(UsernameArgs, username=username)["username"]
        return {"username": username, "was_blocked": self.storage.clear_fraud_block(username) is not None}

    @timer(interval=300)
    def purge_expired(self):
        now = utcnow()
        self.storage.purge_expired(now, self.config["poll_clock_skew_seconds"])
        # A backstop for a challenge whose expiry entry was never written (its request
        # not redelivered): the next sweep expires it.
        self.storage.requeue_unswept(now)

    def _signed_in_device(self, device_id, timestamp):
        device = self.storage.find_device(device_id)
        if device is None or device["status"] != ACTIVE:
            raise Forbidden("Unknown or revoked device")
        skew = self.config["poll_clock_skew_seconds"]
        if abs(utcnow().timestamp() - timestamp) > skew:
            raise InvalidCredentials(f"The timestamp must be within {skew} seconds of the server's clock")
        return device

    def _use_signature(self, valid, device, signature):
        """A device's signed request is accepted once: a replayed signature (inside the
        clock window it could still pass) is refused like a wrong one."""
        if not valid:
            raise InvalidCredentials("The signature does not match this device")
        if not self.storage.claim_signature(device["_id"], signature_id(signature), utcnow()):
            raise InvalidCredentials("This signature was used already; sign a fresh request")


def _outcome_of(args, challenge):
    """(outcome, reason) of an answer. A wrong number denies (architecture.md §5): a user who
    guesses among the choices, or taps through a push they did not ask for, cannot try
    again on the same request."""
    if args["decision"] == "deny":
        return "denied", "user"
    if args["number"] != challenge["number"]:
        return "denied", "wrong_number"
    return "approved", None


def _answered(challenge, answer):
    reply = {"challenge_id": challenge["_id"], "status": answer["outcome"]}
    if answer.get("reason") == "wrong_number":
        reply["reason"] = "wrong_number"
    return reply

def _same_answer(answer, outcome, device_id, fraud, reason):
    return (answer is not None and answer["outcome"] == outcome and answer["device_id"] == device_id
            and answer["fraud"] == fraud and answer.get("reason") == reason)


def _as_device_sees_it(challenge):
    context = challenge["context"]
    return {"challenge_id": challenge["_id"], "nonce": challenge["nonce"], "username": challenge["username"],
            "expires_at": isoformat(challenge["expires_at"]),
            "context": {"ip": context["ip"], "user_agent": context["user_agent"],
                        "requested_at": isoformat(context["requested_at"])},
            "number_choices": challenge["number_choices"]}


def _notice_as_device_sees_it(notice):
    return {"notice_id": notice["_id"], "kind": notice["kind"], "occurred_at": isoformat(notice["occurred_at"]),
            "context": {key: isoformat(value) if hasattr(value, "isoformat") else value
                        for key, value in notice["context"].items()}}


@contextmanager
def _dropping_unstorable(event_cls):
    """Drop an event the database can never store; let everything else requeue."""
    try:
        yield
    except (InvalidDocument, UnicodeEncodeError) as error:
        log.error("dropping %s event the database cannot store: %s", event_cls.name, type(error).__name__)


def _parse(event_cls, payload):
    try:
        return events.parse_event(event_cls, payload)
    except events.ValidationError as error:
        log.error("dropping malformed %s event: %s", event_cls.name, sorted(error.messages))
        return None
