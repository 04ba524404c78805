"""The gateway's own database: browser sessions, stored by the hash of their token."""
import hashlib
import secrets

from shared.mongo import ASCENDING, IndexModel, Storage


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


class GatewayStorage(Storage):
    database_name = "gateway"
    indexes = {
        "sessions": [IndexModel([("expires_at", ASCENDING)])],
    }

    def create_session(self, username, device_id, now, expires_at):
        """A new random session token; only its hash is stored."""
        token = secrets.token_urlsafe(32)
        self.db.sessions.insert_one({"_id": token_hash(token), "username": username, "device_id": device_id,
                                     "created_at": now, "expires_at": expires_at})
        return token

    def find_session(self, token, now):
        # By _id alone, expiry checked here: FerretDB pushes down only a lone _id filter.
        session = self.db.sessions.find_one({"_id": token_hash(token)})
        return session if session and session["expires_at"] > now else None

    def delete_session(self, token):
        self.db.sessions.delete_one({"_id": token_hash(token)})

    def purge_expired(self, now):
        return self.db.sessions.delete_many({"expires_at": {"$lt": now}}).deleted_count
