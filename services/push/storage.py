"""The push service's own database: devices, push login requests, answers, fraud blocks.

Laid out for the MongoDB-wire server we test with (shared/mongo.py): every hot read is
by `_id`, and whatever must happen once is a unique insert.
- `devices` {_id: device_id}: push registration and public key; `status` is authoritative.
- `users` {_id: username, device_ids}: a user's devices, found by `_id`.
- `requests` {_id: "username#n"}: the user's n-th push login request, from "Stuur PUSH"
  on: its number, choices, nonce, browser context and expiry. Numbered by tickets, so
  the per-user push limit is exact and slides (the n-th is admitted when the
  (n - limit)-th is older than the window); its request and challenge ids carry n.
- `request_heads` {_id: username, last, at}: where a user's numbering is (a hint: a
  number taken past it only makes the next insert collide and move on).
- `answers` {_id: challenge_id, request}: the one answer (approve, deny or expiry) a
  request gets; `request` is that request's `_id`, so the backstop finds it by `_id`.
  There is no status field to keep in step: a request's outcome is its answer, or its
  expiry (services/push/challenges.py `outcome_of`, the one place that decides).
- `announcements` {_id: challenge_id}: the answer's event went out (a ticket: an insert
  costs the database a third of an update to the answer).
- `fraud_blocks` {_id: username}: push is refused until an admin clears it.
- `notices` {_id: event_id, username, kind, occurred_at, context}, `notice_boxes`
  {_id: username, notices: [{id, at}]}, `notices_seen` {_id: "device#notice"}: security
  notices, each handed to each device once (services/push/notices.py).
- `used_signatures` {_id: "device#signature id"}: a device's signed poll or token update
  is accepted once (services/push/challenges.py `signature_id`).
"""
import math
from datetime import timedelta

from shared.mongo import ASCENDING, IndexModel, Storage

ACTIVE, REVOKED = "active", "revoked"


