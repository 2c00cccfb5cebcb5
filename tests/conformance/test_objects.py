"""The embedded object store's S3 API (`[storage] listen`, docs/async.md "Objects in and out"),
driven by boto3's `s3` client and the SageMaker SDK as users drive S3: signed by spillway's
keys, authorized by their IAM policies, audited; and `[auth] mode = "none"`."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

import spw


def code(fn, *a, **kw) -> str:
    with pytest.raises(ClientError) as e:
        fn(*a, **kw)
    return e.value.response["Error"]["Code"]


def test_boto3_round_trip_on_the_embedded_store(server, tmp_path):
    s3 = server.client("s3")
    assert code(s3.head_bucket, Bucket="inputs") in ("404", "NoSuchBucket")
    s3.create_bucket(Bucket="inputs")
    s3.head_bucket(Bucket="inputs")
    assert "inputs" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket="inputs").get("LocationConstraint") in (None, "")

    # botocore 1.44 sends a CRC32 checksum with every PutObject by default.
    body = json.dumps({"inputs": [1, 2, 3]}).encode()
    put = s3.put_object(Bucket="inputs", Key="req/1.json", Body=body, ContentType="application/json",
                        Metadata={"team": "a"})
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket="inputs", Key="req/1.json")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/json" and got["Metadata"] == {"team": "a"}
    head = s3.head_object(Bucket="inputs", Key="req/1.json")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    part = s3.get_object(Bucket="inputs", Key="req/1.json", Range="bytes=1-4")
    assert part["Body"].read() == body[1:5] and part["ContentRange"] == f"bytes 1-4/{len(body)}"

    # Keys are names, never paths: nothing escapes the store's directory.
    s3.put_object(Bucket="inputs", Key="../../escape.txt", Body=b"x")
    s3.put_object(Bucket="inputs", Key="req/2 + odd%key.json", Body=b"{}")
    assert not (server.data_dir / "escape.txt").exists() and not (server.workdir / "escape.txt").exists()
    assert s3.get_object(Bucket="inputs", Key="../../escape.txt")["Body"].read() == b"x"

    # Listing: prefixes, delimiters, pages (and v1's url encoding, which boto3 asks for).
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="inputs", Prefix="req/")["Contents"]]
    assert keys == ["req/1.json", "req/2 + odd%key.json"]
    top = s3.list_objects_v2(Bucket="inputs", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["../", "req/"]
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="inputs", PaginationConfig={"PageSize": 1})
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == ["../../escape.txt", "req/1.json", "req/2 + odd%key.json"]
    assert [o["Key"] for o in s3.list_objects(Bucket="inputs")["Contents"]][-1] == "req/2 + odd%key.json"

    # A file above s3transfer's multipart threshold (8 MiB) goes up in parts and comes back whole.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 << 20))
    s3.upload_file(str(big), "inputs", "big.bin")
    assert s3.head_object(Bucket="inputs", Key="big.bin")["ETag"].endswith('-2"')
    s3.download_file("inputs", "big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()

    assert code(s3.get_object, Bucket="inputs", Key="nope") == "NoSuchKey"
    assert code(s3.get_object, Bucket="no-such-bucket", Key="k") == "NoSuchBucket"
    assert code(s3.delete_bucket, Bucket="inputs") == "BucketNotEmpty"
    s3.delete_object(Bucket="inputs", Key="req/1.json")
    deleted = s3.delete_objects(Bucket="inputs", Delete={"Objects": [
        {"Key": "../../escape.txt"}, {"Key": "req/2 + odd%key.json"}, {"Key": "big.bin"}]})
    assert len(deleted["Deleted"]) == 3 and not deleted.get("Errors")
    s3.delete_bucket(Bucket="inputs")
    assert "inputs" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    # Every call is in the audit trail, as CloudTrail records S3 calls.
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "PutObject"}])["Events"]
    assert events and events[0]["Username"] == "admin"
    record = json.loads(events[0]["CloudTrailEvent"])
    assert record["eventSource"] == "s3.amazonaws.com" and record["eventCategory"] == "Data"
    assert record["requestParameters"]["bucketName"] == "inputs"
    assert any(r["ARN"].startswith("arn:aws:s3:::inputs/") for r in record["resources"])
    assert {r["type"] for r in record["resources"]} == {"AWS::S3::Object", "AWS::S3::Bucket"}


def test_aws_chunked_uploads_with_trailing_checksums(server):
    """botocore sends PutObject over https as `aws-chunked` with an unsigned trailer carrying the
    CRC32 (STREAMING-UNSIGNED-PAYLOAD-TRAILER); forced here over http, as it would come through
    a TLS proxy. The body is decoded and the trailer's checksum checked."""
    s3 = server.client("s3")
    s3.create_bucket(Bucket="chunked")
    sent = {}

    def to_trailer(params, context, **kw):
        context["checksum"]["request_algorithm"]["in"] = "trailer"

    def capture(request, **kw):
        sent.update({k.lower(): v for k, v in request.headers.items()})

    s3.meta.events.register("before-call.s3.PutObject", to_trailer)
    s3.meta.events.register("before-send.s3.PutObject", capture)
    body = b"hello chunked world " * 5000
    s3.put_object(Bucket="chunked", Key="k", Body=body)
    assert sent["x-amz-content-sha256"] == b"STREAMING-UNSIGNED-PAYLOAD-TRAILER" and sent["content-encoding"] == b"aws-chunked"
    assert s3.get_object(Bucket="chunked", Key="k")["Body"].read() == body

    def corrupt(request, **kw):
        data = request.body.read()
        request.body = data.replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32:AAAA")[:len(data)]

    s3.meta.events.register("before-send.s3.PutObject", corrupt)
    assert code(s3.put_object, Bucket="chunked", Key="bad", Body=b"x" * 100) == "BadDigest"
    assert code(s3.head_object, Bucket="chunked", Key="bad") in ("404", "NoSuchKey")


