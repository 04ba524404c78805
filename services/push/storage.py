"""The push service's own database: devices' push registrations and public keys."""
from shared.mongo import Storage

ACTIVE, REVOKED = "active", "revoked"


class PushStorage(Storage):
    database_name = "push"

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

    def revoke_device(self, device_id, username, now):
        self.db.devices.update_one(
            {"_id": device_id},
            {"$set": {"status": REVOKED, "revoked_at": now},
             "$setOnInsert": {"username": username, "created_at": now}},
            upsert=True,
        )
