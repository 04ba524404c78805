"""The otp service's own database: activation codes, authenticators, lockout state.

Read shared/mongo.py first: on the MongoDB-wire server we test with, only unique inserts
are exact under concurrency and only `_id` lookups are indexed. Hence the layout:
- `accounts` {_id: username, device_ids}: finds a user's authenticators by `_id`.
- `authenticators` {_id: device_id, ...}: the encrypted secret and the status, which is
  authoritative (a revoked authenticator never verifies, whatever else a race did).
- `used_steps` {_id: "device#step", attempt}: a time step is accepted once, by a unique
  insert, for one login attempt; the same attempt asking again (its call redelivered
  after an otp instance died) is accepted again, and a login that did not end in a
  session releases it (`release_step`), so the user's retry with that code works.
- `failures` {_id: "username#epoch#n"}: the n-th consecutive failure, numbered exactly
  by a unique insert; a success or an unlock starts a new epoch.
- `lockouts` {_id: username, epoch, failures, updated_at}: a summary for the fast path;
  the tickets are the truth (`lock_state` counts past a summary a burst left behind).
- `activation_codes`, `activation_claims` (used once), `activation_failures` (tickets).
"""
import secrets
from datetime import timedelta
from functools import partial

from pymongo.errors import PyMongoError

from shared.mongo import ASCENDING, IndexModel, Storage
from services.otp.lockout import LockState

ACTIVE, REVOKED = "active", "revoked"
MAX_ACTIVATION_TTL_DAYS = 90   # OTP_ACTIVATION_TTL_SECONDS' ceiling (services/otp/config.py)