def test_acknowledged_objects_survive_sigkill_whole(server):
    """Puts from several threads while the server is SIGKILLed: after a restart every object whose
    PutObject was answered 200 reads back whole, nothing half-written is visible, and no
    temporary file is left."""
    import concurrent.futures
    import threading

    s3 = server.client("s3")
    s3.create_bucket(Bucket="crash")
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int):
        client = server.client("s3", retries=1)
        for i in range(10_000):
            if stop.is_set():
                return
            key, body = f"w{w}/{i}", (f"{w}-{i}-".encode() * 2000)
            try:
                client.put_object(Bucket="crash", Key=key, Body=body)
            except Exception:
                return  # the server is gone
            with lock:
                acked[key] = body

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(writer, w) for w in range(4)]
        spw.poll(lambda: len(acked) >= 40, timeout=60, what="40 acknowledged puts")
        server.sigkill()
        stop.set()
        for f in futures:
            f.result()
    server.restart()
    s3 = server.client("s3")
    for key, body in acked.items():
        assert s3.get_object(Bucket="crash", Key=key)["Body"].read() == body, key
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash"):
        for o in page.get("Contents", []):
            w, i = o["Key"][1:].split("/")
            assert o["Size"] == len(f"{w}-{i}-".encode() * 2000), o  # whole, or not there
    assert not list((server.data_dir / "objects" / "crash" / ".tmp").iterdir())


