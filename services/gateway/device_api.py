"""The gateway's device room: the OTP app's activation, its signed poll and answer, its push token."""


from services.gateway import schemas
from services.gateway.entrypoints import json_response, load_body, route


class DeviceApi:
    """Routes of the OTP app (a part of GatewayService)."""

    # -- device (the OTP app) --------------------------------------------------------

    @route("POST", "/api/devices/activate", "Activate the OTP app with an activation code", "device",
           body=schemas.ActivateRequest, responses={201: schemas.ActivateResponse},
           errors=(400, 401, 410, 423, 503))
    def activate_device(self, request):
        device = load_body(request, schemas.ActivateRequest, self.config["max_body_bytes"])
        return json_response(self.otp.activate_device(**device), 201)


    @route("POST", "/api/devices/{device_id}/challenges", "A device's pending login requests and unseen security notices",
           "device", body=schemas.SignedPoll, responses={200: schemas.DeviceChallenges},
           errors=(400, 401, 403, 503))
    def device_challenges(self, request, device_id):
        poll = load_body(request, schemas.SignedPoll, self.config["max_body_bytes"])
        return json_response(self.push.pending_challenges(device_id, poll["timestamp"], poll["signature"]))

    @route("POST", "/api/push/challenges/{challenge_id}/response", "'Bevestig toegang': approve or deny",
           "device", body=schemas.ChallengeAnswer, responses={200: schemas.ChallengeAnswered},
           errors=(400, 401, 403, 404, 409, 410, 503))
    def answer_challenge(self, request, challenge_id):
        answer = load_body(request, schemas.ChallengeAnswer, self.config["max_body_bytes"])
        return json_response(self.push.respond(challenge_id, answer["device_id"], answer["decision"],
                                               answer["number"], answer["signature"], answer["fraud"]))

    @route("POST", "/api/devices/{device_id}/push-token", "A device's new push token (signed)", "device",
           body=schemas.PushTokenUpdate, responses={200: schemas.DeviceUpdated}, errors=(400, 401, 403, 503))
    def update_push_token(self, request, device_id):
        update = load_body(request, schemas.PushTokenUpdate, self.config["max_body_bytes"])
        return json_response(self.push.update_push_token(device_id, update["push_token"], update["timestamp"],
                                                         update["signature"]))

