#!/usr/bin/env python3
"""Write src/core/validate/botocore.json: the input constraints of every operation spillway
implements, taken from botocore's service models.

For each API (SageMaker, Application Auto Scaling, CloudWatch) the file lists the input shape of
every implemented operation and every shape reachable from those inputs, with the constraints
AWS checks before an operation runs: required members, `min`/`max` (lengths of strings, lists
and maps; values of numbers), `pattern` and `enum`. `src/core/validate/model.rs` walks a request
against it and reports every violation in AWS's words.

Besides botocore's model the file carries three things, each listed below and each marked in
the output:

* `pattern` is the pattern as AWS's messages print it. botocore dropped the `^`/`$` anchors
  that SageMaker's service model carries (botocore 1.34 still had them); where the anchored
  form differs only by its anchors, the anchored form is printed (ANCHORED below; the script
  refuses an entry that is not the model's pattern plus anchors).
* `regex` is the same pattern for Rust's regex engine (Java's `.`, `\\s`, `\\d`, `\\w` and
  `\\p{Print}` are ASCII-only or exclude line terminators; `\\uXXXX` surrogate pairs become
  code points; look-arounds are rewritten by hand, LOOKAROUND below). A value must match it
  whole, as Java's `Matcher.matches` does.
* spillway's extensions (EXTENSIONS below): values AWS does not accept that spillway does,
  each with the reason (`spillway` in the output).

Usage, from the repository root (the conformance venv has botocore 1.44.8):

    .venv/bin/python scripts/gen_validation_model.py          # rewrite the file
    .venv/bin/python scripts/gen_validation_model.py --check  # exit 1 if it is stale

tests/conformance/test_validation.py runs --check, so the file cannot drift from the model.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import botocore

OUT = Path(__file__).resolve().parents[1] / "src" / "core" / "validate" / "botocore.json"

# The operations each API implements (the `operations!` tables of src/api/; a Rust unit test
# checks that both lists agree).
SERVICES = {
    "sagemaker": (
        "sagemaker/2017-07-24",
        [
            "CreateModel", "DescribeModel", "DeleteModel", "ListModels",
            "CreateEndpointConfig", "DescribeEndpointConfig", "DeleteEndpointConfig", "ListEndpointConfigs",
            "CreateEndpoint", "DescribeEndpoint", "UpdateEndpoint", "DeleteEndpoint", "ListEndpoints",
            "UpdateEndpointWeightsAndCapacities", "AddTags", "ListTags", "DeleteTags",
            "CreateInferenceComponent", "DescribeInferenceComponent", "ListInferenceComponents",
            "UpdateInferenceComponent", "UpdateInferenceComponentRuntimeConfig", "DeleteInferenceComponent",
        ],
    ),
    "application-autoscaling": (
        "application-autoscaling/2016-02-06",
        [
            "RegisterScalableTarget", "DescribeScalableTargets", "DeregisterScalableTarget", "PutScalingPolicy",
            "DescribeScalingPolicies", "DeleteScalingPolicy", "DescribeScalingActivities",
            "TagResource", "UntagResource", "ListTagsForResource",
        ],
    ),
    "cloudwatch": ("cloudwatch/2010-08-01", [
        "GetMetricStatistics", "GetMetricData", "ListMetrics",
        "PutMetricAlarm", "DescribeAlarms", "DescribeAlarmsForMetric", "DeleteAlarms", "SetAlarmState",
        "DescribeAlarmHistory", "EnableAlarmActions", "DisableAlarmActions",
        "TagResource", "UntagResource", "ListTagsForResource",
    ]),
}

# Patterns as SageMaker's messages print them (botocore 1.34.0's models, which kept the
# service's anchors), for shapes whose pattern is otherwise unchanged.
ANCHORED = {
    ("sagemaker", "ContainerHostname"): "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    ("sagemaker", "Url"): "^(https|s3)://([^/]+)/?(.*)$",
    ("sagemaker", "S3ModelUri"): "^(https|s3)://([^/]+)/?(.*)$",
    ("sagemaker", "InferenceSpecificationName"): "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
    ("sagemaker", "RoleArn"): "^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$",
    ("sagemaker", "TagKey"): "^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$",
    ("sagemaker", "TagValue"): "^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$",
    ("sagemaker", "EndpointConfigName"): "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    ("sagemaker", "VariantName"): "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    ("sagemaker", "DestinationS3Uri"): "^(https|s3)://([^/])/?(.*)$",
    ("sagemaker", "CsvContentType"): "^[a-zA-Z0-9](-*[a-zA-Z0-9])*\\/[a-zA-Z0-9](-*[a-zA-Z0-9.])*",
    ("sagemaker", "JsonContentType"): "^[a-zA-Z0-9](-*[a-zA-Z0-9])*\\/[a-zA-Z0-9](-*[a-zA-Z0-9.])*",
    ("sagemaker", "ClarifyMimeType"): "^[a-zA-Z0-9](-*[a-zA-Z0-9])*\\/[a-zA-Z0-9](-*[a-zA-Z0-9+.])*",
    ("sagemaker", "EndpointName"): "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    ("sagemaker", "AlarmName"): "^(?!\\s*$).+",
    # as the API reference prints it (UpdateInferenceComponentRuntimeConfig)
    ("sagemaker", "InferenceComponentName"): "^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?$",
}

# Java look-arounds, which Rust's regex engine lacks, rewritten without them (same language).
NOT_LINE_END = "[^\\n\\r\\x{85}\\x{2028}\\x{2029}]"
LOOKAROUND = {
    # one or more characters other than line terminators, not all of them whitespace
    "(?!\\s*$).+": f"{NOT_LINE_END}*[^\\t\\n\\x0B\\x0C\\r \\x{{85}}\\x{{2028}}\\x{{2029}}]{NOT_LINE_END}*",
    # an optional SageMaker ARN prefix, a name of 1 to 63 characters that does not end in '-',
    # an optional version
    "(arn:aws[a-z\\-]*:sagemaker:[a-z0-9\\-]*:[0-9]{12}:[a-z\\-]*\\/)?([a-zA-Z0-9]([a-zA-Z0-9-]){0,62})(?<!-)(\\/[0-9]{1,9})?":
        "(arn:aws[a-z\\-]*:sagemaker:[a-z0-9\\-]*:[0-9]{12}:[a-z\\-]*/)?([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]{0,61}[a-zA-Z0-9])(/[0-9]{1,9})?",
    # '/' then one or more of [a-zA-Z0-9/_.-] with no '..'
    "/(?!.*\\.\\.)[a-zA-Z0-9/_.\\-]+": "/((\\.?[a-zA-Z0-9/_\\-])+\\.?|\\.)",
}

# spillway's extensions of the model: (service, shape) -> changes, each with its reason.
EXTENSIONS = {
    ("sagemaker", "RoutingStrategy"): {
        "enum_add": ["CAPACITY_AWARE"],
        "spillway": "CAPACITY_AWARE is spillway's routing strategy for mixed fleets (docs/api-compat.md, choice 19)",
    },
    ("sagemaker", "Url"): {
        "pattern": "^(https|s3)://([^/]+)/?(.*)$|^file://.*$",
        "regex": "(https|s3)://([^/]+)/?(.*)|file://.*",
        "spillway": "the local provider reads model data from file:// URLs",
    },
    ("sagemaker", "ContainerImage"): {
        "pattern": "[\\S\\s]+",
        "regex": "[\\S\\s]+",
        "spillway": "an Image is the command line a local instance runs (spaces between its words)",
    },
}

KNOWN_KEYS = {
    "type", "members", "member", "key", "value", "required", "min", "max", "pattern", "enum",
    "sensitive", "union", "documentation", "box", "exception", "error", "fault", "synthetic",
    "xmlOrder", "deprecated", "deprecatedMessage",
}
MEMBER_KEYS = {"shape", "documentation", "box", "deprecated", "deprecatedMessage", "idempotencyToken", "jsonvalue"}


def load(rel: str) -> dict:
    path = Path(botocore.__file__).parent / "data" / rel / "service-2.json.gz"
    with gzip.open(path) as f:
        return json.load(f)


def strip_anchors(p: str) -> str:
    return p.removeprefix("^").removesuffix("$")


def hexcp(cp: int) -> str:
    return "\\x{%X}" % cp


def to_rust(java: str) -> str:
    """Java regex to Rust regex (regex-syntax), same language, for a whole-input match."""
    if java in LOOKAROUND:
        return LOOKAROUND[java]
    if "(?" in java:
        raise SystemExit(f"pattern {java!r} has a construct to translate by hand (LOOKAROUND)")
    out, i, depth = [], 0, 0
    space = "\\t\\n\\x0B\\x0C\\r "
    while i < len(java):
        c = java[i]
        if c == "\\":
            nxt = java[i + 1]
            if nxt == "u":
                cp = int(java[i + 2:i + 6], 16)
                i += 6
                if 0xD800 <= cp <= 0xDBFF and java[i:i + 2] == "\\u":
                    low = int(java[i + 2:i + 6], 16)
                    if 0xDC00 <= low <= 0xDFFF:
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                out.append(hexcp(cp))
                continue
            if java.startswith("\\p{Print}", i):
                out.append("\\x20-\\x7E" if depth else "[\\x20-\\x7E]")
                i += len("\\p{Print}")
                continue
            table = {"s": space, "d": "0-9", "w": "a-zA-Z0-9_"}
            if nxt in table:
                out.append(table[nxt] if depth else f"[{table[nxt]}]")
            elif nxt.lower() in table:
                out.append(f"[^{table[nxt.lower()]}]")
            else:
                out.append(java[i:i + 2])
            i += 2
            continue
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        elif c == "." and not depth:
            out.append(NOT_LINE_END)
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def reachable(model: dict, ops: list[str]) -> list[str]:
    shapes, seen = model["shapes"], []

    def walk(name: str) -> None:
        if name in seen:
            return
        seen.append(name)
        s = shapes[name]
        for m in s.get("members", {}).values():
            walk(m["shape"])
        if "member" in s:
            walk(s["member"]["shape"])
        if "key" in s:
            walk(s["key"]["shape"])
            walk(s["value"]["shape"])

    for op in ops:
        walk(model["operations"][op]["input"]["shape"])
    return sorted(seen)


def shape_entry(service: str, name: str, s: dict) -> dict:
    unknown = set(s) - KNOWN_KEYS
    if unknown:
        raise SystemExit(f"{service}.{name}: unhandled keys {sorted(unknown)}")
    e: dict = {"type": s["type"]}
    if s["type"] == "structure":
        for m, ref in s["members"].items():
            extra = set(ref) - MEMBER_KEYS
            if extra:
                raise SystemExit(f"{service}.{name}.{m}: unhandled member keys {sorted(extra)}")
        e["members"] = [[m, ref["shape"]] for m, ref in s["members"].items()]
        if s.get("required"):
            e["required"] = s["required"]
        if s.get("union"):
            e["union"] = True
    elif s["type"] == "list":
        e["member"] = s["member"]["shape"]
    elif s["type"] == "map":
        e["key"] = s["key"]["shape"]
        e["value"] = s["value"]["shape"]
    for k in ("min", "max"):
        if k in s:
            e[k] = s[k]
    if "pattern" in s:
        printed = ANCHORED.get((service, name), s["pattern"])
        if printed != s["pattern"] and strip_anchors(printed) != s["pattern"]:
            raise SystemExit(f"{service}.{name}: ANCHORED {printed!r} is not the model's {s['pattern']!r} anchored")
        e["pattern"] = printed
        e["regex"] = to_rust(s["pattern"])
    if "enum" in s:
        e["enum"] = s["enum"]
    if s.get("sensitive"):
        e["sensitive"] = True
    ext = EXTENSIONS.get((service, name))
    if ext:
        for k, v in ext.items():
            if k == "enum_add":
                e["enum"] = e["enum"] + v
            else:
                e[k] = v
    return e


def generate() -> str:
    services = {}
    for service, (rel, ops) in SERVICES.items():
        model = load(rel)
        names = reachable(model, ops)
        for key in list(ANCHORED) + list(EXTENSIONS):
            if key[0] == service and key[1] not in names:
                raise SystemExit(f"{key}: no such shape among the inputs")
        services[service] = {
            "operations": {op: model["operations"][op]["input"]["shape"] for op in ops},
            "shapes": {n: shape_entry(service, n, model["shapes"][n]) for n in names},
        }
    # One shape per line: small diffs when botocore changes.
    lines = [
        "{",
        f'"generated_by": "scripts/gen_validation_model.py from botocore {botocore.__version__}; do not edit",',
        '"services": {',
    ]
    for si, (service, body) in enumerate(services.items()):
        lines.append(f'{json.dumps(service)}: {{')
        lines.append(f'"operations": {json.dumps(body["operations"])},')
        lines.append('"shapes": {')
        items = list(body["shapes"].items())
        for i, (n, e) in enumerate(items):
            comma = "," if i + 1 < len(items) else ""
            lines.append(f"{json.dumps(n)}: {json.dumps(e, ensure_ascii=False)}{comma}")
        lines.append("}")
        lines.append("}" + ("," if si + 1 < len(services) else ""))
    lines.append("}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 when the file differs from what botocore gives")
    args = ap.parse_args()
    text = generate()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run scripts/gen_validation_model.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} (botocore {botocore.__version__})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
