"""The OpenAPI 3 document, generated with apispec from the routes and their schemas."""
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from shared.fields import ACTIVATION_CODE_PATTERN, USERNAME_PATTERN
from services.gateway import webpage
from services.gateway.schemas import ADMIN_NAME, ErrorBody

# What the server accepts in each path parameter, so a client (or a fuzzer) reading this
# document knows what a well-formed request is. Python's \Z is ECMA's $ here.
_ID = {"type": "string", "minLength": 1, "maxLength": 64}
PATH_PARAMETERS = {
    "username": {"type": "string", "pattern": USERNAME_PATTERN.replace("\\Z", "$")},
    "device_id": _ID, "challenge_id": _ID, "request_id": _ID,
    "code": {"type": "string", "pattern": ACTIVATION_CODE_PATTERN.replace("\\Z", "$")},
    "name": {"type": "string", "enum": sorted(webpage.ASSETS)},
    "credential": {"type": "string", "pattern": ADMIN_NAME.replace("\\Z", "$")},
}

_ERROR_TEXT = {400: "Invalid input", 401: "Not authenticated or wrong credentials", 403: "Forbidden",
               404: "Not found", 409: "Conflict", 410: "Expired or already used",
               423: "Locked (Retry-After when temporary)", 429: "Too many requests (Retry-After)",
               503: "A service behind the gateway is unavailable"}


def build_spec(routes, server_url):
    spec = APISpec(
        title="MyCepa login", version="1.0.0", openapi_version="3.0.3",
        info={"description": "Login for the MyCepa port-worker portal: 10-digit OTP codes and push."},
        servers=[{"url": server_url}],
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("admin", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("session", {"type": "apiKey", "in": "cookie", "name": "mycepa_session"})
    spec.components.schema("Error", schema=ErrorBody)
    paths = {}
    for route in routes:
        operation = {"summary": route.summary, "tags": [route.tag], "responses": {}}
        if route.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": route.body}}}
        for status, schema in route.responses.items():
            response = {"description": "OK" if status < 300 else "Done"}
            if schema is not None:
                response["content"] = {route.content_type: {"schema": schema}}
            operation["responses"][str(status)] = response
        for status in route.errors:
            operation["responses"][str(status)] = {
                "description": _ERROR_TEXT[status],
                "content": {"application/json": {"schema": "Error"}}}
        if route.auth:
            operation["security"] = [{route.auth: []}]
        parameters = [segment[1:-1] for segment in route.path.split("/") if segment.startswith("{")]
        if parameters:
            operation["parameters"] = [{"in": "path", "name": name, "required": True,
                                        "schema": PATH_PARAMETERS[name]} for name in parameters]
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
