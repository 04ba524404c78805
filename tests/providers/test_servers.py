"""The local provider servers themselves: the push channel a phone (or the benchmark) waits on."""
import time

import eventlet

TOKEN = "a1b2c3d4e5f6" + "0" * 52
OTHER_TOKEN = "f6e5d4c3b2a1" + "0" * 52


def test_a_phone_waiting_on_its_token_gets_each_accepted_notification_once(servers, make_apns, make_message):
    provider = make_apns()

    # Nothing for the token: 204 (None) once the timeout has passed.
    started = time.monotonic()
    assert servers.wait_for("apns", TOKEN, timeout=0.2) is None
    assert 0.2 <= time.monotonic() - started < 2

    # A phone already waiting is woken by the notification, not by a polling interval.
    waiting = eventlet.spawn(servers.wait_for, "apns", TOKEN, 10)
    eventlet.sleep(0.2)
    assert not waiting.dead
    message = make_message()
    sent_at = time.monotonic()
    assert provider.send(TOKEN, message).ok
    record = waiting.wait()
    assert time.monotonic() - sent_at < 1
    assert record["token"] == TOKEN and record["answer"]["status"] == 200
    assert record["headers"]["apns-collapse-id"] == message.challenge_id
    assert record["payload"]["challenge_id"] == message.challenge_id

    # Notifications that arrived before anyone waited are kept, handed out in order and once.
    first, second = "ch_" + "1" * 32, "ch_" + "2" * 32
    provider.send(TOKEN, make_message(challenge_id=first))
    provider.send(TOKEN, make_message(challenge_id=second))
    assert [servers.wait_for("apns", TOKEN, timeout=1)["payload"]["challenge_id"] for _ in range(2)] == [first, second]
    assert servers.wait_for("apns", TOKEN, timeout=0.1) is None

    # A refused notification never reaches the phone, and another token's does not wake it.
    servers.script("apns", TOKEN, [{"status": 410, "reason": "Unregistered"}])
    assert not provider.send(TOKEN, make_message()).ok
    assert provider.send(OTHER_TOKEN, make_message()).ok
    assert servers.wait_for("apns", TOKEN, timeout=0.2) is None
    assert servers.wait_for("apns", OTHER_TOKEN, timeout=1)["token"] == OTHER_TOKEN