class PushStorage(Storage):
    database_name = "push"
    # Only the background sweep and purge query these.
    indexes = {
        "requests": [IndexModel([("expires_at", ASCENDING)])],
        "request_heads": [IndexModel([("at", ASCENDING)])],
        "answers": [IndexModel([("at", ASCENDING)])],
        "announcements": [IndexModel([("at", ASCENDING)])],
        "used_signatures": [IndexModel([("at", ASCENDING)])],
        "notices": [IndexModel([("occurred_at", ASCENDING)])],
        "notices_seen": [IndexModel([("at", ASCENDING)])],
    }

    # -- devices ---------------------------------------------------------------------

    def register_device(self, device, now):
        """Store an activated device once; a redelivered or late event changes nothing.

        `$setOnInsert` only: if DeviceRevoked overtook DeviceActivated, the revoked
        record stays revoked.
        """
        self.db.devices.update_one(
            {"_id": device["device_id"]},
            {"$setOnInsert": {
                "username": device["username"], "platform": device["platform"],
                "push_token": device["push_token"], "public_key": device["public_key"],
                "device_name": device["device_name"], "status": ACTIVE, "push_token_dead": False,
                "created_at": now, "revoked_at": None,
            }},
            upsert=True,
        )
        self.add_to_set("users", device["username"], "device_ids", device["device_id"])

    def revoke_device(self, device_id, username, now):
        self.db.devices.update_one(
            {"_id": device_id},
            {"$set": {"status": REVOKED, "revoked_at": now},
             "$setOnInsert": {"username": username, "created_at": now}},
            upsert=True,
        )

    def find_device(self, device_id):
        return self.db.devices.find_one({"_id": device_id})

    def active_devices(self, username):
        user = self.db.users.find_one({"_id": username})
        devices = (self.find_device(device_id) for device_id in (user or {}).get("device_ids", []))
        return [device for device in devices if device and device["status"] == ACTIVE]

    def set_push_token(self, device_id, push_token, now):
        self.db.devices.update_one({"_id": device_id}, {"$set": {
            "push_token": push_token, "push_token_dead": False, "push_token_updated_at": now}})

    def mark_push_token_dead(self, device_id, push_token):
        # Only if the token is still the one that failed: a fresh token stays usable.
        device = self.find_device(device_id)
        if device and device.get("push_token") == push_token:
            self.db.devices.update_one({"_id": device_id}, {"$set": {"push_token_dead": True}})

    # -- push login requests ------------------------------------------------------

    def add_request(self, username, now, limit, window_seconds, request_of):
        """(0, the stored request) when a push request of `username` is within `limit`
        in any window of `window_seconds`, else (the seconds until one is, None).
        `request_of(n)` makes the n-th request. A refused request takes no number, so a
        flood costs the flooder reads, not writes."""
        head = self.db.request_heads.find_one({"_id": username})
        number = (head["last"] if head else 0) + 1
        while True:
            oldest = (self.db.requests.find_one({"_id": f"{username}#{number - limit}"}, projection={"at": 1})
                      if number > limit else None)
            if oldest is not None and (now - oldest["at"]).total_seconds() < window_seconds:
                return max(1, math.ceil(window_seconds - (now - oldest["at"]).total_seconds())), None
            request = {"_id": f"{username}#{number}", **request_of(number), "username": username, "at": now}
            if self.claim("requests", request["_id"], **{k: v for k, v in request.items() if k != "_id"}):
                break
            number += 1   # the head lagged: another request took this number
        self.db.request_heads.update_one({"_id": username}, {"$max": {"last": number}, "$set": {"at": now}},
                                         upsert=True)
        return 0, request

    def find_request(self, username, number):
        return self.db.requests.find_one({"_id": f"{username}#{number}"})

    def live_requests_of(self, username, now, limit, made_here=lambda key: None):
        """The user's requests not yet expired, newest first (at most `limit` can be: the
        push limit's window is longer than a request's life); `made_here(_id)` is a
        request at hand (services/push/expiry.py), which is not read again."""
        head = self.db.request_heads.find_one({"_id": username})
        found = []
        for number in range(head["last"] if head else 0, 0, -1):
            request = made_here(f"{username}#{number}") or self.find_request(username, number)
            if request is None or request["expires_at"] <= now or len(found) == limit:
                break
            found.append(request)
        return found

    def find_answer(self, challenge_id):
        return self.db.answers.find_one({"_id": challenge_id})

    def claim_answer(self, request, outcome, device_id, fraud, now, reason=None):
        """The one answer (approve, deny or expiry) of `request` (its stored document), for
        exactly one of any racing answers: the answer stored, or None when another came first."""
        answer = {"request": request["_id"], "outcome": outcome, "device_id": device_id, "fraud": fraud,
                  "reason": reason, "at": now}
        challenge_id = request["challenge_id"]
        return {"_id": challenge_id, **answer} if self.claim("answers", challenge_id, **answer) else None

    def mark_announced(self, challenge_id, now):
        """The answer's event went out (an answer not marked is announced again)."""
        self.claim("announcements", challenge_id, at=now)

    def was_announced(self, answer):
        # `announced` in the answer itself: how answers were marked before announcements.
        return answer.get("announced") or self.db.announcements.find_one({"_id": answer["_id"]}) is not None

    def unannounced_answers(self, now, grace_seconds):
        """(answer, its request) of answers older than `grace_seconds` whose event may not
        have gone out: their process stopped between the answer and its announcement."""
        until = now - timedelta(seconds=grace_seconds)
        # Every announcement there is (an hour's, purged with the answers), not only those
        # before `until`: a late one finished by the device's retry counts too.
        announced = {ticket["_id"] for ticket in self.db.announcements.find({}, projection={"_id": 1})}
        found = []
        for answer in list(self.db.answers.find({"announced": {"$ne": True}, "at": {"$lt": until}})):
            if answer["_id"] in announced:
                continue
            # By `_id` (a query on challenge_id would scan the collection). An answer stored
            # before answers named their request has no `request` and is skipped: at most
            # an hour's unannounced leftovers of a process that died, purged after that.
            request = self.db.requests.find_one({"_id": answer["request"]}) if "request" in answer else None
            if request is not None:
                found.append((answer, request))
        return found

    def unanswered_overdue(self, now, grace_seconds):
        """Requests past their expiry by `grace_seconds`, within the last hour, that no
        answer settled (their process stopped before its expiry clock ran)."""
        overdue = list(self.db.requests.find(
            {"expires_at": {"$lt": now - timedelta(seconds=grace_seconds), "$gte": now - timedelta(hours=1)}},
            projection={"challenge_id": 1, "request_id": 1, "username": 1, "expires_at": 1}))
        answered = {answer["_id"] for answer in self.db.answers.find(
            {"_id": {"$in": [request["challenge_id"] for request in overdue]}}, projection={"_id": 1})}
        return [request for request in overdue if request["challenge_id"] not in answered]

    def claim_signature(self, device_id, signature_id, now):
        """A device's signed request, once: False when this signature was seen before."""
        return self.claim("used_signatures", f"{device_id}#{signature_id}", at=now)

    # -- security notices ----------------------------------------------------------

    def add_notice(self, notice):
        """Keep a notice once (its id is its event's) in the user's notice box, with its
        time, so a poll passes over what happened before its device without reading it."""
        self.claim("notices", notice["_id"], **{k: v for k, v in notice.items() if k != "_id"})
        self.add_to_set("notice_boxes", notice["username"], "notices", _box_entry(notice))

    def claim_alert(self, device_id, notice_id, now):
        """True once per device and notice: the alert that is sent."""
        return self.claim("notices_seen", f"alert#{device_id}#{notice_id}", at=now)

    def unseen_notices(self, device, limit):
        """The user's notices this device has not been shown, newest first, each marked
        shown to it as it is handed out (a unique insert: once per device, however many
        polls race). Only what happened since the device was activated."""
        box = self.db.notice_boxes.find_one({"_id": device["username"]}) or {}
        # Boxes kept before notices had their time in the box hold bare ids, all older.
        entries = [{"id": notice_id, "at": None} for notice_id in box.get("notice_ids", [])] + box.get("notices", [])
        found = []
        for entry in reversed(entries[-limit:]):
            notice = None
            if entry["at"] is None:
                notice = self.db.notices.find_one({"_id": entry["id"]})
                if notice is None:
                    continue
                entry = _box_entry(notice)
            if entry["at"] < device["created_at"] or not self.claim(
                    "notices_seen", f"{device['_id']}#{entry['id']}", at=entry["at"]):
                continue
            notice = notice or self.db.notices.find_one({"_id": entry["id"]})
            if notice is not None:
                found.append(notice)
        return found

    # -- fraud blocks ----------------------------------------------------------------

    def block_for_fraud(self, username, challenge_id, device_id, now):
        self.claim("fraud_blocks", username, challenge_id=challenge_id, device_id=device_id, since=now)

    def fraud_block(self, username):
        return self.db.fraud_blocks.find_one({"_id": username})

    def clear_fraud_block(self, username):
        return self.db.fraud_blocks.find_one_and_delete({"_id": username})

    # -- housekeeping ----------------------------------------------------------------

    def purge_expired(self, now, signature_window_seconds):
        """Delete what no rule needs any more; the number of documents deleted.

        Requests and their answers are kept an hour past their expiry (the push limit's
        window is shorter), the audit trail keeps the rest; a used signature as long as its
        timestamp could still pass the clock check.
        """
        cutoff = now - timedelta(hours=1)
        deleted = self.db.requests.delete_many({"expires_at": {"$lt": cutoff}}).deleted_count
        deleted += self.db.answers.delete_many({"at": {"$lt": cutoff}}).deleted_count
        deleted += self.db.announcements.delete_many({"at": {"$lt": cutoff}}).deleted_count
        deleted += self.db.request_heads.delete_many({"at": {"$lt": cutoff}}).deleted_count
        # Notices a month: a device that has not polled in a month learns from the audit.
        month_ago = now - timedelta(days=30)
        for notice in list(self.db.notices.find({"occurred_at": {"$lt": month_ago}},
                                                projection={"username": 1, "occurred_at": 1})):
            # By the exact entry: FerretDB ignores a $pull by a condition on its fields.
            self.db.notice_boxes.update_one({"_id": notice["username"]}, {"$pull": {
                "notices": _box_entry(notice), "notice_ids": notice["_id"]}})
            deleted += self.db.notices.delete_one({"_id": notice["_id"]}).deleted_count
        deleted += self.db.notices_seen.delete_many({"at": {"$lt": month_ago}}).deleted_count
        deleted += self.db.used_signatures.delete_many(
            {"at": {"$lt": now - timedelta(seconds=2 * signature_window_seconds + 60)}}).deleted_count
        return deleted


def _box_entry(notice):
    return {"id": notice["_id"], "at": notice["occurred_at"]}
