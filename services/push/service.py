"""The push service: devices that can confirm a login, and the push logins they answer.

It owns a push login from "Stuur PUSH" to its outcome (docs/architecture.md §2): the
gateway asks `request_login` (device, fraud block and push limit checked here), push
announces LoginRequested and notifies every active device of the user (PushDispatched /
PushFailed per device); a device's signed answer is accepted once (AccessConfirmed /
AccessDenied); nobody answering in time ends as LoginExpired. The gateway keeps only the
browser's binding, asks `login_status` and is woken by those events.
DeviceActivated / DeviceRevoked from otp keep the device registry (a device activated a
moment ago that it has not heard of yet is told to wait, `_activated_but_not_heard_of`).

Handlers are idempotent and requeue on error, so a redelivered or retried event is never
lost and never applied twice, and each step is written so that a delivery interrupted
half way (a killed process) is finished by the next one; a malformed event, or one the
database refuses as a document, is logged and dropped, since redelivering it cannot help
and would loop forever.
"""
import hmac
import logging
import secrets
from contextlib import contextmanager
from datetime import timedelta

from bson.errors import InvalidDocument
from nameko.timer import timer

from shared import events
from shared.clock import isoformat, utcnow
from shared.config import SettingsProvider
from shared.errors import (
    EXPECTED_ERRORS, Conflict, Expired, Forbidden, InvalidCredentials, NotFound, TooManyRequests, Unavailable,
)
from shared.messaging import EventDispatcher, ServiceRpc, consume_events, rpc
from shared.mongo import MongoStorage
from shared.validation import UsernameArgs, load_args
from services.push import challenges, notices
from services.push.challenges import signature_id
from services.push.config import PushSettings
from services.push.dependencies import PushProviders, RegistryCatchUp
from services.push.expiry import ExpiryClock
from services.push.schemas import LoginRequestArgs, PollArgs, ResponseArgs, RevokeArgs, StatusArgs, TokenArgs
from services.push.storage import ACTIVE, REVOKED, PushStorage

log = logging.getLogger(__name__)


