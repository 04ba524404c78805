"""The gateway's own database: sessions, remembered browsers, the session handed out per
approved push login, the failed logins counted per source address, the named admin
credentials and the key that signs browser bindings (push owns the push login itself).

Tokens (session, remember) are random and stored only as SHA-256 hashes. Hot reads are by `_id` alone (see shared/mongo.py); the
rare ones that find a user's or a device's sessions (a revocation, an admin ending them)
filter on indexed fields, which MongoDB serves from its indexes and FerretDB by a scan.
Every collection is purged of what expired (`purge_expired`).
"""
import hashlib
import math
import secrets
from datetime import timedelta

from shared.mongo import ASCENDING, IndexModel, Storage

# A session's `last_seen` is written at most this often: idle timeouts are minutes long,
# and a write per request would double the cost of every authenticated request.
TOUCH_SECONDS = 60
# Failed logins per source are counted in buckets of this many seconds.
BUCKET_SECONDS = 60


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


class GatewayStorage(Storage):
    database_name = "gateway"
    indexes = {
        "sessions": [IndexModel([("expires_at", ASCENDING)]), IndexModel([("username", ASCENDING)]),
                     IndexModel([("device_id", ASCENDING)])],
        "remembered": [IndexModel([("expires_at", ASCENDING)]), IndexModel([("username", ASCENDING)])],
        "request_sessions": [IndexModel([("at", ASCENDING)])],
        "source_failures": [IndexModel([("at", ASCENDING)])],
        "sources": [IndexModel([("updated_at", ASCENDING)])],
    }

    def __init__(self, database):
        super().__init__(database)
        self._binding_key = None

    def _issue(self, collection, now, expires_at, **fields):
        token = secrets.token_urlsafe(32)
        self.insert_surely(collection, {"_id": token_hash(token), "created_at": now, "expires_at": expires_at,
                                        **fields})
        return token

    def _find_live(self, collection, token, now):
        # By _id alone, expiry checked here: FerretDB pushes down only a lone _id filter.
        document = self.db[collection].find_one({"_id": token_hash(token)})
        return document if document and document["expires_at"] > now else None

    # -- sessions ----------------------------------------------------------------------

    def create_session(self, username, method, device_id, now, expires_at):
        """A new random session token; only its hash is stored, with how the session was
        made (`method` code or push, and the device that proved it)."""
        return self._issue("sessions", now, expires_at, username=username, method=method, device_id=device_id,
                           last_seen=now)

    def find_session(self, token, now, idle_seconds):
        """(the live session of `token`, None), or (None, how it ended) when this call
        found it past its absolute expiry or unused for `idle_seconds` and removed it
        ({reason: expired | idle, session}), or (None, None). Using it counts as use."""
        session = self.db.sessions.find_one({"_id": token_hash(token)})
        if session is None:
            return None, None
        reason = ("expired" if session["expires_at"] <= now else
                  "idle" if (now - session["last_seen"]).total_seconds() > idle_seconds else None)
        if reason is not None:
            removed = self.db.sessions.delete_one({"_id": session["_id"]}).deleted_count
            return None, ({"reason": reason, "session": session} if removed else None)
        if (now - session["last_seen"]).total_seconds() > TOUCH_SECONDS:
            self.db.sessions.update_one({"_id": session["_id"]}, {"$set": {"last_seen": now}})
        return session, None

    def delete_session(self, token):
        """The session of `token` if this call ended it, else None."""
        return self.db.sessions.find_one_and_delete({"_id": token_hash(token)})

    def end_sessions(self, **owner):
        """End every session of a user (`username=`) or made with a device (`device_id=`);
        the sessions ended, as {username, method, device_id}."""
        ended = list(self.db.sessions.find(owner, projection={"username": 1, "method": 1, "device_id": 1}))
        for session in ended:
            self.db.sessions.delete_one({"_id": session["_id"]})
        return ended

    # -- named admin credentials -------------------------------------------------------

    def add_admin_credential(self, name, now):
        """A new random token for `name`, or None when the name is taken (even revoked:
        a name in the audit trail means one credential)."""
        token = secrets.token_urlsafe(32)
        if not self.claim("admin_credentials", name, token_hash=token_hash(token), created_at=now, revoked_at=None):
            return None
        self.insert_surely("admin_tokens", {"_id": token_hash(token), "name": name})
        return token

    def admin_name_of(self, token):
        """The name of the live credential `token`, or None (unknown or revoked)."""
        entry = self.db.admin_tokens.find_one({"_id": token_hash(token)})
        if entry is None:
            return None
        credential = self.db.admin_credentials.find_one({"_id": entry["name"]})
        return entry["name"] if credential and credential["revoked_at"] is None else None

    def admin_credentials(self):
        """Every named credential, oldest first (a handful: the collection is scanned)."""
        return list(self.db.admin_credentials.find({}, projection={"token_hash": 0}).sort("created_at", 1))

    def revoke_admin_credential(self, name, now):
        """True when this call revoked a live credential."""
        credential = self.db.admin_credentials.find_one({"_id": name})
        if credential is None or credential["revoked_at"] is not None:
            return False
        self.db.admin_tokens.delete_one({"_id": credential["token_hash"]})
        self.db.admin_credentials.update_one({"_id": name}, {"$set": {"revoked_at": now}})
        return True

    # -- remembered browsers ("Bewaar je gebruikersnaam") -----------------------------

    def remember(self, username, now, expires_at):
        return self._issue("remembered", now, expires_at, username=username)

    def find_remembered(self, token, now):
        return self._find_live("remembered", token, now)

    def forget(self, token):
        self.db.remembered.delete_one({"_id": token_hash(token)})

    def forget_user(self, username):
        """Forget every browser that saved `username`; how many."""
        return self.db.remembered.delete_many({"username": username}).deleted_count

    # -- failed logins per source address ---------------------------------------------

    def source_failures(self, source, now, window_seconds):
        """(failures of `source` in the window ending now, seconds until one leaves it).

        One read by `_id`: the summary `sources/{source}` holds a count per bucket of
        BUCKET_SECONDS, each taken from the bucket's tickets (exact), kept as a `$max`.
        """
        summary = self.db.sources.find_one({"_id": source})
        if summary is None:
            return 0, 0
        first = _bucket(now) - window_seconds // BUCKET_SECONDS + 1
        counted = {int(bucket): count for bucket, count in summary["buckets"].items() if int(bucket) >= first}
        if not counted:
            return 0, 0
        leaves_at = (min(counted) + window_seconds // BUCKET_SECONDS) * BUCKET_SECONDS
        return sum(counted.values()), max(1, math.ceil(leaves_at - now.timestamp()))

    def count_source_failure(self, source, now, window_seconds):
        """Count one failed login of `source`, exactly (a ticket per failure)."""
        bucket = _bucket(now)
        summary = self.db.sources.find_one({"_id": source}) or {"buckets": {}}
        # The summary's count is where the numbering goes on: one insert, not one per
        # failure already in the bucket.
        number = self.take_ticket("source_failures", f"{source}#{bucket}",
                                  after=summary["buckets"].get(str(bucket), 0), at=now)
        first = bucket - window_seconds // BUCKET_SECONDS + 1
        stale = {f"buckets.{old}": "" for old in summary["buckets"] if int(old) < first}
        update = {"$max": {f"buckets.{bucket}": number}, "$set": {"updated_at": now}}
        if stale:
            update["$unset"] = stale
        self.db.sources.update_one({"_id": source}, update, upsert=True)

    def first_throttle_in_bucket(self, source, now):
        """True once per source and bucket: the refusal that is announced (LoginThrottled)."""
        return self.claim("source_failures", f"throttled#{source}#{_bucket(now)}", at=now)

    # -- push login requests -----------------------------------------------------------

    # -- push login: the browser's binding (services/gateway/bindings.py) ---------------

    def binding_key(self):
        """The key that signs browser bindings: made once, by whichever instance is first,
        and the same for all (a browser may ask any instance)."""
        if self._binding_key is None:
            self.claim("keys", "push_binding", secret=secrets.token_hex(32))
            self._binding_key = bytes.fromhex(self.db.keys.find_one({"_id": "push_binding"})["secret"])
        return self._binding_key

    def claim_session_for(self, request_id, now):
        """True once per approved request: only one session comes out of it (push keeps
        the request; this is the gateway's one record of it)."""
        return self.claim("request_sessions", request_id, at=now)

    # -- housekeeping ------------------------------------------------------------------

    def purge_expired(self, now, window_seconds):
        """Delete what expired; the number of documents deleted. Sessions and remembered
        browsers go at their expiry; the rest once no rule can need them."""
        deleted = 0
        for collection in ("sessions", "remembered"):
            deleted += self.db[collection].delete_many({"expires_at": {"$lt": now}}).deleted_count
        day_ago = now - timedelta(days=1)   # longer than any push request lives
        deleted += self.db.request_sessions.delete_many({"at": {"$lt": day_ago}}).deleted_count
        window_ago = now - timedelta(seconds=window_seconds + BUCKET_SECONDS)
        deleted += self.db.source_failures.delete_many({"at": {"$lt": window_ago}}).deleted_count
        deleted += self.db.sources.delete_many({"updated_at": {"$lt": window_ago}}).deleted_count
        return deleted


def _bucket(moment):
    return int(moment.timestamp()) // BUCKET_SECONDS
