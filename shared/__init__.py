"""What every MyCepa service shares: event contracts, errors, config, Mongo and logging.

No business logic lives here.
"""
