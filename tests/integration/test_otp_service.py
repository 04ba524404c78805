"""The otp service in a nameko container on the real RabbitMQ and FerretDB, driven
through its entrypoints with `entrypoint_hook`; its events caught by a real listener."""
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from clients.device import Device
from shared import events
from shared.errors import InvalidCredentials, Locked
from services.otp.service import OtpService

pytestmark = pytest.mark.integration


class EventRecorder:
    """A service that listens to otp's events the way push and gateway do."""
    name = "recorder"
    seen = []

    @events.handles(events.DeviceActivated)
    def on_activated(self, payload):
        self.seen.append(payload)

    @events.handles(events.OtpVerified)
    def on_verified(self, payload):
        self.seen.append(payload)

    @events.handles(events.OtpRejected)
    def on_rejected(self, payload):
        self.seen.append(payload)


@pytest.fixture
def services(container_factory, rabbit_config, mongo_client):
    EventRecorder.seen = []
    otp = container_factory(OtpService, rabbit_config)
    recorder = container_factory(EventRecorder, rabbit_config)
    otp.start()
    recorder.start()
    return otp, recorder


def test_activation_and_single_use_verification_through_the_entrypoints(services):
    otp, recorder = services
    with entrypoint_hook(otp, "create_activation") as create_activation:
        activation = create_activation("W7000001")
    device = Device.new("unused")
    with entrypoint_hook(otp, "activate_device") as activate, \
            entrypoint_waiter(recorder, "on_activated"):
        answer = activate(activation["activation_code"], device.public_key_pem, "poll", "Phone")
    device.secret = answer["otp"]["secret"]
    activated = EventRecorder.seen[-1]
    assert activated["device_id"] == answer["device_id"] and activated["username"] == "W7000001"
    assert device.secret not in str(activated)     # the secret never travels in an event

    code = device.code()
    with entrypoint_hook(otp, "verify") as verify, entrypoint_waiter(recorder, "on_verified"):
        assert verify("W7000001", code) == {"username": "W7000001", "device_id": answer["device_id"]}
    with entrypoint_hook(otp, "verify") as verify, entrypoint_waiter(recorder, "on_rejected"):
        with pytest.raises(InvalidCredentials):
            verify("W7000001", code)
    rejected = EventRecorder.seen[-1]
    assert rejected["reason"] == "replayed" and rejected["consecutive_failures"] == 1
    assert code not in str(EventRecorder.seen)


def test_failures_lock_the_account_through_the_entrypoints(services):
    otp, _ = services
    with entrypoint_hook(otp, "verify") as verify:
        for _ in range(3):   # OTP_FREE_FAILURES=3 in the test environment
            with pytest.raises(InvalidCredentials):
                verify("W7000002", "0000000000")
        with pytest.raises(Locked) as locked:
            verify("W7000002", "0000000000")
    assert locked.value.retry_after == 1
    with entrypoint_hook(otp, "unlock") as unlock:
        assert unlock("W7000002") == {"username": "W7000002", "was_locked": True}
        assert unlock("W7000002") == {"username": "W7000002", "was_locked": False}


def test_a_login_abandoned_by_the_gateway_gives_the_code_back(services, rabbit_config):
    # otp accepted the code, but the gateway never answered 200 (its answer came too
    # late, or the session could not be stored): LoginAbandoned makes the code usable.
    otp, _ = services
    with entrypoint_hook(otp, "create_activation") as create_activation:
        activation = create_activation("W7000003")
    device = Device.new("unused")
    with entrypoint_hook(otp, "activate_device") as activate:
        device.secret = activate(activation["activation_code"], device.public_key_pem, "poll", "Phone")["otp"]["secret"]
    code, attempt = device.code(), "c" * 32
    with entrypoint_hook(otp, "verify") as verify:
        verify("W7000003", code, attempt)

    dispatch = event_dispatcher(rabbit_config)
    with entrypoint_waiter(otp, "on_login_abandoned"):
        dispatch(events.LoginAbandoned.service, events.LoginAbandoned.name,
                 events.build_event(events.LoginAbandoned, username="W7000003", attempt_id=attempt,
                                    reason="unavailable"))

    with entrypoint_hook(otp, "verify") as verify:
        assert verify("W7000003", code, "d" * 32)["username"] == "W7000003"
