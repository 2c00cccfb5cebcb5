"""Every answer checked against botocore's output shape.

botocore's parsers keep only the members a shape models, so a client never sees a member the
service should not send, a misspelt one, or a value of the wrong type: they are dropped or
coerced silently. `watch(client)` hooks a boto3 client so that each successful JSON answer it
receives is walked, raw, against its operation's output shape: members that are not in the
shape, required members that are missing, values of the wrong type and strings outside the
shape's enum are recorded in `PROBLEMS`; conftest fails the test that received them.

Covered: the awsJson APIs (SageMaker, Application Auto Scaling, CloudWatch, CloudTrail, CloudWatch
Logs). The runtime (its answer is the model's bytes and headers) and the XML APIs (IAM, STS:
botocore's XML parser is itself strict about structure) are not walked.
"""

from __future__ import annotations

import json

PROBLEMS: list[str] = []

# Values spillway answers on purpose outside an enum of the model: its documented extensions
# (docs/api-compat.md, "Choices where AWS is silent").
EXTENSIONS = {
    ("RoutingStrategy", "CAPACITY_AWARE"),  # choice 19: capacity-aware routing
}


def _walk(shape, value, path: str, out: list[str]) -> None:
    t = shape.type_name
    if value is None:
        out.append(f"{path}: null is not a {t}")
        return
    if t == "structure":
        if not isinstance(value, dict):
            out.append(f"{path}: expected a structure ({shape.name}), got {type(value).__name__}")
            return
        members = shape.members
        for k in value:
            if k not in members and not k.startswith("__"):
                out.append(f"{path}.{k}: not a member of {shape.name}")
        for k in shape.required_members:
            if k not in value:
                out.append(f"{path}.{k}: required by {shape.name} but missing")
        for k, m in members.items():
            if k in value:
                _walk(m, value[k], f"{path}.{k}", out)
    elif t == "list":
        if not isinstance(value, list):
            out.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            _walk(shape.member, v, f"{path}[{i}]", out)
    elif t == "map":
        if not isinstance(value, dict):
            out.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for k, v in value.items():
            _walk(shape.value, v, f"{path}[{k!r}]", out)
    elif t == "string":
        if not isinstance(value, str):
            out.append(f"{path}: expected a string, got {value!r}")
        elif shape.enum and value not in shape.enum and (shape.name, value) not in EXTENSIONS:
            out.append(f"{path}: {value!r} is not in {shape.name}'s enum {shape.enum}")
    elif t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"{path}: expected an integer, got {value!r}")
    elif t in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(f"{path}: expected a number, got {value!r}")
    elif t == "boolean":
        if not isinstance(value, bool):
            out.append(f"{path}: expected true or false, got {value!r}")
    elif t == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            out.append(f"{path}: expected a timestamp, got {value!r}")
    elif t == "blob":
        if not isinstance(value, str):
            out.append(f"{path}: expected base64 text, got {value!r}")


def check(operation_model, body: bytes) -> list[str]:
    """The problems of one raw JSON answer to `operation_model`."""
    shape = operation_model.output_shape
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return [f"{operation_model.name}: the answer is not JSON: {body[:200]!r}"]
    if shape is None:
        return [] if data == {} else [f"{operation_model.name}: answers {data!r} but has no output shape"]
    out: list[str] = []
    _walk(shape, data, operation_model.name, out)
    return out


def _after_call(http_response, parsed, model, **_):
    if not 200 <= http_response.status_code < 300:
        return
    content_type = http_response.headers.get("content-type", "")
    if "json" not in content_type:
        return
    PROBLEMS.extend(check(model, http_response.content))


def watch(client) -> None:
    """Checks every answer `client` receives from now on (see the module's doc)."""
    # The runtime's answers are the model's bytes; S3's are XML (and objects' bytes).
    if client.meta.service_model.service_name in ("sagemaker-runtime", "s3"):
        return
    client.meta.events.register("after-call", _after_call)