class PushService:
    name = "push"

    storage = MongoStorage(PushStorage)
    config = SettingsProvider(PushSettings)
    providers = PushProviders()
    dispatch = EventDispatcher()
    expiry = ExpiryClock()
    registry = RegistryCatchUp()
    otp = ServiceRpc("otp")

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
    def revoke_device(self, device_id, username):
        """An administrator's revocation, applied before their answer: its DeviceRevoked
        can wait behind a busy push (every worker sending to a slow APNs), and a stolen
        phone must not confirm a login meanwhile. The event, when it comes, finds it revoked."""
        args = load_args(RevokeArgs, device_id=device_id, username=username)
        self.storage.revoke_device(args["device_id"], args["username"], utcnow())
        return {"device_id": args["device_id"]}

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

    # -- push login requests ----------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def push_state(self, username):
        """Whether a push login can start for `username`: its active devices, its fraud block."""
        username = load_args(UsernameArgs, username=username)["username"]
        return {"username": username, "active_devices": len(self.storage.active_devices(username)),
                "blocked": self.storage.fraud_block(username) is not None}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def request_login(self, username, context):
        """"Stuur PUSH": a new push login request of `username`, asked of each of their
        devices (LoginRequested, then `notify_devices`): `{request_id, number, expires_at}`.
        Refused when the user has no active device (404), push is blocked after a reported
        fraud (403) or the user asked too often (429, sliding window)."""
        args = load_args(LoginRequestArgs, username=username, context=context)
        username = args["username"]
        devices = self.storage.active_devices(username)
        if not devices:
            raise NotFound("This user has no active device")
        if self.storage.fraud_block(username) is not None:
            raise Forbidden("Push login is blocked for this account after a reported fraud attempt; "
                            "log in with a code or ask an administrator")
        now = utcnow()
        number = f"{10 + secrets.randbelow(90)}"
        expires_at = now + timedelta(seconds=self.config["request_ttl_seconds"])
        context = {**args["context"], "requested_at": now}

        def request_of(sequence_number):
            request_id, challenge_id = challenges.ids_for(sequence_number)
            return {"request_id": request_id, "challenge_id": challenge_id, "number": number,
                    "number_choices": (challenges.number_choices(number)
                                       if self.config["number_entry"] == "choose" else []),
                    "nonce": challenges.new_nonce(), "context": context, "expires_at": expires_at}

        retry_after, request = self.storage.add_request(username, now, self.config["rate_limit"],
                                                        self.config["rate_window_seconds"], request_of)
        if retry_after:
            raise TooManyRequests(f"Too many push requests; try again in {retry_after} seconds",
                                  retry_after=retry_after)
        self.expiry.add(request, devices)
        events.dispatch_event(self.dispatch, events.LoginRequested, request_id=request["request_id"],
                              username=username, number=number, context=context, expires_at=expires_at)
        return {"request_id": request["request_id"], "number": number, "expires_at": isoformat(expires_at)}

    @events.handles(events.LoginRequested, requeue_on_error=True)
    def notify_devices(self, payload):
        """Each active device of the user is notified of a new request (PushDispatched /
        PushFailed). Outside the request's RPC, so "Stuur PUSH" answers without waiting
        for APNs / FCM and a process killed half way is finished by the redelivery (a
        device may then be notified twice: the alert collapses on the challenge id)."""
        event = _parse(events.LoginRequested, payload)
        if event is None:
            return
        # Made here: the request and its devices are known already (expiry.py).
        request, devices = self.expiry.to_notify(event["request_id"]) or (
            self._request(event["username"], event["request_id"], "lr", "request_id"), None)
        if request is None or request["expires_at"] <= utcnow():
            return
        with _dropping_unstorable(events.LoginRequested):
            for device in devices if devices is not None else self.storage.active_devices(request["username"]):
                self._notify(device, request)

    def _notify(self, device, request):
        common = {"request_id": request["request_id"], "challenge_id": request["challenge_id"],
                  "username": request["username"], "device_id": device["_id"]}
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
            ttl = max(1, int((request["expires_at"] - utcnow()).total_seconds()))
            result = provider.send(device["push_token"], self.providers.message(_as_challenge(request), ttl))
            result_reason, permanent, ok, token_dead = result.reason, result.permanent, result.ok, result.token_dead
        if token_dead:
            self.storage.mark_push_token_dead(device["_id"], device["push_token"])
        if ok:
            events.dispatch_event(self.dispatch, events.PushDispatched, provider=provider_name, **common)
        else:
            events.dispatch_event(self.dispatch, events.PushFailed, provider=provider_name,
                                  reason=result_reason[:200], permanent=permanent, **common)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def login_status(self, username, request_id):
        """The state of `username`'s request `request_id` (the gateway proves both: the
        browser's binding): `{status, device_id}`."""
        args = load_args(StatusArgs, username=username, request_id=request_id)
        request = self._request(args["username"], args["request_id"], "lr", "request_id")
        if request is None:
            raise NotFound("No such login request")
        answer = self.storage.find_answer(request["challenge_id"]) or self._expire_if_due(request)
        return {"status": challenges.outcome_of(request, answer, utcnow()),
                "device_id": answer["device_id"] if answer else None}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def pending_challenges(self, device_id, timestamp, signature):
        """The challenges a polling device may answer, after it proved it holds its key."""
        args = load_args(PollArgs, device_id=device_id, timestamp=timestamp, signature=signature)
        device = self._signed_in_device(args["device_id"], args["timestamp"])
        self._use_signature(challenges.poll_signature_valid(
            device["public_key"], device["_id"], args["timestamp"], args["signature"]), device, args["signature"])
        now = utcnow()
        live = self.storage.live_requests_of(device["username"], now, self.config["rate_limit"],
                                             made_here=self.expiry.made_here)
        return {"challenges": [_as_device_sees_it(request) for request in live
                               if not self.expiry.answered_here(request["challenge_id"])
                               and self.storage.find_answer(request["challenge_id"]) is None],
                "notices": [_notice_as_device_sees_it(notice)
                            for notice in self.storage.unseen_notices(device, notices.SHOWN)]}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def respond(self, challenge_id, device_id, decision, number, signature, fraud=False):
        """Accept a device's answer: a valid signature from an active device of that user,
        the matching number, before expiry, once."""
        args = load_args(ResponseArgs, challenge_id=challenge_id, device_id=device_id, decision=decision,
                         number=number, signature=signature, fraud=fraud)
        if challenges.number_in(args["challenge_id"], "ch") is None:
            raise NotFound("No such login request")
        device = self._device(args["device_id"])
        request = (self._challenge_of(device["username"], args["challenge_id"])
                   if device is not None and device["status"] == ACTIVE else None)
        if request is None:
            # A device sees only its own user's requests: another's is forbidden to it,
            # whether or not it exists.
            raise Forbidden("This device cannot answer this login request")
        if not challenges.response_signature_valid(device["public_key"], request["challenge_id"], request["nonce"],
                                                   args["decision"], args["number"], args["signature"]):
            raise InvalidCredentials("The signature does not match this device")
        now = utcnow()
        outcome, reason = _outcome_of(args, request)
        fraud = args["fraud"] and outcome == challenges.DENIED
        answer = (self.storage.claim_answer(request, outcome, device["_id"], fraud, now, reason)
                  if request["expires_at"] > now else None)
        if answer is None:
            answer = self.storage.find_answer(request["challenge_id"]) or self._expire_if_due(request)
            if _same_answer(answer, outcome, device["_id"], fraud, reason) and not self.storage.was_announced(answer):
                # This device's answer was recorded, but the delivery that recorded it did
                # not finish (a killed process, a lost reply): finish it now.
                self._announce(request, answer)
                return _answered(request, answer)
            if answer["outcome"] == challenges.EXPIRED:
                raise Expired("This login request has expired")
            raise Conflict("This login request has already been answered")
        self.expiry.answered(request["challenge_id"])
        self._announce(request, answer)
        return _answered(request, answer)

    def _challenge_of(self, username, challenge_id):
        """The request of `username` with this challenge id, or None: made here and not
        yet answered here, it is at hand (expiry.py); else read."""
        made_here = self.expiry.unanswered(challenge_id)
        if made_here is not None and made_here["username"] == username:
            return made_here
        return self._request(username, challenge_id, "ch", "challenge_id")

    def _request(self, username, an_id, prefix, field):
        """The request of `username` that `an_id` (a request or challenge id) names, or None."""
        number = challenges.number_in(an_id, prefix)
        request = self.storage.find_request(username, number) if number is not None else None
        return request if request is not None and hmac.compare_digest(request[field], an_id) else None

    def _announce(self, request, answer):
        """Emit the event of a request's one answer, then mark it announced: an answer not
        marked is one whose event may not have gone out, and repeating this finishes it."""
        common = {"request_id": request["request_id"], "challenge_id": request["challenge_id"],
                  "username": request["username"]}
        if answer["outcome"] == challenges.APPROVED:
            events.dispatch_event(self.dispatch, events.AccessConfirmed, device_id=answer["device_id"], **common)
        elif answer["outcome"] == challenges.DENIED:
            if answer["fraud"]:
                self.storage.block_for_fraud(request["username"], request["challenge_id"], answer["device_id"],
                                             answer["at"])
            events.dispatch_event(self.dispatch, events.AccessDenied, device_id=answer["device_id"],
                                  fraud=answer["fraud"], reason=answer.get("reason") or "user", **common)
        else:
            events.dispatch_event(self.dispatch, events.LoginExpired, **common)
        self.storage.mark_announced(answer["_id"], utcnow())

    def _expire_if_due(self, request):
        """The expiry answer of a request whose time is up and that nobody answered (its
        LoginExpired sent once, by whoever claims it first), else None."""
        now = utcnow()
        if challenges.outcome_of(request, None, now) != challenges.EXPIRED:
            return None
        answer = self.storage.claim_answer(request, challenges.EXPIRED, None, False, now)
        if answer is None:
            return self.storage.find_answer(request["challenge_id"])
        self._announce(request, answer)
        return answer

    @timer(interval=1)
    def expire_overdue(self):
        """Nobody answered in time: LoginExpired, once per request, for the requests this
        process made (services/push/expiry.py); the purge finds those of a stopped one."""
        for request in self.expiry.due(utcnow()):
            self._expire_if_due(request)

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
        # Backstops for what a stopped process left undone: requests its expiry clock did
        # not reach, answers it did not announce.
        for request in self.storage.unanswered_overdue(now, grace_seconds=60):
            self._expire_if_due(request)
        for answer, request in self.storage.unannounced_answers(now, grace_seconds=60):
            self._announce(request, answer)
        self.storage.purge_expired(now, self.config["poll_clock_skew_seconds"])

    def _device(self, device_id):
        """The registry's device `device_id`, or None. While the registry may be behind
        otp (RegistryCatchUp: a start with revocations still queued), an active one is
        confirmed with otp first, and a revocation not heard of yet is applied."""
        device = self.storage.find_device(device_id)
        if device is not None and device["status"] == ACTIVE and self.registry.behind:
            known = self.otp.find_device(device_id)
            if known is None or known["status"] != ACTIVE:
                self.storage.revoke_device(device_id, device["username"], utcnow())
                return {**device, "status": REVOKED}
        return device

    def _signed_in_device(self, device_id, timestamp):
        device = self._device(device_id)
        if device is None and self._activated_but_not_heard_of(device_id):
            raise Unavailable("This device was activated a moment ago and is still being set up; try again",
                              retry_after=1)
        if device is None or device["status"] != ACTIVE:
            raise Forbidden("Unknown or revoked device")
        skew = self.config["poll_clock_skew_seconds"]
        if abs(utcnow().timestamp() - timestamp) > skew:
            raise InvalidCredentials(f"The timestamp must be within {skew} seconds of the server's clock")
        return device

    def _activated_but_not_heard_of(self, device_id):
        """Whether otp activated `device_id` and its DeviceActivated has not reached the
        registry yet. The app polls the moment its activation is answered, and under load
        the event can come later: that is a wait (503, Retry-After), never the 403 that
        tells the app it was revoked and should stop. Asked only of ids not in the registry."""
        device = self.otp.find_device(device_id)
        return device is not None and device["status"] == ACTIVE

    def _use_signature(self, valid, device, signature):
        """A device's signed request is accepted once: a replayed signature (inside the
        clock window it could still pass) is refused like a wrong one."""
        if not valid:
            raise InvalidCredentials("The signature does not match this device")
        if not self.storage.claim_signature(device["_id"], signature_id(signature), utcnow()):
            raise InvalidCredentials("This signature was used already; sign a fresh request")


