"""IAM and STS over the awsQuery protocol: boto3's `iam` and `sts` clients and the aws CLI against the
real server, every operation and its refusals, and identities surviving a restart.

Authentication is not enforced in these tests (any credentials are accepted), so the caller is
anonymous: STS answers the account's root identity."""

import json
import os
import pathlib
import stat
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

import spw

AWS = pathlib.Path(sys.executable).parent / "aws"
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "sagemaker:Describe*", "Resource": "*"}],
}


def iam(server):
    return server.client("iam")


def sts(server):
    return server.client("sts")


def err(call, *args, **kwargs):
    """Runs a call that must fail; returns (HTTP status, code, message)."""
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


def query(server, params: dict, headers: dict | None = None):
    """POST / with a form-encoded body; returns (status, lower-cased headers, parsed XML root)."""
    body = urllib.parse.urlencode(params).encode()
    h = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **(headers or {})}
    status, hdrs, raw = server.http("POST", "/", body, h)
    return status, {k.lower(): v for k, v in hdrs.items()}, ET.fromstring(raw)


def aws(server, *args, ok=True):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **spw.cli_environment(server),
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_PAGER": "",
    }
    cmd = [sys.executable, str(AWS), *args, "--output", "json"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, f"{' '.join(args)} -> rc={p.returncode}\n{p.stderr}"
    out = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, out, p.stderr


# --------------------------------------------------------------------------------------------
# users
# --------------------------------------------------------------------------------------------


def test_users_are_created_read_listed_and_deleted_as_iam_does(server):
    c = iam(server)
    u = c.create_user(UserName="alice", Path="/team-a/", Tags=[{"Key": "owner", "Value": "team-a"}])["User"]
    assert u["UserName"] == "alice" and u["Path"] == "/team-a/"
    assert u["Arn"] == f"arn:aws:iam::{spw.ACCOUNT}:user/team-a/alice"
    assert u["UserId"].startswith("AIDA") and len(u["UserId"]) == 20
    assert all(ch.isdigit() or "A" <= ch <= "Z" for ch in u["UserId"][4:])
    assert u["Tags"] == [{"Key": "owner", "Value": "team-a"}]
    assert u["CreateDate"].year >= 2024

    got = c.get_user(UserName="ALICE")["User"]  # names are found regardless of case
    assert {k: got[k] for k in ("UserName", "UserId", "Arn", "Path")} == {
        k: u[k] for k in ("UserName", "UserId", "Arn", "Path")
    }
    assert got["Tags"] == u["Tags"]

    assert err(c.create_user, UserName="Alice") == (409, "EntityAlreadyExists", "User with name Alice already exists.")
    assert err(c.get_user, UserName="nobody") == (404, "NoSuchEntity", "The user with name nobody cannot be found.")
    status, code, msg = err(c.create_user, UserName="bad name")
    assert (status, code) == (400, "ValidationError")
    assert msg == (
        "1 validation error detected: Value 'bad name' at 'userName' failed to satisfy constraint: "
        r"Member must satisfy regular expression pattern: [\w+=,.@-]+"
    )
    status, code, msg = err(c.create_user, UserName="p", Path="no-slashes")
    assert (status, code) == (400, "ValidationError") and "'path'" in msg

    for n in ["bob", "carol", "dave", "erin"]:
        c.create_user(UserName=n)
    names = [x["UserName"] for x in c.list_users()["Users"]]
    assert names == ["admin", "alice", "bob", "carol", "dave", "erin"]  # admin: made at first start
    assert [x["UserName"] for x in c.list_users(PathPrefix="/team-a/")["Users"]] == ["alice"]
    assert "Tags" not in c.list_users()["Users"][0]

    first = c.list_users(MaxItems=2)
    assert first["IsTruncated"] is True and len(first["Users"]) == 2
    second = c.list_users(MaxItems=2, Marker=first["Marker"])
    assert [x["UserName"] for x in second["Users"]] == ["bob", "carol"]
    paged = [x["UserName"] for p in c.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 2}) for x in p["Users"]]
    assert paged == names
    assert err(c.list_users, MaxItems=2, Marker="not-a-marker")[:2] == (400, "InvalidInput")

    c.delete_user(UserName="bob")
    assert err(c.delete_user, UserName="bob")[:2] == (404, "NoSuchEntity")
    assert "bob" not in [x["UserName"] for x in c.list_users()["Users"]]


