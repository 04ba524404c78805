"""The otp service's own database: activation codes, authenticators, lockout state.

Every state change that must not happen twice is one conditional update, so it holds
across any number of otp instances: claiming an activation code, advancing an
authenticator's last accepted time step, counting a failure.
"""
from datetime import timedelta

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared.mongo import ASCENDING, IndexModel, Storage

ACTIVE, REVOKED = "active", "revoked"


# FerretDB v1 implements no projection in findAndModify: those calls return whole documents.
class OtpStorage(Storage):
    database_name = "otp"
    indexes = {
        "activation_codes": [IndexModel([("expires_at", ASCENDING)])],
        "authenticators": [IndexModel([("username", ASCENDING), ("status", ASCENDING)])],
        "lockouts": [IndexModel([("updated_at", ASCENDING)])],
    }

    # -- activation codes ------------------------------------------------------------

    def add_activation_code(self, code_id, secret_hash, username, now, expires_at):
        """Store a new code; False when `code_id` is taken (the caller draws another)."""
        try:
            self.db.activation_codes.insert_one({
                "_id": code_id, "secret_hash": secret_hash, "username": username,
                "created_at": now, "expires_at": expires_at, "used_at": None, "failed_tries": 0,
            })
            return True
        except DuplicateKeyError:
            return False

    def find_activation_code(self, code_id):
        return self.db.activation_codes.find_one({"_id": code_id})

    def count_activation_failure(self, code_id):
        document = self.db.activation_codes.find_one_and_update(
            {"_id": code_id}, {"$inc": {"failed_tries": 1}}, return_document=ReturnDocument.AFTER)
        return document["failed_tries"] if document else 0

    def claim_activation_code(self, code_id, now):
        """Mark the code used; True for exactly one caller however many race."""
        claimed = self.db.activation_codes.find_one_and_update(
            {"_id": code_id, "used_at": None, "expires_at": {"$gt": now}}, {"$set": {"used_at": now}})
        return claimed is not None

    def release_activation_code(self, code_id):
        self.db.activation_codes.update_one({"_id": code_id}, {"$set": {"used_at": None}})

    # -- authenticators (one per activated device) -----------------------------------

    def add_authenticator(self, device_id, username, encrypted_secret, platform, device_name, now):
        self.db.authenticators.insert_one({
            "_id": device_id, "username": username, "secret": encrypted_secret,
            "platform": platform, "device_name": device_name, "status": ACTIVE,
            "created_at": now, "last_used_at": None, "revoked_at": None,
            # the highest time step ever accepted: codes of that step or older are refused
            "last_step": 0,
        })

    def active_authenticators(self, username):
        return list(self.db.authenticators.find({"username": username, "status": ACTIVE}))

    def advance_last_step(self, device_id, step, now):
        """Accept time step `step` once: True only if no step >= `step` was accepted before."""
        advanced = self.db.authenticators.find_one_and_update(
            {"_id": device_id, "status": ACTIVE, "last_step": {"$lt": step}},
            {"$set": {"last_step": step, "last_used_at": now}},
        )
        return advanced is not None

    def devices_of(self, username):
        return list(self.db.authenticators.find(
            {"username": username}, projection={"secret": 0, "last_step": 0}).sort("created_at", ASCENDING))

    def revoke_authenticator(self, device_id, now):
        """The authenticator as it was before revoking, or None if unknown or already revoked."""
        return self.db.authenticators.find_one_and_update(
            {"_id": device_id, "status": ACTIVE}, {"$set": {"status": REVOKED, "revoked_at": now}})

    def find_authenticator(self, device_id):
        return self.db.authenticators.find_one({"_id": device_id}, projection={"secret": 0})

    # -- lockout ---------------------------------------------------------------------

    def lockout(self, username):
        """{failures, locked_until, hard_locked} of `username`, defaults for a clean record."""
        return {"failures": 0, "locked_until": None, "hard_locked": False,
                **(self.db.lockouts.find_one({"_id": username}) or {})}

    def count_failure(self, username, now):
        """Add one consecutive failure atomically; the new count."""
        document = self.db.lockouts.find_one_and_update(
            {"_id": username}, {"$inc": {"failures": 1}, "$set": {"updated_at": now}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return document["failures"]

    def lock(self, username, until, hard, now):
        self.db.lockouts.update_one(
            {"_id": username}, {"$set": {"locked_until": until, "hard_locked": hard, "updated_at": now}})

    def clear_failures(self, username):
        """Forget failures after a success; a hard lock is never cleared here."""
        self.db.lockouts.delete_one({"_id": username, "hard_locked": {"$ne": True}})

    def unlock(self, username):
        """Clear every lock; the state before, or None if there was nothing to clear."""
        return self.db.lockouts.find_one_and_delete({"_id": username})

    # -- housekeeping ----------------------------------------------------------------

    def purge_expired(self, now):
        # Used or expired codes are kept a week for audit; idle failure counters a day.
        # Hard locks are never purged: only an admin ends them.
        removed = self.db.activation_codes.delete_many({"expires_at": {"$lt": now - timedelta(days=7)}})
        idle = self.db.lockouts.delete_many({"hard_locked": {"$ne": True}, "updated_at": {"$lt": now - timedelta(days=1)},
                                             "$or": [{"locked_until": None}, {"locked_until": {"$lt": now}}]})
        return removed.deleted_count + idle.deleted_count