def _outcome_of(args, request):
    """(outcome, reason) of an answer. A wrong number denies (architecture.md §5): a user who
    guesses among the choices, or taps through a push they did not ask for, cannot try
    again on the same request."""
    if args["decision"] == "deny":
        return challenges.DENIED, "user"
    if args["number"] != request["number"]:
        return challenges.DENIED, "wrong_number"
    return challenges.APPROVED, None


def _answered(request, answer):
    reply = {"challenge_id": request["challenge_id"], "status": answer["outcome"]}
    if answer.get("reason") == "wrong_number":
        reply["reason"] = "wrong_number"
    return reply

def _same_answer(answer, outcome, device_id, fraud, reason):
    return (answer is not None and answer["outcome"] == outcome and answer["device_id"] == device_id
            and answer["fraud"] == fraud and answer.get("reason") == reason)


def _as_device_sees_it(request):
    context = request["context"]
    return {"challenge_id": request["challenge_id"], "nonce": request["nonce"], "username": request["username"],
            "expires_at": isoformat(request["expires_at"]),
            "context": {"ip": context["ip"], "user_agent": context["user_agent"],
                        "requested_at": isoformat(context["requested_at"])},
            "number_choices": request["number_choices"]}


def _as_challenge(request):
    """What the push message names: the challenge (never its nonce), whose it is, until when."""
    return {"_id": request["challenge_id"], "username": request["username"], "expires_at": request["expires_at"]}


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
