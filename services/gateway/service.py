"""The gateway: the only HTTP surface, in rooms by who comes in (each its own module):
the browser's code login and session (browser_login.py), push login (push_login.py), the
OTP app (device_api.py), administrators (admin_api.py) and operators (operations.py);
what they share is in common.py. This class gives them their dependencies."""
from shared.config import SettingsProvider
from shared.messaging import EventDispatcher, ServiceRpc
from shared.mongo import MongoStorage
# The rooms as modules, not their classes: `nameko run` takes every class with
# entrypoints that this module's namespace holds for a service of its own.
from services.gateway import admin_api, browser_login, common, device_api, operations, push_login
from services.gateway.config import GatewaySettings
from services.gateway.dependencies import Announcer, BrokerCheck, Waiters
from services.gateway.storage import GatewayStorage


class GatewayService(browser_login.BrowserLogin, push_login.PushLogin, device_api.DeviceApi, admin_api.AdminApi,
                     operations.Operations, common.Common):
    name = "gateway"

    config = SettingsProvider(GatewaySettings)
    storage = MongoStorage(GatewayStorage)
    otp = ServiceRpc("otp")
    push = ServiceRpc("push")
    audit = ServiceRpc("audit")
    broker_reachable = BrokerCheck()
    dispatch = EventDispatcher()
    announce = Announcer()
    waiters = Waiters()