def test_user_tags(server):
    c = iam(server)
    c.create_user(UserName="tagged")
    c.tag_user(UserName="tagged", Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    c.tag_user(UserName="tagged", Tags=[{"Key": "a", "Value": "one"}])
    assert c.list_user_tags(UserName="tagged")["Tags"] == [{"Key": "a", "Value": "one"}, {"Key": "b", "Value": "2"}]
    c.untag_user(UserName="tagged", TagKeys=["a"])
    out = c.list_user_tags(UserName="tagged")
    assert out["Tags"] == [{"Key": "b", "Value": "2"}] and out["IsTruncated"] is False
    assert err(c.tag_user, UserName="ghost", Tags=[{"Key": "a", "Value": "1"}])[:2] == (404, "NoSuchEntity")
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
    assert err(c.tag_user, UserName="tagged", Tags=many)[:2] == (409, "LimitExceeded")


# --------------------------------------------------------------------------------------------
# access keys
# --------------------------------------------------------------------------------------------


def test_access_keys_two_per_user_statuses_and_deletion(server):
    c = iam(server)
    c.create_user(UserName="svc")
    k1 = c.create_access_key(UserName="svc")["AccessKey"]
    assert k1["UserName"] == "svc" and k1["Status"] == "Active"
    assert k1["AccessKeyId"].startswith("AKIA") and len(k1["AccessKeyId"]) == 20
    assert k1["AccessKeyId"][4:].isalnum() and k1["AccessKeyId"][4:] == k1["AccessKeyId"][4:].upper()
    assert len(k1["SecretAccessKey"]) == 40
    k2 = c.create_access_key(UserName="svc")["AccessKey"]
    assert k2["SecretAccessKey"] != k1["SecretAccessKey"]
    assert err(c.create_access_key, UserName="svc") == (
        409,
        "LimitExceeded",
        "Cannot exceed quota for AccessKeysPerUser: 2",
    )

    listed = c.list_access_keys(UserName="svc")
    assert [k["AccessKeyId"] for k in listed["AccessKeyMetadata"]] == [k1["AccessKeyId"], k2["AccessKeyId"]]
    assert all("SecretAccessKey" not in k for k in listed["AccessKeyMetadata"])
    assert listed["IsTruncated"] is False

    c.update_access_key(UserName="svc", AccessKeyId=k1["AccessKeyId"], Status="Inactive")
    statuses = {k["AccessKeyId"]: k["Status"] for k in c.list_access_keys(UserName="svc")["AccessKeyMetadata"]}
    assert statuses == {k1["AccessKeyId"]: "Inactive", k2["AccessKeyId"]: "Active"}
    status, code, msg = err(c.update_access_key, UserName="svc", AccessKeyId=k1["AccessKeyId"], Status="Paused")
    assert (status, code) == (400, "ValidationError") and "[Active, Inactive]" in msg

    assert err(c.delete_user, UserName="svc") == (
        409,
        "DeleteConflict",
        "Cannot delete entity, must delete access keys first.",
    )
    missing = "AKIAAAAAAAAAAAAAAAAA"
    assert err(c.delete_access_key, UserName="svc", AccessKeyId=missing) == (
        404,
        "NoSuchEntity",
        f"The Access Key with id {missing} cannot be found.",
    )
    # A key is found only under its own user.
    c.create_user(UserName="other")
    assert err(c.delete_access_key, UserName="other", AccessKeyId=k1["AccessKeyId"])[:2] == (404, "NoSuchEntity")
    for k in (k1, k2):
        c.delete_access_key(UserName="svc", AccessKeyId=k["AccessKeyId"])
    assert c.list_access_keys(UserName="svc")["AccessKeyMetadata"] == []
    c.delete_user(UserName="svc")


@pytest.mark.unauthenticated
def test_operations_on_the_callers_own_user_need_a_user_caller(server):
    # Anonymous callers (authentication off) have no user: IAM's answer for non-user credentials.
    c = iam(server)
    for call in (c.get_user, c.list_access_keys, c.create_access_key):
        status, code, msg = err(call)
        assert (status, code, msg) == (400, "ValidationError", "Must specify userName when calling with non-User credentials")


# --------------------------------------------------------------------------------------------
# inline policies
# --------------------------------------------------------------------------------------------


def test_user_policies_round_trip_and_malformed_documents_name_the_line(server):
    c = iam(server)
    c.create_user(UserName="pol")
    c.put_user_policy(UserName="pol", PolicyName="read", PolicyDocument=json.dumps(POLICY))
    c.put_user_policy(UserName="pol", PolicyName="also", PolicyDocument=json.dumps(POLICY, indent=2))
    got = c.get_user_policy(UserName="pol", PolicyName="read")
    # botocore decodes IAM's URL-encoded document and parses the JSON.
    assert got["UserName"] == "pol" and got["PolicyName"] == "read"
    assert got["PolicyDocument"] == POLICY
    assert c.list_user_policies(UserName="pol")["PolicyNames"] == ["also", "read"]
    page = c.list_user_policies(UserName="pol", MaxItems=1)
    assert page["PolicyNames"] == ["also"] and page["IsTruncated"] is True

    broken = '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow",,}\n  ]\n}'
    status, code, msg = err(c.put_user_policy, UserName="pol", PolicyName="bad", PolicyDocument=broken)
    assert (status, code) == (400, "MalformedPolicyDocument")
    assert "line 4" in msg, msg
    assert "bad" not in c.list_user_policies(UserName="pol")["PolicyNames"]

    assert err(c.put_user_policy, UserName="ghost", PolicyName="p", PolicyDocument=json.dumps(POLICY))[:2] == (
        404,
        "NoSuchEntity",
    )
    assert err(c.get_user_policy, UserName="pol", PolicyName="nope") == (
        404,
        "NoSuchEntity",
        "The user policy with name nope cannot be found.",
    )
    assert err(c.delete_user, UserName="pol") == (409, "DeleteConflict", "Cannot delete entity, must delete policies first.")
    big = json.dumps({**POLICY, "Statement": [{**POLICY["Statement"][0], "Resource": "arn:aws:s3:::" + "x" * 2100}]})
    assert err(c.put_user_policy, UserName="pol", PolicyName="big", PolicyDocument=big) == (
        409,
        "LimitExceeded",
        "Maximum policy size of 2048 bytes exceeded for user pol",
    )
    c.delete_user_policy(UserName="pol", PolicyName="read")
    c.delete_user_policy(UserName="pol", PolicyName="also")
    assert err(c.delete_user_policy, UserName="pol", PolicyName="read")[:2] == (404, "NoSuchEntity")
    c.delete_user(UserName="pol")


# --------------------------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------------------------


def test_groups_members_and_group_policies(server):
    c = iam(server)
    g = c.create_group(GroupName="devs", Path="/eng/")["Group"]
    assert g["GroupName"] == "devs" and g["Path"] == "/eng/"
    assert g["Arn"] == f"arn:aws:iam::{spw.ACCOUNT}:group/eng/devs"
    assert g["GroupId"].startswith("AGPA") and len(g["GroupId"]) == 20
    assert err(c.create_group, GroupName="DEVS") == (409, "EntityAlreadyExists", "Group with name DEVS already exists.")
    assert err(c.get_group, GroupName="ops") == (404, "NoSuchEntity", "The group with name ops cannot be found.")

    c.create_user(UserName="u1")
    c.create_user(UserName="u2")
    c.add_user_to_group(GroupName="devs", UserName="u1")
    c.add_user_to_group(GroupName="devs", UserName="u2")
    c.add_user_to_group(GroupName="devs", UserName="u2")  # already a member: no change, no error
    got = c.get_group(GroupName="devs")
    assert got["Group"]["GroupId"] == g["GroupId"]
    assert [u["UserName"] for u in got["Users"]] == ["u1", "u2"] and got["IsTruncated"] is False
    assert [x["GroupName"] for x in c.list_groups_for_user(UserName="u1")["Groups"]] == ["devs"]
    assert err(c.add_user_to_group, GroupName="devs", UserName="ghost")[:2] == (404, "NoSuchEntity")
    assert err(c.add_user_to_group, GroupName="ghosts", UserName="u1")[:2] == (404, "NoSuchEntity")

    c.put_group_policy(GroupName="devs", PolicyName="read", PolicyDocument=json.dumps(POLICY))
    got = c.get_group_policy(GroupName="devs", PolicyName="read")
    assert got["GroupName"] == "devs" and got["PolicyDocument"] == POLICY
    assert c.list_group_policies(GroupName="devs")["PolicyNames"] == ["read"]
    assert err(c.put_group_policy, GroupName="devs", PolicyName="x", PolicyDocument="{nope")[:2] == (
        400,
        "MalformedPolicyDocument",
    )
    assert err(c.get_group_policy, GroupName="devs", PolicyName="x") == (
        404,
        "NoSuchEntity",
        "The group policy with name x cannot be found.",
    )

    assert err(c.delete_user, UserName="u1") == (
        409,
        "DeleteConflict",
        "Cannot delete entity, must remove users from group first.",
    )
    assert err(c.delete_group, GroupName="devs")[:2] == (409, "DeleteConflict")
    c.remove_user_from_group(GroupName="devs", UserName="u1")
    c.remove_user_from_group(GroupName="devs", UserName="u2")
    assert err(c.remove_user_from_group, GroupName="devs", UserName="u2")[:2] == (404, "NoSuchEntity")
    assert c.list_groups_for_user(UserName="u1")["Groups"] == []
    assert err(c.delete_group, GroupName="devs") == (409, "DeleteConflict", "Cannot delete entity, must delete policies first.")
    c.delete_group_policy(GroupName="devs", PolicyName="read")
    c.delete_group(GroupName="devs")
    assert err(c.get_group, GroupName="devs")[:2] == (404, "NoSuchEntity")
    c.delete_user(UserName="u1")


# --------------------------------------------------------------------------------------------
# STS and the wire
# --------------------------------------------------------------------------------------------


@pytest.mark.unauthenticated
def test_get_caller_identity_of_an_anonymous_caller_is_the_account_root(server):
    out = sts(server).get_caller_identity()
    assert out["Account"] == spw.ACCOUNT
    assert out["Arn"] == f"arn:aws:iam::{spw.ACCOUNT}:root"
    assert out["UserId"] == spw.ACCOUNT


def test_answers_are_iam_xml_and_unknown_actions_the_query_error(server):
    status, hdrs, root = query(server, {"Action": "CreateUser", "Version": "2010-05-08", "UserName": "raw"})
    assert status == 200 and hdrs["content-type"] == "text/xml"
    assert root.tag == f"{{{IAM_NS}}}CreateUserResponse"
    result = root.find(f"{{{IAM_NS}}}CreateUserResult/{{{IAM_NS}}}User")
    assert result.find(f"{{{IAM_NS}}}UserName").text == "raw"
    request_id = root.find(f"{{{IAM_NS}}}ResponseMetadata/{{{IAM_NS}}}RequestId").text
    assert request_id == hdrs["x-amzn-requestid"]

    status, _, root = query(server, {"Action": "DeleteUser", "Version": "2010-05-08", "UserName": "raw"})
    assert status == 200 and root.find(f"{{{IAM_NS}}}DeleteUserResult") is None

    status, hdrs, root = query(server, {"Action": "GetUser", "Version": "2010-05-08", "UserName": "raw"})
    assert status == 404 and hdrs["content-type"] == "text/xml"
    assert root.tag == f"{{{IAM_NS}}}ErrorResponse"
    e = root.find(f"{{{IAM_NS}}}Error")
    assert [e.find(f"{{{IAM_NS}}}{t}").text for t in ("Type", "Code", "Message")] == [
        "Sender",
        "NoSuchEntity",
        "The user with name raw cannot be found.",
    ]
    assert root.find(f"{{{IAM_NS}}}RequestId").text

    status, _, root = query(server, {"Action": "CreateRole", "Version": "2010-05-08", "RoleName": "r"})
    assert status == 400
    assert root.find(f"{{{IAM_NS}}}Error/{{{IAM_NS}}}Code").text == "InvalidAction"
    assert root.find(f"{{{IAM_NS}}}Error/{{{IAM_NS}}}Message").text == "Could not find operation CreateRole for version 2010-05-08"
    status, _, root = query(server, {"Action": "CreateUser", "Version": "2099-01-01", "UserName": "r"})
    assert status == 400 and root.find(f"{{{IAM_NS}}}Error/{{{IAM_NS}}}Code").text == "InvalidAction"

    status, _, root = query(server, {"Action": "GetCallerIdentity", "Version": "2011-06-15"})
    assert status == 200 and root.tag == f"{{{STS_NS}}}GetCallerIdentityResponse"
    assert root.find(f"{{{STS_NS}}}GetCallerIdentityResult/{{{STS_NS}}}Account").text == spw.ACCOUNT

    # The awsJson APIs on the same path are untouched.
    assert server.sm.list_models()["Models"] == []


def test_the_store_holding_secrets_is_private_to_its_owner(server):
    iam(server).create_user(UserName="k")
    iam(server).create_access_key(UserName="k")
    for name in ("spillway.db", "spillway.db-wal"):
        mode = stat.S_IMODE(os.stat(server.data_dir / name).st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    assert stat.S_IMODE(os.stat(server.data_dir).st_mode) & 0o077 == 0


# --------------------------------------------------------------------------------------------
# the aws CLI
# --------------------------------------------------------------------------------------------


def test_aws_cli_drives_iam_and_sts(server, tmp_path):
    _, out, _ = aws(server, "iam", "create-user", "--user-name", "cli-user", "--tags", "Key=owner,Value=team-b")
    assert out["User"]["Arn"] == f"arn:aws:iam::{spw.ACCOUNT}:user/cli-user"
    _, out, _ = aws(server, "iam", "get-user", "--user-name", "cli-user")
    assert out["User"]["Tags"] == [{"Key": "owner", "Value": "team-b"}]
    _, out, _ = aws(server, "iam", "create-access-key", "--user-name", "cli-user")
    key = out["AccessKey"]
    assert len(key["SecretAccessKey"]) == 40
    aws(server, "iam", "update-access-key", "--user-name", "cli-user", "--access-key-id", key["AccessKeyId"], "--status", "Inactive")
    _, out, _ = aws(server, "iam", "list-access-keys", "--user-name", "cli-user")
    assert [k["Status"] for k in out["AccessKeyMetadata"]] == ["Inactive"]

    doc = tmp_path / "policy.json"
    doc.write_text(json.dumps(POLICY, indent=2))
    aws(server, "iam", "put-user-policy", "--user-name", "cli-user", "--policy-name", "read", "--policy-document", f"file://{doc}")
    _, out, _ = aws(server, "iam", "get-user-policy", "--user-name", "cli-user", "--policy-name", "read")
    assert out["PolicyDocument"] == POLICY
    _, out, _ = aws(server, "iam", "list-user-policies", "--user-name", "cli-user")
    assert out["PolicyNames"] == ["read"]

    aws(server, "iam", "create-group", "--group-name", "cli-group")
    aws(server, "iam", "add-user-to-group", "--group-name", "cli-group", "--user-name", "cli-user")
    aws(server, "iam", "put-group-policy", "--group-name", "cli-group", "--policy-name", "gp", "--policy-document", f"file://{doc}")
    _, out, _ = aws(server, "iam", "get-group", "--group-name", "cli-group")
    assert [u["UserName"] for u in out["Users"]] == ["cli-user"]
    _, out, _ = aws(server, "iam", "list-groups-for-user", "--user-name", "cli-user")
    assert [g["GroupName"] for g in out["Groups"]] == ["cli-group"]
    _, out, _ = aws(server, "iam", "list-users")
    assert [u["UserName"] for u in out["Users"]] == ["admin", "cli-user"]

    rc, _, stderr = aws(server, "iam", "delete-user", "--user-name", "cli-user", ok=False)
    assert rc != 0 and "DeleteConflict" in stderr and "must delete policies first" in stderr
    rc, _, stderr = aws(server, "iam", "get-user", "--user-name", "nobody", ok=False)
    assert rc != 0 and "NoSuchEntity" in stderr and "The user with name nobody cannot be found." in stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{\n"Version": "2012-10-17",\n"Statement": [ }\n')
    rc, _, stderr = aws(
        server, "iam", "put-user-policy", "--user-name", "cli-user", "--policy-name", "bad", "--policy-document", f"file://{bad}", ok=False
    )
    assert rc != 0 and "MalformedPolicyDocument" in stderr and "line 3" in stderr

    aws(server, "iam", "remove-user-from-group", "--group-name", "cli-group", "--user-name", "cli-user")
    aws(server, "iam", "delete-group-policy", "--group-name", "cli-group", "--policy-name", "gp")
    aws(server, "iam", "delete-group", "--group-name", "cli-group")
    aws(server, "iam", "delete-user-policy", "--user-name", "cli-user", "--policy-name", "read")
    aws(server, "iam", "delete-access-key", "--user-name", "cli-user", "--access-key-id", key["AccessKeyId"])
    aws(server, "iam", "delete-user", "--user-name", "cli-user")
    _, out, _ = aws(server, "iam", "list-users")
    assert [u["UserName"] for u in out["Users"]] == ["admin"]

    _, out, _ = aws(server, "sts", "get-caller-identity")
    assert out["Account"] == spw.ACCOUNT and out["Arn"] == f"arn:aws:iam::{spw.ACCOUNT}:user/admin"


# --------------------------------------------------------------------------------------------
# durability
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_identities_survive_a_restart(start_server, stop):
    srv = start_server()
    c = iam(srv)
    c.create_user(UserName="durable", Path="/d/", Tags=[{"Key": "owner", "Value": "x"}])
    key = c.create_access_key(UserName="durable")["AccessKey"]
    c.update_access_key(UserName="durable", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    c.put_user_policy(UserName="durable", PolicyName="p", PolicyDocument=json.dumps(POLICY))
    c.create_group(GroupName="g")
    c.add_user_to_group(GroupName="g", UserName="durable")
    c.put_group_policy(GroupName="g", PolicyName="gp", PolicyDocument=json.dumps(POLICY))
    before = c.get_user(UserName="durable")["User"]

    if stop == "sigkill":
        srv.sigkill()
    else:
        assert srv.terminate() == 0
    srv.restart()

    c = iam(srv)
    after = c.get_user(UserName="durable")["User"]
    assert after == before
    keys = c.list_access_keys(UserName="durable")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(key["AccessKeyId"], "Inactive")]
    assert c.get_user_policy(UserName="durable", PolicyName="p")["PolicyDocument"] == POLICY
    assert c.get_group_policy(GroupName="g", PolicyName="gp")["PolicyDocument"] == POLICY
    assert [u["UserName"] for u in c.get_group(GroupName="g")["Users"]] == ["durable"]
    # The quota counts the stored key.
    c.create_access_key(UserName="durable")
    assert err(c.create_access_key, UserName="durable")[:2] == (409, "LimitExceeded")
    assert err(c.create_user, UserName="DURABLE")[:2] == (409, "EntityAlreadyExists")
