"""Clients of the public contracts: what the OTP app and an admin speak to the gateway."""
