"""The gateway's own database: sessions, remembered browsers and push login requests.

Tokens (session, remember, the browser binding of a login request) are random and
stored only as SHA-256 hashes. Reads are by `_id` alone (see shared/mongo.py).
"""
import hashlib
import secrets
from datetime import timedelta

from shared.mongo import ASCENDING, IndexModel, Storage


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


class GatewayStorage(Storage):
    database_name = "gateway"
    indexes = {
        "sessions": [IndexModel([("expires_at", ASCENDING)])],
    }

    def _issue(self, collection, now, expires_at, **fields):
        token = secrets.token_urlsafe(32)
        self.insert_surely(collection, {"_id": token_hash(token), "created_at": now, "expires_at": expires_at,
                                        **fields})
        return token

    def _find_live(self, collection, token, now):
        # By _id alone, expiry checked here: FerretDB pushes down only a lone _id filter.
        document = self.db[collection].find_one({"_id": token_hash(token)})
        return document if document and document["expires_at"] > now else None

    def create_session(self, username, device_id, now, expires_at):
        """A new random session token; only its hash is stored."""
        return self._issue("sessions", now, expires_at, username=username, device_id=device_id)

    def find_session(self, token, now):
        return self._find_live("sessions", token, now)

    def delete_session(self, token):
        self.db.sessions.delete_one({"_id": token_hash(token)})

    # -- remembered browsers ("Bewaar je gebruikersnaam") -----------------------------

    def remember(self, username, now, expires_at):
        return self._issue("remembered", now, expires_at, username=username)

    def find_remembered(self, token, now):
        return self._find_live("remembered", token, now)

    def forget(self, token):
        self.db.remembered.delete_one({"_id": token_hash(token)})

    # -- push login requests ---------------------------------------------------------

    def admit_push_request(self, username, window, limit):
        """True when this push request is within the user's `limit` for the window.

        Numbered exactly by tickets; once the window is full the request is refused
        with one lookup and no write, so a flood costs the flooder, not the database.
        """
        key = f"{username}#{window}"
        if self.has_ticket("push_requests", key, limit):
            return False
        return self.take_ticket("push_requests", key) <= limit

    def add_login_request(self, request_id, username, number, browser_token, now, expires_at):
        self.db.login_requests.insert_one({
            "_id": request_id, "username": username, "number": number, "browser": token_hash(browser_token),
            "status": "pending", "created_at": now, "expires_at": expires_at})

    def find_login_request(self, request_id):
        return self.db.login_requests.find_one({"_id": request_id})

    def settle_login_request(self, request_id, status, now):
        """pending -> approved | denied | expired; a settled request stays as it is."""
        request = self.find_login_request(request_id)
        if request and request["status"] == "pending":
            self.db.login_requests.update_one({"_id": request_id}, {"$set": {"status": status, "settled_at": now}})

    def claim_session_for(self, request_id, now):
        """True once per approved request: only one session comes out of it."""
        return self.claim("request_sessions", request_id, at=now)

    def purge_expired(self, now):
        removed = 0
        for collection in ("sessions", "remembered", "login_requests"):
            removed += self.db[collection].delete_many({"expires_at": {"$lt": now - timedelta(hours=1)}}).deleted_count
        return removed
