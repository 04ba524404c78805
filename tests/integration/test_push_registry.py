"""The push service's device registry, fed by otp's events over the real RabbitMQ and
stored in the real MongoDB-wire server: idempotent under redelivery and reordering."""
import uuid

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from clients.device import Device
from shared import events
from shared.clock import utcnow
from shared.errors import Forbidden, Unavailable
from services.otp.service import OtpService
from services.otp.storage import OtpStorage
from services.push.dependencies import RegistryCatchUp
from services.push.service import PushService
from services.push.storage import PushStorage
from tests.conftest import service_db, started_push

pytestmark = pytest.mark.integration


@pytest.fixture
def push(container_factory, rabbit_config, mongo_client):
    return started_push(container_factory(PushService, rabbit_config))


@pytest.fixture
def emit(rabbit_config):
    dispatch = event_dispatcher(rabbit_config)

    def emit_event(event_cls, **payload):
        event = events.build_event(event_cls, **payload)
        dispatch(event_cls.service, event_cls.name, event)
        return event

    return emit_event


def activated(device_id, username="W5000001"):
    return dict(device_id=device_id, username=username, platform="ios", push_token="a" * 64,
                public_key="-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n", device_name="iPhone")


def test_an_activated_device_is_registered_once_however_often_the_event_arrives(push, emit, mongo_client):
    # A username of this test alone: its device list holds only what this test sent.
    registry, user = PushStorage(service_db(mongo_client, "push")), "W5000011"
    with entrypoint_waiter(push, "on_device_activated"):
        emit(events.DeviceActivated, **activated("dev_int_1", user))
    first = registry.find_device("dev_int_1")
    for _ in range(2):   # redelivered: the registry and the user's device list stay as they were
        with entrypoint_waiter(push, "on_device_activated"):
            emit(events.DeviceActivated, **activated("dev_int_1", user))

    # What a notice is sent to and a poll is checked against: the device, once.
    assert [device["_id"] for device in registry.active_devices(user)] == ["dev_int_1"]
    assert registry.find_device("dev_int_1") == first          # not written again
    assert first["status"] == "active" and first["push_token"] == "a" * 64 and first["username"] == user


def test_a_revocation_that_overtakes_the_activation_wins(push, emit, mongo_client):
    devices = service_db(mongo_client, "push").devices
    with entrypoint_waiter(push, "on_device_revoked"):
        emit(events.DeviceRevoked, device_id="dev_int_2", username="W5000001", reason="admin",
             active_devices_left=0)
    with entrypoint_waiter(push, "on_device_activated"):
        emit(events.DeviceActivated, **activated("dev_int_2"))
    assert devices.find_one({"_id": "dev_int_2"})["status"] == "revoked"


def test_a_malformed_event_is_dropped_without_touching_the_registry(push, rabbit_config, mongo_client):
    devices = service_db(mongo_client, "push").devices
    before = devices.count_documents({})
    dispatch = event_dispatcher(rabbit_config)
    with entrypoint_waiter(push, "on_device_activated"):
        dispatch("otp", events.DeviceActivated.name, {"device_id": {"$ne": None}, "username": "x"})
    assert devices.count_documents({}) == before


def test_a_device_activated_a_moment_ago_is_told_to_wait_not_that_it_was_revoked(
        container_factory, push, emit, rabbit_config, mongo_client):
    """otp has activated the device and answered the app, whose first poll comes before
    push has consumed DeviceActivated (a busy queue): a 503 to retry, never the 403 on
    which the app stops for good."""
    container_factory(OtpService, rabbit_config).start()
    authenticators = OtpStorage(service_db(mongo_client, "otp"))
    device = Device.new("unused")
    device.device_id, device.username = f"dev_{uuid.uuid4().hex}", f"W{uuid.uuid4().int % 10**9:09d}"
    authenticators.add_authenticator(device.device_id, device.username, "sealed", "poll", "Phone", utcnow())

    with pytest.raises(Unavailable) as waiting:
        signed_poll(push, device)
    assert waiting.value.retry_after == 1

    with entrypoint_waiter(push, "on_device_activated"):
        emit(events.DeviceActivated, device_id=device.device_id, username=device.username, platform="poll",
             push_token=None, public_key=device.public_key_pem, device_name="Phone")
    assert signed_poll(push, device) == {"challenges": [], "notices": []}

    # A device otp never activated, or revoked before push heard of either event: 403.
    stranger = Device.new("unused")
    stranger.device_id = f"dev_{uuid.uuid4().hex}"
    with pytest.raises(Forbidden):
        signed_poll(push, stranger)
    stranger.username = device.username
    authenticators.add_authenticator(stranger.device_id, stranger.username, "sealed", "poll", "Tablet", utcnow())
    authenticators.revoke_authenticator(stranger.device_id, utcnow())
    with pytest.raises(Forbidden):
        signed_poll(push, stranger)