class OtpStorage(Storage):
    database_name = "otp"
    # Only the background purges query by these fields.
    indexes = {
        "activation_codes": [IndexModel([("expires_at", ASCENDING)])],
        "used_steps": [IndexModel([("at", ASCENDING)])],
        "failures": [IndexModel([("at", ASCENDING)])],
        "activation_claims": [IndexModel([("at", ASCENDING)])],
        "activation_failures": [IndexModel([("at", ASCENDING)])],
        "lockouts": [IndexModel([("updated_at", ASCENDING)])],
    }

    # -- activation codes ------------------------------------------------------------

    def add_activation_code(self, code_id, secret_hash, username, now, expires_at):
        """Store a new code; False when `code_id` is taken (the caller draws another)."""
        return self.claim("activation_codes", code_id, secret_hash=secret_hash, username=username,
                          created_at=now, expires_at=expires_at, used_at=None, failed_tries=0)

    def find_activation_code(self, code_id):
        return self.db.activation_codes.find_one({"_id": code_id})

    def count_activation_failure(self, record, now):
        """Number this wrong try of the code exactly; the count so far."""
        tries = self.take_ticket("activation_failures", record["_id"], after=record["failed_tries"], at=now)
        self.db.activation_codes.update_one({"_id": record["_id"]}, {"$max": {"failed_tries": tries}})
        return tries

    def activation_tries_exhausted(self, record, max_tries):
        return record["failed_tries"] >= max_tries or self.has_ticket("activation_failures", record["_id"], max_tries)

    def claim_activation_code(self, code_id, now):
        """Mark the code used; True for exactly one caller however many race."""
        if not self.claim("activation_claims", code_id, at=now):
            return False
        self.db.activation_codes.update_one({"_id": code_id}, {"$set": {"used_at": now}})
        return True

    def undo_activation(self, code_id, device_id, username):
        """Forget a device whose activation did not complete; its code works again."""
        self.db.accounts.update_one({"_id": username}, {"$pull": {"device_ids": device_id}})
        self.db.authenticators.delete_one({"_id": device_id})
        self.db.activation_claims.delete_one({"_id": code_id})
        self.db.activation_codes.update_one({"_id": code_id}, {"$set": {"used_at": None}})

    # -- authenticators (one per activated device) -----------------------------------

    def add_authenticator(self, device_id, username, encrypted_secret, platform, device_name, now):
        self.db.authenticators.insert_one({
            "_id": device_id, "username": username, "secret": encrypted_secret,
            "platform": platform, "device_name": device_name, "status": ACTIVE,
            "created_at": now, "last_used_at": None, "revoked_at": None,
            # the highest time step accepted: codes of older steps are refused
            "last_step": 0,
        })
        self.add_to_set("accounts", username, "device_ids", device_id)

    def authenticators_of(self, username, active_only=True):
        account = self.db.accounts.find_one({"_id": username})
        found = []
        for device_id in account.get("device_ids", []) if account else []:
            authenticator = self.db.authenticators.find_one({"_id": device_id})
            if authenticator and (authenticator["status"] == ACTIVE or not active_only):
                found.append(authenticator)
        return found

    def accept_step(self, authenticator, step, attempt, now):
        """Accept time step `step` of this authenticator for login `attempt`, once; never
        a step older than the last one accepted.

        True for exactly one attempt per step (a unique insert), however many requests
        and otp instances race with the same code; the same attempt again is accepted
        again. When the database fails on the way, the insert may have committed without
        an answer: it is released in the background once the database answers.
        """
        if step < authenticator["last_step"]:
            return False
        key = f"{authenticator['_id']}#{step}"
        try:
            if not self.claim("used_steps", key, attempt=attempt, at=now):
                held = self.db.used_steps.find_one({"_id": key})
                return held is not None and held.get("attempt") == attempt
            self.db.authenticators.update_one({"_id": authenticator["_id"]},
                                              {"$max": {"last_step": step}, "$set": {"last_used_at": now}})
        except PyMongoError:
            # The server may still apply an insert the client stopped waiting for: look
            # again a few times, not once.
            for delay in (0.5, 2.0, 5.0):
                self.repairs.later("releasing a code accepted while the database failed",
                                   partial(self.release_step, authenticator["_id"], step, attempt), first_delay=delay)
            raise
        return True

    def release_step(self, device_id, step, attempt):
        """Make step `step` usable again if `attempt` holds it: its login ended without a
        session. Read by _id, then compared: a filter beyond the lone _id makes FerretDB
        scan the collection (measured: 1 s at 50,000 steps, against 0.6 ms)."""
        key = f"{device_id}#{step}"
        held = self.db.used_steps.find_one({"_id": key})
        if held is None or held.get("attempt") != attempt:
            return False
        self.db.used_steps.delete_one({"_id": key})
        return True

    def revoke_authenticator(self, device_id, now):
        """The authenticator as it was before revoking, or None if unknown or already revoked."""
        authenticator = self.db.authenticators.find_one({"_id": device_id})
        if authenticator is None or authenticator["status"] != ACTIVE:
            return None
        self.db.authenticators.update_one({"_id": device_id}, {"$set": {"status": REVOKED, "revoked_at": now}})
        return authenticator

    def find_authenticator(self, device_id):
        return self.db.authenticators.find_one({"_id": device_id})

    # -- lockout ---------------------------------------------------------------------

    def lock_state(self, username):
        """What the tickets say of `username`'s consecutive failures (services/otp/lockout.py).

        The summary is a hint a racing burst may leave behind the tickets (its `$max` is
        read-modify-write on FerretDB), so the tickets after it are counted too; with no
        summary there has been no failure (every failure writes one), and one read is all
        a clean account costs.
        """
        summary = self.db.lockouts.find_one({"_id": username})
        if summary is None:
            return LockState(username, "0", 0)
        key, failures = f"{username}#{summary['epoch']}", summary["failures"]
        while self.has_ticket("failures", key, failures + 1):
            failures += 1
        last = self.db.failures.find_one({"_id": f"{key}#{failures}"}) if failures else None
        return LockState(username, summary["epoch"], failures, last["at"] if last else summary["updated_at"])

    def count_failure(self, state, now):
        """Number this consecutive failure exactly; the state that follows it.

        The summary is raised for the epoch the failure was counted in, and only while
        that epoch is current: a failure finishing after a success or an unlock started a
        new epoch does not bring the old count back. (Filtered by _id alone and the epoch
        compared here: FerretDB indexes only a lone _id filter.)
        """
        failures = self.take_ticket("failures", f"{state.username}#{state.epoch}", after=state.failures, at=now)
        if not self.claim("lockouts", state.username, epoch=state.epoch, failures=failures, updated_at=now):
            current = self.db.lockouts.find_one({"_id": state.username})
            if current is not None and current["epoch"] != state.epoch:
                # A success or an unlock came between: this failure belongs to an ended
                # epoch, and what holds now is the new one's count (nothing to lock for).
                return self.lock_state(state.username)
            if current is not None:
                self.db.lockouts.update_one({"_id": state.username},
                                            {"$max": {"failures": failures, "updated_at": now}})
        return LockState(state.username, state.epoch, failures, now)

    def start_new_epoch(self, state, force=False):
        """Consecutive failures count from zero again (a success, an unlock). Without
        `force` nothing is written when nothing was counted: the common success."""
        if not (force or state.failures):
            return False
        self.db.lockouts.update_one({"_id": state.username}, {"$set": {
            "epoch": secrets.token_hex(8), "failures": 0}})
        return True

    # -- housekeeping ----------------------------------------------------------------

    def purge_expired(self, now, hard_lock_failures):
        """Delete what no rule needs any more; the number of documents deleted.

        Codes are kept a week past expiry (support questions), their claims and failure
        tickets as long as any code could still exist; used steps while a code of that
        step could still be presented; failure tickets and lockout summaries a day after
        the last failure, except the summary of a hard lock of an account that exists
        (an admin ends it). A made-up username leaves nothing behind after a day.
        """
        code_cutoff = now - timedelta(days=7)
        deleted = self.db.activation_codes.delete_many({"expires_at": {"$lt": code_cutoff}}).deleted_count
        for collection in ("activation_claims", "activation_failures"):
            deleted += self.db[collection].delete_many(
                {"at": {"$lt": code_cutoff - timedelta(days=MAX_ACTIVATION_TTL_DAYS)}}).deleted_count
        deleted += self.db.used_steps.delete_many({"at": {"$lt": now - timedelta(minutes=10)}}).deleted_count
        day_ago = now - timedelta(days=1)
        # Summaries first, judged by the tickets (a burst can leave a summary behind them):
        # a hard lock of an account that exists keeps its true count before its tickets go.
        for summary in list(self.db.lockouts.find({"updated_at": {"$lt": day_ago}}, projection={"_id": 1})):
            username = summary["_id"]
            state = self.lock_state(username)
            if state.failures >= hard_lock_failures and self.db.accounts.find_one({"_id": username}) is not None:
                self.db.lockouts.update_one({"_id": username}, {"$max": {"failures": state.failures}})
            else:
                deleted += self.db.lockouts.delete_one({"_id": username}).deleted_count
        deleted += self.db.failures.delete_many({"at": {"$lt": day_ago}}).deleted_count
        return deleted
