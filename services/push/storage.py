"""The push service's own database: devices, login challenges, answers, fraud blocks.

Laid out for the MongoDB-wire server we test with (shared/mongo.py): every hot read is
by `_id`, and whatever must happen once is a unique insert.
- `devices` {_id: device_id}: push registration and public key; `status` is authoritative.
- `users` {_id: username, device_ids}: a user's devices, found by `_id`.
- `challenges` {_id: challenge_id}: one per login request (the id derives from the
  request id, so a redelivered LoginRequested finds the challenge it already made).
- `inboxes` {_id: username, challenge_ids}: what a polling device of the user may see.
- `dispatches` {_id: "challenge#device"}: a device was notified for this challenge
  (written after the notification, so a delivery killed before it notifies again).
- `answers` {_id: challenge_id}: the one answer (approve, deny or expiry) a challenge gets;
  its event goes out before the challenge's status changes, so a pending challenge with
  an answer is one whose announcement must be finished (by the device's retry, or by the
  expiry sweep).
- `pending` {_id: challenge_id, expires_at}: the unanswered ones, so the once-a-second
  expiry sweep scans a handful of documents, not every challenge of the last hour.
- `fraud_blocks` {_id: username}: push is refused until an admin clears it.
- `notices` {_id: event_id, username, kind, occurred_at, context}, `notice_boxes`
  {_id: username, notice_ids}, `notices_seen` {_id: "device#notice"}: security notices,
  each handed to each device once (services/push/notices.py).
- `used_signatures` {_id: "device#signature id"}: a device's signed poll or token update
  is accepted once (services/push/challenges.py `signature_id`).
"""
from datetime import timedelta

from shared.mongo import ASCENDING, IndexModel, Storage

ACTIVE, REVOKED = "active", "revoked"
PENDING = "pending"