def signed_poll(push, device):
    timestamp = int(utcnow().timestamp())
    with entrypoint_hook(push, "pending_challenges") as poll:
        return poll(device.device_id, timestamp, device.sign("mycepa-poll-v1", device.device_id, timestamp))


def test_an_administrators_revocation_holds_before_its_event_comes(push, emit, mongo_client):
    """DeviceRevoked can wait behind a busy push; the gateway's revoke_device call makes the
    device unusable at once, and the event that follows finds it revoked."""
    device = Device.new("unused")
    device.device_id, device.username = f"dev_{uuid.uuid4().hex}", f"W{uuid.uuid4().int % 10**9:09d}"
    with entrypoint_waiter(push, "on_device_activated"):
        emit(events.DeviceActivated, device_id=device.device_id, username=device.username, platform="poll",
             push_token=None, public_key=device.public_key_pem, device_name="Phone")
    assert signed_poll(push, device) == {"challenges": [], "notices": []}

    with entrypoint_hook(push, "revoke_device") as revoke:
        assert revoke(device.device_id, device.username) == {"device_id": device.device_id}
    with pytest.raises(Forbidden):
        signed_poll(push, device)
    with entrypoint_waiter(push, "on_device_revoked"):
        emit(events.DeviceRevoked, device_id=device.device_id, username=device.username, reason="admin",
             active_devices_left=0)
    assert PushStorage(service_db(mongo_client, "push")).find_device(device.device_id)["status"] == "revoked"


def a_device(authenticators, registry, revoked_in_otp):
    """A device push heard activated; otp's record of it active, or revoked (an admin
    revoked it while push was away: its DeviceRevoked still waits in push's queue)."""
    device = Device.new("unused")
    device.device_id, device.username = f"dev_{uuid.uuid4().hex}", f"W{uuid.uuid4().int % 10**9:09d}"
    authenticators.add_authenticator(device.device_id, device.username, "sealed", "poll", "Phone", utcnow())
    if revoked_in_otp:
        authenticators.revoke_authenticator(device.device_id, utcnow())
    registry.register_device(activated(device.device_id, device.username) | {
        "platform": "poll", "push_token": None, "public_key": device.public_key_pem}, utcnow())
    return device


@pytest.fixture
def restarted_push(monkeypatch, container_factory, rabbit_config):
    """A push just started, whose registry has not caught up with otp's events yet (the
    queue checks held off for this test)."""
    monkeypatch.setattr(RegistryCatchUp, "CHECK_SECONDS", 60.0)
    container = container_factory(PushService, rabbit_config)
    container.start()
    return container


def test_a_revocation_still_queued_when_push_starts_holds_from_the_first_request(
        restarted_push, container_factory, rabbit_config, mongo_client):
    """Push restarted after an outage consumes its backlog and the devices' requests at
    once: until its registry has caught up, otp confirms the device, so a phone revoked
    during the outage is refused even before its DeviceRevoked is applied."""
    container_factory(OtpService, rabbit_config).start()
    authenticators, registry = OtpStorage(service_db(mongo_client, "otp")), PushStorage(service_db(mongo_client, "push"))
    revoked, kept = (a_device(authenticators, registry, revoked_in_otp) for revoked_in_otp in (True, False))

    with pytest.raises(Forbidden):
        signed_poll(restarted_push, revoked)
    assert registry.find_device(revoked.device_id)["status"] == "revoked"   # applied, for good
    assert signed_poll(restarted_push, kept) == {"challenges": [], "notices": []}


def test_until_the_registry_has_caught_up_a_device_is_not_served_without_otp(restarted_push, mongo_client):
    """Fail closed: with otp away, push cannot tell a revoked device from a kept one yet."""
    authenticators, registry = OtpStorage(service_db(mongo_client, "otp")), PushStorage(service_db(mongo_client, "push"))
    device = a_device(authenticators, registry, revoked_in_otp=False)
    with pytest.raises(Unavailable):
        signed_poll(restarted_push, device)


def test_once_caught_up_the_registry_answers_alone(push, mongo_client):
    """No backlog: the registry catches up in a second or so (the `push` fixture waits for
    it) and then serves devices without asking otp, which is not running here."""
    authenticators, registry = OtpStorage(service_db(mongo_client, "otp")), PushStorage(service_db(mongo_client, "push"))
    device = a_device(authenticators, registry, revoked_in_otp=False)
    assert signed_poll(push, device) == {"challenges": [], "notices": []}
