"""Push delivery behind one interface: `provider.send(push_token, message) -> DeliveryResult`.

One module per provider: `apns` (iOS, HTTP/2 + ES256 provider tokens) and `fcm`
(Android, HTTP v1 + OAuth2 service account). Both use one HTTP client (httpx over h2).
"""
from services.push.providers.apns import APNsProvider
from services.push.providers.base import DeliveryResult, NoticeMessage, Provider, PushMessage, RetryPolicy
from services.push.providers.fcm import FCMProvider

__all__ = ["APNsProvider", "DeliveryResult", "FCMProvider", "NoticeMessage", "Provider", "PushMessage", "RetryPolicy",
           "providers_from_settings"]

APNS_KEYS = ("apns_key_pem", "apns_key_id", "apns_team_id", "apns_topic")


def providers_from_settings(settings, **options):
    """`{"ios": APNsProvider | None, "android": FCMProvider | None}` from a settings mapping.

    APNs is configured by apns_key_pem (the .p8 PEM), apns_key_id, apns_team_id and
    apns_topic (the app's bundle id), with apns_url (default: Apple's production
    endpoint). FCM by fcm_service_account_json (the service account file's JSON), with
    fcm_project (default: the account's project_id), fcm_url and fcm_token_uri (default:
    the account's token_uri). Both take push_ca_file (a CA bundle instead of the default
    CAs), push_max_attempts and push_timeout_seconds. A provider whose settings are all
    missing (None or "") is None; one that is half configured raises ValueError naming
    the missing setting. `options` (clock, sleep, retry, ...) go to both providers.
    """
    def get(key):
        value = settings.get(key)
        return value if value not in ("", None) else None

    common = dict(options)
    if get("push_ca_file"):
        common.setdefault("verify", get("push_ca_file"))
    if get("push_timeout_seconds"):
        common.setdefault("timeout", float(get("push_timeout_seconds")))
    if get("push_max_attempts"):
        common.setdefault("retry", RetryPolicy(max_attempts=int(get("push_max_attempts"))))

    ios = None
    given = [key for key in APNS_KEYS if get(key)]
    if given:
        missing = [key for key in APNS_KEYS if not get(key)]
        if missing:
            raise ValueError(f"APNs is partly configured: {', '.join(missing)} missing")
        apns_options = {"base_url": get("apns_url")} if get("apns_url") else {}
        ios = APNsProvider(key_pem=get("apns_key_pem"), key_id=get("apns_key_id"), team_id=get("apns_team_id"),
                           topic=get("apns_topic"), **apns_options, **common)

    android = None
    if get("fcm_service_account_json"):
        fcm_options = {"base_url": get("fcm_url")} if get("fcm_url") else {}
        android = FCMProvider(service_account_info=get("fcm_service_account_json"), project_id=get("fcm_project"),
                              token_uri=get("fcm_token_uri"), **fcm_options, **common)
    elif get("fcm_project") or get("fcm_url") or get("fcm_token_uri"):
        raise ValueError("FCM is partly configured: fcm_service_account_json missing")
    return {"ios": ios, "android": android}
