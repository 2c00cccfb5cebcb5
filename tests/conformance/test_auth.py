"""Authentication and authorization (issue 13): every API refuses what AWS refuses, in AWS's
words, and a principal's policies decide exactly what it may do.

Requests are signed by botocore's own SigV4 signer; refusals are provoked by changing one thing
of an otherwise valid request."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import spw


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = spw.Server(tmp_path_factory.mktemp("auth"), spw.merge(spw.DEFAULT_CONFIG, {}))
    s.start()
    yield s
    problems = s.shutdown_and_check()
    assert not problems, problems


def raw(server, method, path, body=b"", headers=None, *, keys=None, service="sagemaker", region=spw.REGION,
        when: dt.datetime | None = None, mutate=None):
    """Sends one request signed by botocore (unless `keys` is False), after `mutate(headers)`
    changes what it likes; returns (status, headers, parsed body)."""
    headers = dict(headers or {})
    if keys is not False:
        creds = Credentials(*(keys or server.credentials))
        req = AWSRequest(method=method, url=server.url + path, data=body, headers=headers)
        signer = SigV4Auth(creds, service, region)
        if when is not None:
            # botocore reads the time from datetime.datetime.utcnow() via its own helper.
            import botocore.auth as ba

            real = ba.datetime.datetime

            class Frozen(real):
                @classmethod
                def utcnow(cls):
                    return when.replace(tzinfo=None)

                @classmethod
                def now(cls, tz=None):
                    return when if tz else when.replace(tzinfo=None)

            ba.datetime.datetime = Frozen
            try:
                signer.add_auth(req)
            finally:
                ba.datetime.datetime = real
        else:
            signer.add_auth(req)
        headers = dict(req.headers.items())
    if mutate:
        mutate(headers)
    r = urllib.request.Request(server.url + path, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            status, h, data = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, h, data = e.code, dict(e.headers), e.read()
    try:
        parsed = json.loads(data) if data else {}
    except ValueError:
        parsed = {"_raw": data.decode(errors="replace")}
    return status, {k.lower(): v for k, v in h.items()}, parsed


LIST = ("POST", "/", b"{}", {"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"})


def code_of(headers, body):
    return headers.get("x-amzn-errortype", "").split(":")[0] or body.get("__type", "")


def test_the_administrator_key_works_and_the_file_is_private(server):
    path = server.data_dir / "credentials"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert "[spillway]" in text and server.credentials[0] in text
    status, _, body = raw(server, *LIST)
    assert status == 200, body
    assert "Endpoints" in body


def test_boto3_works_with_the_printed_profile_and_no_arguments(server, monkeypatch):
    spw.use_only_the_printed_profile(server, monkeypatch)
    session = boto3.session.Session()
    assert session.client("sts").get_caller_identity()["Arn"].endswith(":user/admin")
    assert "Endpoints" in session.client("sagemaker").list_endpoints()


# What each refusal is, per API: (status, code, words in the message).
def test_missing_authentication(server):
    status, h, body = raw(server, *LIST, keys=False)
    assert (status, code_of(h, body)) == (400, "MissingAuthenticationTokenException"), (status, h, body)
    assert body["message"] == "Missing Authentication Token"


def test_unknown_key(server):
    status, h, body = raw(server, *LIST, keys=("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"))
    assert (status, code_of(h, body)) == (400, "UnrecognizedClientException"), (status, body)
    assert "The security token included in the request is invalid" in body["message"]


def test_bad_signature_names_the_canonical_request(server):
    keys = (server.credentials[0], "not-the-secret")
    status, h, body = raw(server, *LIST, keys=keys)
    assert (status, code_of(h, body)) == (400, "InvalidSignatureException"), (status, body)
    msg = body["message"]
    assert "The request signature we calculated does not match the signature you provided" in msg
    assert "The Canonical String for this request should have been" in msg
    assert "x-amz-target:SageMaker.ListEndpoints" in msg


def test_a_changed_body_breaks_the_signature(server):
    method, path, body, headers = LIST
    creds = Credentials(*server.credentials)
    req = AWSRequest(method=method, url=server.url + path, data=body, headers=dict(headers))
    SigV4Auth(creds, "sagemaker", spw.REGION).add_auth(req)
    r = urllib.request.Request(server.url + path, data=b'{"MaxResults": 1}', method=method, headers=dict(req.headers.items()))
    try:
        urllib.request.urlopen(r, timeout=10)
        raise AssertionError("a body the signature does not cover was accepted")
    except urllib.error.HTTPError as e:
        assert e.headers["x-amzn-errortype"].startswith("InvalidSignatureException")


def test_signature_expired(server):
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=6)
    status, h, body = raw(server, *LIST, when=when)
    assert (status, code_of(h, body)) == (400, "InvalidSignatureException"), (status, body)
    assert body["message"].startswith("Signature expired:"), body


def test_a_clock_within_five_minutes_is_accepted(server):
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=4)
    status, _, body = raw(server, *LIST, when=when)
    assert status == 200, body


@pytest.mark.parametrize(
    "region,service,words",
    [
        ("eu-west-1", "sagemaker", "Credential should be scoped to a valid region"),
        (spw.REGION, "s3", "Credential should be scoped to correct service"),
    ],
)
def test_wrong_scope(server, region, service, words):
    status, h, body = raw(server, *LIST, region=region, service=service)
    assert status in (400, 403), body
    assert code_of(h, body) in ("InvalidSignatureException", "IncompleteSignatureException"), body
    assert words in body["message"], body


def test_runtime_refusals_on_both_paths(server):
    """An invocation unsigned, or signed with a wrong key, is refused before anything about
    endpoints is told, on the fast path and (with a query the fast path does not take) on hyper."""
    for path in ("/endpoints/nope/invocations", "/endpoints/nope/invocations?x=1"):
        status, h, body = raw(server, "POST", path, b"hi", {"Content-Type": "text/plain"}, keys=False)
        assert status == 403 and code_of(h, body) == "MissingAuthenticationTokenException", (path, status, h, body)
        status, h, body = raw(server, "POST", path, b"hi", {"Content-Type": "text/plain"},
                              keys=(server.credentials[0], "wrong"))
        assert code_of(h, body) == "InvalidSignatureException", (path, status, body)
        # Signed properly: now the endpoint's absence may be told.
        status, h, body = raw(server, "POST", path, b"hi", {"Content-Type": "text/plain"})
        assert status == 400 and "not found" in json.dumps(body), (path, status, body)


def test_admin_api_is_signed_and_health_is_anonymous(server):
    status, _, _ = raw(server, "GET", "/_spillway/health", keys=False)
    assert status == 200
    status, h, body = raw(server, "GET", "/_spillway/capacity", keys=False)
    assert code_of(h, body) == "MissingAuthenticationTokenException"
    status, _, body = raw(server, "GET", "/_spillway/capacity", service="spillway")
    assert status == 200, body
    status, h, body = raw(server, "GET", "/metrics", keys=False)
    assert code_of(h, body) == "MissingAuthenticationTokenException"


def test_default_images_are_builtins_only(tmp_path):
    s = spw.Server(tmp_path, spw.merge({k: v for k, v in spw.DEFAULT_CONFIG.items() if k != "models"}, {}))
    s.start()
    try:
        sm = s.sm
        spw.create_model(sm, "ok")  # builtin:echo
        code, msg, _ = spw.error_of(spw.create_model, sm, "bad", image="sh -c 'id > /tmp/x'")
        assert code == "ValidationException"
        assert "allowed_images" in msg and "builtin:*" in msg
    finally:
        assert not s.shutdown_and_check()


# ---------------------------------------------------------------------------------------------
# policies


def make_user(server, name, policy: dict, tags=None):
    iam = server.client("iam")
    iam.create_user(UserName=name, Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()])
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def denied(fn, *a, **kw):
    with pytest.raises(ClientError) as e:
        fn(*a, **kw)
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDeniedException", err
    return err["Message"]


def test_a_team_scoped_reader_can_do_exactly_that(server):
    admin = server.sm
    for team in ("team-a", "team-b"):
        spw.create_model(admin, f"m-{team}")
        admin.create_endpoint_config(EndpointConfigName=f"c-{team}", ProductionVariants=[spw.single_variant(f"m-{team}")])
        admin.create_endpoint(EndpointName=f"ep-{team}", EndpointConfigName=f"c-{team}",
                              Tags=[{"Key": "owner", "Value": team}])
    for team in ("team-a", "team-b"):
        spw.wait_in_service(admin, f"ep-{team}")
    keys = make_user(server, "reader-a", {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["sagemaker:Describe*", "sagemaker:InvokeEndpoint"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/owner": "team-a"}},
        }],
    })
    sm = server.client("sagemaker", keys=keys)
    rt = server.client("sagemaker-runtime", keys=keys)
    assert sm.describe_endpoint(EndpointName="ep-team-a")["EndpointStatus"] == "InService"
    assert spw.invoke(rt, "ep-team-a", b"hi")[0]["body"] == "hi"
    msg = denied(sm.describe_endpoint, EndpointName="ep-team-b")
    assert msg == (
        f"User: arn:aws:iam::{spw.ACCOUNT}:user/reader-a is not authorized to perform: sagemaker:DescribeEndpoint "
        f"on resource: arn:aws:sagemaker:{spw.REGION}:{spw.ACCOUNT}:endpoint/ep-team-b because no identity-based "
        "policy allows the sagemaker:DescribeEndpoint action"
    )
    denied(spw.invoke, rt, "ep-team-b")
    denied(sm.list_endpoints)
    denied(sm.delete_endpoint, EndpointName="ep-team-a")
    denied(spw.create_model, sm, "mine")
    denied(sm.update_endpoint_weights_and_capacities, EndpointName="ep-team-a",
           DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}])
    assert admin.describe_endpoint(EndpointName="ep-team-a")["ProductionVariants"][0]["CurrentInstanceCount"] == 1


def test_owner_tags_are_enforced(server):
    keys = make_user(server, "builder", {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
            {
                "Sid": "RequireOwner",
                "Effect": "Deny",
                "Action": ["sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint"],
                "Resource": "*",
                "Condition": {"Null": {"aws:RequestTag/owner": "true"}},
            },
        ],
    })
    sm = server.client("sagemaker", keys=keys)
    msg = denied(spw.create_model, sm, "untagged")
    assert "with an explicit deny in an identity-based policy" in msg
    spw.create_model(sm, "tagged", Tags=[{"Key": "owner", "Value": "me"}])
    assert sm.list_tags(ResourceArn=spw.arn("model", "tagged"))["Tags"] == [{"Key": "owner", "Value": "me"}]


def test_an_exception_with_an_expiry(server):
    now = dt.datetime.now(dt.timezone.utc)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    keys = make_user(server, "temp", {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sagemaker:ListModels", "Resource": "*",
             "Condition": {"DateLessThan": {"aws:CurrentTime": iso(now + dt.timedelta(hours=1))}}},
            {"Effect": "Allow", "Action": "sagemaker:ListEndpoints", "Resource": "*",
             "Condition": {"DateLessThan": {"aws:CurrentTime": iso(now - dt.timedelta(hours=1))}}},
        ],
    })
    sm = server.client("sagemaker", keys=keys)
    sm.list_models()
    denied(sm.list_endpoints)


def test_instance_types_condition(server):
    keys = make_user(server, "cpu-only", {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "sagemaker:CreateEndpointConfig", "Resource": "*",
             "Condition": {"ForAnyValue:StringLike": {"sagemaker:InstanceTypes": ["ml.g*", "ml.p*"]}}},
        ],
    })
    sm = server.client("sagemaker", keys=keys)
    spw.create_model(sm, "cpu-m")
    sm.create_endpoint_config(EndpointConfigName="cpu-c", ProductionVariants=[spw.single_variant("cpu-m")])
    denied(sm.create_endpoint_config, EndpointConfigName="gpu-c", ProductionVariants=[spw.pooled_variant(
        "cpu-m", spw.pools(("ml.m5.xlarge", 1), ("ml.g6.2xlarge", 2)))])


def test_an_inactive_key_is_refused_and_a_deleted_one_too(server):
    keys = make_user(server, "rotating", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}]})
    sm = server.client("sagemaker", keys=keys)
    sm.list_models()
    iam = server.client("iam")
    iam.update_access_key(UserName="rotating", AccessKeyId=keys[0], Status="Inactive")
    with pytest.raises(ClientError) as e:
        sm.list_models()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    iam.update_access_key(UserName="rotating", AccessKeyId=keys[0], Status="Active")
    sm.list_models()
    iam.delete_access_key(UserName="rotating", AccessKeyId=keys[0])
    with pytest.raises(ClientError) as e:
        sm.list_models()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_key_material_is_never_logged(server):
    secret = server.credentials[1]
    logs = "".join(p.read_text(errors="replace") for p in server.log_paths)
    assert secret not in logs


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_signed_chunked_body_is_checked_whole_on_both_paths(start_server, fast_path):
    """A signature covers the body: a chunked body is read whole and hashed before the model
    sees any of it; a body that is not the signed one never reaches the model."""
    import socket

    server = start_server(config={"router": {"fast_path": fast_path}})
    spw.deploy_echo(server.sm, "chunky")
    spw.wait_in_service(server.sm, "chunky")
    path = "/endpoints/chunky/invocations"

    def send(signed_body: bytes, sent_body: bytes) -> tuple[int, bytes]:
        req = AWSRequest(method="POST", url=server.url + path, data=signed_body, headers={"Content-Type": "text/plain"})
        SigV4Auth(Credentials(*server.credentials), "sagemaker", spw.REGION).add_auth(req)
        head = f"POST {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in req.headers.items() if k.lower() != "content-length"
        ) + f"Host: 127.0.0.1:{server.port}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        half = len(sent_body) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (sent_body[:half], sent_body[half:]) if c) + b"0\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(head.encode() + chunks)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1])
        return status, data.split(b"\r\n\r\n", 1)[1]

    status, body = send(b"hello chunked world", b"hello chunked world")
    assert status == 200, body
    assert b"hello chunked world" in body
    status, body = send(b"hello chunked world", b"HELLO chunked world")
    assert status == 403 and b"InvalidSignatureException" in body, body


def test_iam_refusals_are_iams(server):
    keys = make_user(server, "no-iam", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}]})
    iam = server.client("iam", keys=keys)
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName="sneaky")
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDenied" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "is not authorized to perform: iam:CreateUser on resource: arn:aws:iam::" in err["Message"]
    # Anyone signed may ask who they are, whatever their policies say (as in AWS).
    me = server.client("sts", keys=keys).get_caller_identity()
    assert me["Arn"] == f"arn:aws:iam::{spw.ACCOUNT}:user/no-iam"


def test_every_refusal_and_change_is_in_the_audit_trail(server):
    """Refused authentications, denied calls and changes all land in LookupEvents, with who and
    from where, and no secret."""
    raw(server, *LIST, keys=("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"))
    keys = make_user(server, "auditee", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sagemaker:ListModels", "Resource": "*"}]})
    sm = server.client("sagemaker", keys=keys)
    denied(sm.list_endpoints)
    ct = server.client("cloudtrail")
    events = [json.loads(e["CloudTrailEvent"]) for e in ct.lookup_events(MaxResults=50)["Events"]]
    refused = [e for e in events if e.get("errorCode") == "UnrecognizedClientException"]
    assert refused and refused[0]["userIdentity"]["accessKeyId"] == "AKIAIOSFODNN7EXAMPLE", events[:3]
    assert refused[0]["eventName"] == "ListEndpoints" and refused[0]["sourceIPAddress"] == "127.0.0.1"
    denial = [e for e in events if e.get("errorCode") == "AccessDeniedException"]
    assert denial and denial[0]["userIdentity"]["userName"] == "auditee"
    created = [e for e in events if e["eventName"] == "CreateAccessKey"]
    assert created and "SecretAccessKey" not in json.dumps(created[0])
    assert keys[1] not in json.dumps(events)
    users = ct.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "auditee"}])["Events"]
    assert {e["EventName"] for e in users} >= {"ListEndpoints"}


def test_invocations_are_recorded_only_where_switched_on(server):
    """Data events: off by default; the tag `spillway:audit-invocations = enabled` records each
    invocation of that endpoint (who, how it ended; no body)."""
    admin = server.sm
    spw.create_model(admin, "m-data")
    for ep, tags in (("ep-loud", [{"Key": "spillway:audit-invocations", "Value": "enabled"}]), ("ep-quiet", [])):
        admin.create_endpoint_config(EndpointConfigName=f"c-{ep}", ProductionVariants=[spw.single_variant("m-data")])
        admin.create_endpoint(EndpointName=ep, EndpointConfigName=f"c-{ep}", Tags=tags)
    for ep in ("ep-loud", "ep-quiet"):
        spw.wait_in_service(admin, ep)
        spw.invoke(server.rt, ep, b"secret-payload")
    # A refused invocation of an audited endpoint is recorded too, without the canonical
    # request its answer quotes.
    status, _, _ = raw(server, "POST", "/endpoints/ep-loud/invocations", b"x", {"Content-Type": "text/plain"},
                       keys=(server.credentials[0], "wrong"))
    assert status == 403
    ct = server.client("cloudtrail")
    events = ct.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "InvokeEndpoint"}])["Events"]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    names = [r["requestParameters"]["endpointName"] for r in records]
    assert names == ["ep-loud", "ep-loud"], records
    refused, r = records
    assert refused["errorCode"] == "InvalidSignatureException"
    assert "Canonical String" not in refused["errorMessage"], refused
    assert refused["userIdentity"]["accessKeyId"] == server.credentials[0]
    assert r["eventCategory"] == "Data" and r["managementEvent"] is False
    assert r["userIdentity"]["userName"] == "admin"
    assert r["responseElements"]["invokedProductionVariant"] == "AllTraffic"
    assert "secret-payload" not in json.dumps(records)


# ---------------------------------------------------------------------------------------------
# what a review found: each a way around a policy, now closed


def test_iam_names_are_authorized_as_stored_whatever_their_case_or_path(server):
    iam = server.client("iam")
    iam.create_group(GroupName="admins", Path="/ops/")
    iam.put_group_policy(GroupName="admins", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    iam.create_user(UserName="vip", Path="/admins/")
    keys = make_user(server, "bob2", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:*", "Resource": [
            f"arn:aws:iam::{spw.ACCOUNT}:group/ops/admins", f"arn:aws:iam::{spw.ACCOUNT}:user/admins/*"]}]})
    bob = server.client("iam", keys=keys)
    for name in ("admins", "ADMINS", "Admins"):
        with pytest.raises(ClientError) as e:
            bob.add_user_to_group(GroupName=name, UserName="bob2")
        assert e.value.response["Error"]["Code"] == "AccessDenied", name
        assert "group/ops/admins with an explicit deny" in e.value.response["Error"]["Message"]
    for name in ("vip", "VIP"):
        with pytest.raises(ClientError) as e:
            bob.create_access_key(UserName=name)
        assert e.value.response["Error"]["Code"] == "AccessDenied", name
    assert iam.list_groups_for_user(UserName="bob2")["Groups"] == []
    assert iam.list_access_keys(UserName="vip")["AccessKeyMetadata"] == []


def test_sagemaker_names_differing_only_in_case_are_one_name(server):
    sm = server.sm
    spw.create_model(sm, "Casey", Tags=[{"Key": "env", "Value": "prod"}])
    code, msg, _ = spw.error_of(spw.create_model, sm, "casey", Tags=[{"Key": "env", "Value": "dev"}])
    assert code == "ValidationException" and "already existing model" in msg, msg
    assert sm.list_tags(ResourceArn=spw.arn("model", "Casey"))["Tags"] == [{"Key": "env", "Value": "prod"}]


def test_create_endpoint_needs_the_configuration_too(server):
    admin = server.sm
    spw.create_model(admin, "m-cfg")
    admin.create_endpoint_config(EndpointConfigName="gpu-cfg", ProductionVariants=[spw.single_variant("m-cfg")])
    keys = make_user(server, "deployer", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sagemaker:CreateEndpoint", "Resource": f"arn:aws:sagemaker:*:*:endpoint/*"}]})
    msg = denied(server.client("sagemaker", keys=keys).create_endpoint, EndpointName="sneaky", EndpointConfigName="gpu-cfg")
    assert "endpoint-config/gpu-cfg" in msg
    code, _, _ = spw.error_of(admin.describe_endpoint, EndpointName="sneaky")
    assert code == "ValidationException"


def test_headers_that_route_a_request_must_be_signed(server):
    """A captured request cannot be re-aimed: X-Amz-Target and Content-Type are signed, and the
    control plane takes no UNSIGNED-PAYLOAD."""
    method, path, body, headers = LIST
    req = AWSRequest(method=method, url=server.url + path, data=body, headers={"Content-Type": headers["Content-Type"]})
    SigV4Auth(Credentials(*server.credentials), "sagemaker", spw.REGION).add_auth(req)
    sent = dict(req.headers.items())
    sent["X-Amz-Target"] = "SageMaker.DeleteModel"  # not in SignedHeaders
    r = urllib.request.Request(server.url + path, data=body, method=method, headers=sent)
    try:
        urllib.request.urlopen(r, timeout=10)
        raise AssertionError("an unsigned X-Amz-Target was accepted")
    except urllib.error.HTTPError as e:
        assert e.headers["x-amzn-errortype"].startswith("IncompleteSignatureException")
        assert "x-amz-target is not signed" in json.loads(e.read())["message"]

    req = AWSRequest(method=method, url=server.url + path, data=body,
                     headers={**headers, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    SigV4Auth(Credentials(*server.credentials), "sagemaker", spw.REGION).add_auth(req)
    r = urllib.request.Request(server.url + path, data=body, method=method, headers=dict(req.headers.items()))
    try:
        urllib.request.urlopen(r, timeout=10)
        raise AssertionError("UNSIGNED-PAYLOAD was accepted by the control plane")
    except urllib.error.HTTPError as e:
        assert "UNSIGNED-PAYLOAD" in json.loads(e.read())["message"]


def test_iam_and_sts_each_need_their_own_scope(server):
    body = b"Action=ListUsers&Version=2010-05-08"
    status, _, raw_body = server.http("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    h = spw.signed_headers(server.url, "POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"},
                           server.credentials, service="sts")
    status, _, raw_body = server.http("POST", "/", body, h, sign=False)
    assert status == 403 and b"SignatureDoesNotMatch" in raw_body, raw_body


def test_the_trail_is_private_and_bounded(server):
    for name in ("audit.db", "audit.db-wal"):
        p = server.data_dir / name
        if p.exists():
            assert oct(p.stat().st_mode & 0o777) == "0o600", name
    raw(server, *LIST, keys=False, mutate=lambda h: h.update({"User-Agent": "x" * 60_000}))
    ct = server.client("cloudtrail")
    events = [json.loads(e["CloudTrailEvent"]) for e in ct.lookup_events(MaxResults=5)["Events"]]
    long_ones = [e for e in events if e["userAgent"].startswith("xxx")]
    assert long_ones and all(len(e["userAgent"]) <= 512 for e in long_ones)