def test_unsigned_and_badly_signed_requests_are_refused_and_recorded(server):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="private")
    s3.put_object(Bucket="private", Key="secret.txt", Body=b"s3cr3t")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{server.storage_url}/private/secret.txt", timeout=5)
    assert e.value.code == 403 and b"AccessDenied" in e.value.read()
    unknown = server.client("s3", keys=("AKIAUNKNOWNKEY000000", "x" * 40))
    assert code(unknown.get_object, Bucket="private", Key="secret.txt") == "InvalidAccessKeyId"
    wrong = server.client("s3", keys=(server.credentials[0], "not-the-secret"))
    assert code(wrong.get_object, Bucket="private", Key="secret.txt") == "SignatureDoesNotMatch"
    # A presigned URL works (SigV4 in the query), and only for what it names. botocore presigns
    # with Signature Version 2 unless told otherwise; spillway accepts version 4 only.
    params = {"Bucket": "private", "Key": "secret.txt"}
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(s3.generate_presigned_url("get_object", Params=params, ExpiresIn=60), timeout=5)
    assert e.value.code == 400 and b"Signature Version 4 only" in e.value.read()
    import boto3
    from botocore.config import Config
    v4 = boto3.session.Session().client(
        "s3", endpoint_url=server.storage_url, region_name=spw.REGION, aws_access_key_id=server.credentials[0],
        aws_secret_access_key=server.credentials[1],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = v4.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert "X-Amz-Signature=" in url
    assert urllib.request.urlopen(url, timeout=5).read() == b"s3cr3t"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url.replace("secret.txt", "other.txt"), timeout=5)
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "GetObject"}])["Events"]
    refused = [json.loads(e["CloudTrailEvent"]) for e in events]
    assert any(r.get("errorCode") == "SignatureDoesNotMatch" for r in refused), refused
    assert any(r.get("errorCode") == "AccessDenied" and r["userIdentity"]["accountId"] == "ANONYMOUS_PRINCIPAL"
               for r in refused), refused