class PushStorage(Storage):
    database_name = "push"
    # Only the background sweep and purge query these.
    indexes = {
        "pending": [IndexModel([("expires_at", ASCENDING)])],
        "challenges": [IndexModel([("expires_at", ASCENDING)])],
        "answers": [IndexModel([("at", ASCENDING)])],
        "dispatches": [IndexModel([("at", ASCENDING)])],
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

    # -- challenges ------------------------------------------------------------------

    def add_challenge(self, challenge):
        """Store a challenge once and the entries that make it visible and expirable; the
        stored challenge. A redelivered request gets the one it made, with whatever an
        interrupted delivery did not write written now (each step is idempotent)."""
        if not self.claim("challenges", challenge["_id"], **{k: v for k, v in challenge.items() if k != "_id"}):
            challenge = self.find_challenge(challenge["_id"])
        if challenge["status"] == PENDING:
            self.claim("pending", challenge["_id"], expires_at=challenge["expires_at"])
            self.add_to_set("inboxes", challenge["username"], "challenge_ids", challenge["_id"])
        return challenge

    def find_challenge(self, challenge_id):
        return self.db.challenges.find_one({"_id": challenge_id})

    def pending_challenges_of(self, username, now):
        inbox = self.db.inboxes.find_one({"_id": username})
        found = []
        for challenge_id in (inbox or {}).get("challenge_ids", []):
            challenge = self.find_challenge(challenge_id)
            if challenge and challenge["status"] == PENDING and challenge["expires_at"] > now:
                found.append(challenge)
        return found

    def dispatched(self, challenge_id, device_id):
        return self.db.dispatches.find_one({"_id": f"{challenge_id}#{device_id}"}, projection={"_id": 1}) is not None

    def record_dispatch(self, challenge_id, device_id, now):
        """After the notification went out, so a delivery killed before it sends again."""
        self.claim("dispatches", f"{challenge_id}#{device_id}", at=now)

    def find_answer(self, challenge_id):
        return self.db.answers.find_one({"_id": challenge_id})

    def claim_answer(self, challenge_id, outcome, device_id, fraud, now, reason=None):
        """The challenge's one answer (approve, deny or expiry), for exactly one of any
        racing answers: the answer stored, or None when another came first."""
        answer = {"outcome": outcome, "device_id": device_id, "fraud": fraud, "reason": reason, "at": now}
        return {"_id": challenge_id, **answer} if self.claim("answers", challenge_id, **answer) else None

    def settle_challenge(self, challenge, outcome, device_id, now):
        """What follows an answer: the challenge's status, and it leaves the expiry sweep's
        list and the inbox. The status last, so a pending status means "not finished"."""
        self.db.pending.delete_one({"_id": challenge["_id"]})
        self.db.inboxes.update_one({"_id": challenge["username"]}, {"$pull": {"challenge_ids": challenge["_id"]}})
        self.db.challenges.update_one({"_id": challenge["_id"]}, {"$set": {
            "status": outcome, "answered_at": now, "answered_by": device_id}})

    def overdue_challenges(self, now):
        """Pending challenges past their expiry."""
        found = []
        for entry in list(self.db.pending.find({"expires_at": {"$lte": now}}).limit(500)):
            challenge = self.find_challenge(entry["_id"])
            if challenge and challenge["status"] == PENDING:
                found.append(challenge)
            else:  # settled, but the settling did not finish
                self.db.pending.delete_one({"_id": entry["_id"]})
        return found

    def requeue_unswept(self, now):
        """Challenges still pending a minute past their expiry without an expiry entry
        (their request was never redelivered) get one: the next sweep settles them."""
        stale = self.db.challenges.find({"status": PENDING, "expires_at": {"$lt": now - timedelta(minutes=1)}},
                                        projection={"expires_at": 1}).limit(500)
        for challenge in list(stale):
            self.claim("pending", challenge["_id"], expires_at=challenge["expires_at"])

    def claim_signature(self, device_id, signature_id, now):
        """A device's signed request, once: False when this signature was seen before."""
        return self.claim("used_signatures", f"{device_id}#{signature_id}", at=now)

    # -- security notices ----------------------------------------------------------

    def add_notice(self, notice):
        """Keep a notice once (its id is its event's) in the user's notice box."""
        self.claim("notices", notice["_id"], **{k: v for k, v in notice.items() if k != "_id"})
        self.add_to_set("notice_boxes", notice["username"], "notice_ids", notice["_id"])

    def claim_alert(self, device_id, notice_id, now):
        """True once per device and notice: the alert that is sent."""
        return self.claim("notices_seen", f"alert#{device_id}#{notice_id}", at=now)

    def unseen_notices(self, device, limit):
        """The user's notices this device has not been shown, newest first, each marked
        shown to it as it is handed out (a unique insert: once per device, however many
        polls race). Only what happened since the device was activated."""
        box = self.db.notice_boxes.find_one({"_id": device["username"]}) or {}
        found = []
        for notice_id in reversed(box.get("notice_ids", [])[-limit:]):
            notice = self.db.notices.find_one({"_id": notice_id})
            if (notice is None or notice["occurred_at"] < device["created_at"]
                    or not self.claim("notices_seen", f"{device['_id']}#{notice_id}", at=notice["occurred_at"])):
                continue
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

        Answered challenges, their answers and dispatch records are kept an hour for
        support questions, then go (the expiry sweep scans the collection, so it stays
        small); a used signature as long as its timestamp could still pass the clock check.
        """
        cutoff = now - timedelta(hours=1)
        deleted = self.db.challenges.delete_many(
            {"status": {"$ne": PENDING}, "expires_at": {"$lt": cutoff}}).deleted_count
        for collection in ("answers", "dispatches"):
            deleted += self.db[collection].delete_many({"at": {"$lt": cutoff}}).deleted_count
        # Notices a month: a device that has not polled in a month learns from the audit.
        month_ago = now - timedelta(days=30)
        for notice in list(self.db.notices.find({"occurred_at": {"$lt": month_ago}}, projection={"username": 1})):
            self.db.notice_boxes.update_one({"_id": notice["username"]}, {"$pull": {"notice_ids": notice["_id"]}})
            deleted += self.db.notices.delete_one({"_id": notice["_id"]}).deleted_count
        deleted += self.db.notices_seen.delete_many({"at": {"$lt": month_ago}}).deleted_count
        deleted += self.db.used_signatures.delete_many(
            {"at": {"$lt": now - timedelta(seconds=2 * signature_window_seconds + 60)}}).deleted_count
        return deleted