def make_user(server, name, policy: dict):
    iam = server.client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_iam_policies_decide_on_s3_actions_and_arns(server):
    admin = server.client("s3")
    admin.create_bucket(Bucket="shared")
    admin.put_object(Bucket="shared", Key="public/a.txt", Body=b"a")
    admin.put_object(Bucket="shared", Key="private/b.txt", Body=b"b")
    keys = make_user(server, "reader", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared/public/*"},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::shared/uploads/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::shared"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::shared/uploads/forbidden*"},
    ]})
    reader = server.client("s3", keys=keys)
    assert reader.get_object(Bucket="shared", Key="public/a.txt")["Body"].read() == b"a"
    assert reader.head_object(Bucket="shared", Key="public/a.txt")["ContentLength"] == 1
    assert len(reader.list_objects_v2(Bucket="shared")["Contents"]) == 2
    reader.put_object(Bucket="shared", Key="uploads/x", Body=b"x")
    with pytest.raises(ClientError) as e:
        reader.get_object(Bucket="shared", Key="private/b.txt")
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDenied" and "s3:GetObject" in err["Message"], err
    assert "arn:aws:s3:::shared/private/b.txt" in err["Message"]
    assert code(reader.put_object, Bucket="shared", Key="uploads/forbidden.txt", Body=b"") == "AccessDenied"
    assert code(reader.list_buckets) == "AccessDenied"
    assert code(reader.create_bucket, Bucket="mine") == "AccessDenied"
    assert code(reader.delete_objects, Bucket="shared", Delete={"Objects": [{"Key": "public/a.txt"}]}) == "AccessDenied"
    assert admin.get_object(Bucket="shared", Key="public/a.txt")["Body"].read() == b"a"
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "reader"}])["Events"]
    denied = [json.loads(e["CloudTrailEvent"]) for e in events if "AccessDenied" in e["CloudTrailEvent"]]
    assert {r["eventName"] for r in denied} >= {"GetObject", "PutObject", "ListBuckets", "CreateBucket", "DeleteObjects"}


def test_auth_mode_none_takes_any_key_on_loopback(start_server):
    server = start_server(config={"auth": {"mode": "none"}})
    s3 = server.client("s3", keys=("anything", "at-all"))
    s3.create_bucket(Bucket="open")
    s3.put_object(Bucket="open", Key="k", Body=b"v")
    assert s3.get_object(Bucket="open", Key="k")["Body"].read() == b"v"
    # Unsigned too, as on the main listener.
    assert urllib.request.urlopen(f"{server.storage_url}/open/k", timeout=5).read() == b"v"


def test_a_host_this_server_does_not_answer_for_is_refused(server):
    req = urllib.request.Request(f"{server.storage_url}/", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403 and b"is not a name this server answers for" in e.value.read()


def test_the_sagemaker_sdk_default_bucket_upload_and_download(server, monkeypatch, tmp_path):
    """`Session.default_bucket()` makes `sagemaker-<region>-<account>` (ListBuckets, CreateBucket,
    then owner checks with `ExpectedBucketOwner`), `upload_data` and `S3Downloader` move files,
    configured by the lines `serve` prints. The SDK asks STS for the account at
    `https://sts.<region>.amazonaws.com` whatever AWS_ENDPOINT_URL says (sagemaker.utils.
    sts_regional_endpoint), so here, as docs/async.md tells users, that one call is pointed at
    spillway; with the bucket named (`Session(default_bucket=...)`) no STS call is made at all."""
    spw.use_only_the_printed_profile(server, monkeypatch)
    assert os.environ["AWS_ENDPOINT_URL_S3"] == server.storage_url
    import sagemaker
    from sagemaker.s3 import S3Downloader, S3Uploader

    named = sagemaker.Session(default_bucket="async-io")
    assert named.default_bucket() == "async-io"
    assert "async-io" in [b["Name"] for b in server.client("s3").list_buckets()["Buckets"]]

    spw.sdk_sts_at_server(server, monkeypatch)
    session = sagemaker.Session()
    bucket = session.default_bucket()
    assert bucket == f"sagemaker-{spw.REGION}-{spw.ACCOUNT}"
    src = tmp_path / "payload.json"
    src.write_text('{"x": 1}')
    uri = session.upload_data(str(src), bucket=bucket, key_prefix="async/in")
    assert uri == f"s3://{bucket}/async/in/payload.json"
    assert S3Downloader.read_file(uri, sagemaker_session=session) == '{"x": 1}'
    S3Uploader.upload_string_as_file_body("out", f"s3://{bucket}/async/out/r.out", sagemaker_session=session)
    assert S3Downloader.list(f"s3://{bucket}/async/", sagemaker_session=session) == [
        f"s3://{bucket}/async/in/payload.json", f"s3://{bucket}/async/out/r.out"]
    S3Downloader.download(f"s3://{bucket}/async/out", str(tmp_path / "dl"), sagemaker_session=session)
    assert (tmp_path / "dl" / "r.out").read_text() == "out"
    # A second session finds the bucket it made, and passes its owner checks.
    assert sagemaker.Session().default_bucket() == bucket


def test_storage_configuration_is_checked_and_backend_s3_serves_no_s3_api(start_server, tmp_path):
    import subprocess

    def serve(toml: str, *extra):
        cfg = tmp_path / f"c{abs(hash(toml))}.toml"
        cfg.write_text(toml)
        return subprocess.run(
            [spw.BIN, "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{spw.free_port()}",
             "--data-dir", str(tmp_path / "data"), *extra],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    p = serve('[storage]\nbackend = "s3"\ns3_endpoint = "http://127.0.0.1:9"\n')
    assert p.returncode != 0 and "storage.allow_http" in p.stderr, p.stderr
    p = serve('[storage]\nbackend = "ftp"\n')
    assert p.returncode != 0 and "backend" in p.stderr, p.stderr
    p = serve('[auth]\nmode = "none"\n', "--storage-listen", "0.0.0.0:0")
    assert p.returncode != 0 and "refusing to serve the object store on 0.0.0.0:0" in p.stderr, p.stderr

    server = start_server(config={"storage": {"backend": "s3", "s3_endpoint": "http://127.0.0.1:9", "allow_http": True}})
    assert server.storage_port is None
    assert "AWS_ENDPOINT_URL_S3" not in server.log_tail(200)
