"""SNS notifications (docs/async.md, "Notifications"): the real binary POSTs what is published to
a topic to the URL `[notifications] topics` maps it to, in SNS's HTTP(S) notification format,
retries with back-off, keeps dead letters readable through the admin API, records every outcome
as an endpoint event, and delivers after a SIGKILL what it had accepted before it.

Notifications are published here with `POST /_spillway/notifications/test` (the admin API's
`aws sns publish`), which goes through the same outbox and delivery task as the notifications of
asynchronous inference."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading

import pytest

import spw

TOPIC = "arn:aws:sns:us-east-1:123456789012:async-done"
UNMAPPED = "arn:aws:sns:us-east-1:123456789012:nobody-listens"


class Receiver:
    """A subscriber on the loopback: records every POST and answers `status(n)` to the n-th."""

    def __init__(self, status=lambda n: 200):
        self.status = status
        self.got: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    n = len(outer.got)
                    code = outer.status(n)
                    outer.got.append({
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body.decode(),
                        "answered": code,
                    })
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sns/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def posts(self) -> list[dict]:
        with self.lock:
            return list(self.got)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(status=lambda n: 200):
        r = Receiver(status)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def notify_config(url: str, **extra) -> dict:
    cfg = {"topics": {TOPIC: url}, "max_attempts": 3, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2}
    cfg.update(extra)
    return {"notifications": cfg}


def publish(server, message: str, topic: str = TOPIC, **extra):
    body = {"TopicArn": topic, "Message": message, **extra}
    return server.admin("POST", "notifications/test", body)


def notifications(server, query: str = "") -> list[dict]:
    return server.admin_get("notifications" + query)["notifications"]


def kinds(server, endpoint: str) -> list[str]:
    """The notification events of an endpoint name (none yet: the name is unknown, 404)."""
    status, body = server.admin("GET", f"endpoints/{endpoint}/events")
    if status == 404:
        return []
    assert status == 200, body
    return [e["kind"] for e in body["events"] if e["kind"].startswith("Notification")]


def test_a_notification_reaches_its_subscriber_in_snss_http_format(start_server, receiver):
    r = receiver()
    server = start_server(config=notify_config(r.url, signing_secret="a-secret-of-16-chars"))
    message = json.dumps({"invocationStatus": "Completed", "inferenceId": "i-1"})
    status, body = publish(server, message, Subject="a test", EndpointName="nt-shape")
    assert status == 200, body
    mid = body["MessageId"]
    post = spw.poll(lambda: (r.posts() or [None])[0], what="the subscriber to get the POST")
    h = post["headers"]
    assert post["path"] == "/sns/hook"
    assert h["x-amz-sns-message-type"] == "Notification"
    assert h["x-amz-sns-message-id"] == mid
    assert h["x-amz-sns-topic-arn"] == TOPIC
    assert h["x-amz-sns-subscription-arn"].startswith(TOPIC + ":")
    assert h["content-type"] == "text/plain; charset=UTF-8"
    want = "sha256=" + hmac.new(b"a-secret-of-16-chars", post["body"].encode(), hashlib.sha256).hexdigest()
    assert h["x-spillway-signature"] == want
    sns = json.loads(post["body"])
    assert list(sns) == ["Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp"], sns
    assert sns["Type"] == "Notification" and sns["MessageId"] == mid and sns["TopicArn"] == TOPIC
    assert sns["Subject"] == "a test" and sns["Message"] == message
    sent = dt.datetime.fromisoformat(sns["Timestamp"].replace("Z", "+00:00"))
    assert abs((spw.utcnow() - sent).total_seconds()) < 60 and sns["Timestamp"].endswith("Z"), sns["Timestamp"]
    spw.poll(lambda: "NotificationDelivered" in kinds(server, "nt-shape"), what="the delivered event")
    [rec] = notifications(server, "?state=delivered&endpoint=nt-shape")
    assert (rec["messageId"], rec["attempts"], rec["topicArn"]) == (mid, 1, TOPIC)
    # the publish is in the audit trail as a change
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "PublishTestNotification"}]
    )["Events"]
    assert events and events[0]["ReadOnly"] == "false", events


def test_a_failing_subscriber_is_retried_until_it_answers(start_server, receiver):
    r = receiver(lambda n: 500 if n < 2 else 200)
    server = start_server(config=notify_config(r.url))
    status, body = publish(server, "retry me", EndpointName="nt-retry")
    assert status == 200, body
    spw.poll(lambda: notifications(server, "?state=delivered"), what="delivery after two failures")
    posts = r.posts()
    assert [p["answered"] for p in posts] == [500, 500, 200]
    assert {p["headers"]["x-amz-sns-message-id"] for p in posts} == {body["MessageId"]}, "one MessageId on every retry"
    spw.poll(lambda: "NotificationDelivered" in kinds(server, "nt-retry"), what="the delivered event")
    assert kinds(server, "nt-retry") == ["NotificationFailed", "NotificationFailed", "NotificationDelivered"]
    assert notifications(server)[0]["attempts"] == 3


def test_a_subscriber_that_always_fails_leaves_a_dead_letter(start_server, receiver):
    r = receiver(lambda n: 503)
    server = start_server(config=notify_config(r.url))
    status, body = publish(server, "never lands", EndpointName="nt-dead")
    assert status == 200, body
    dead = spw.poll(lambda: notifications(server, "?state=dead"), what="the dead letter")
    assert [d["messageId"] for d in dead] == [body["MessageId"]]
    assert dead[0]["attempts"] == 3 and "503" in dead[0]["lastError"] and dead[0]["message"] == "never lands"
    assert len(r.posts()) == 3, "max_attempts = 3"
    spw.poll(lambda: "NotificationDeadLettered" in kinds(server, "nt-dead"), what="the dead-letter event")
    events = [e for e in server.events("nt-dead") if e["kind"] == "NotificationDeadLettered"]
    assert body["MessageId"] in events[0]["message"] and "state=dead" in events[0]["message"]
    assert notifications(server, "?state=pending") == [] and notifications(server, "?state=delivered") == []


def test_notifications_accepted_before_a_sigkill_are_delivered_after_restart(start_server, receiver):
    up = threading.Event()
    r = receiver(lambda n: 200 if up.is_set() else 503)
    server = start_server(config=notify_config(r.url, max_attempts=50, backoff_initial_seconds=0.5, backoff_max_seconds=1.0))
    ids = []
    for i in range(5):
        status, body = publish(server, f"message {i}", EndpointName="nt-crash")
        assert status == 200, body
        ids.append(body["MessageId"])
    # SIGKILL right after the last 200: each was durable before its answer
    server.sigkill()
    assert not any(p["answered"] == 200 for p in r.posts())
    up.set()
    server.restart()
    spw.poll(
        lambda: {p["headers"]["x-amz-sns-message-id"] for p in r.posts() if p["answered"] == 200} >= set(ids),
        timeout=30,
        what="every accepted notification to be delivered after the restart",
    )
    delivered = notifications(server, "?state=delivered&endpoint=nt-crash")
    assert sorted(d["messageId"] for d in delivered) == sorted(ids)
    assert sorted(json.loads(p["body"])["Message"] for p in r.posts() if p["answered"] == 200) == [
        f"message {i}" for i in range(5)
    ]


def test_a_sigkill_among_concurrent_publishes_loses_no_acknowledged_notification(start_server, receiver):
    """Publishes from 8 threads; SIGKILL once 20 were acknowledged. Every notification that got
    its 200 (its MessageId) is delivered after the restart; none is lost."""
    up = threading.Event()
    r = receiver(lambda n: 200 if up.is_set() else 503)
    server = start_server(config=notify_config(r.url, max_attempts=50, backoff_initial_seconds=0.5, backoff_max_seconds=1.0))
    acked: list[str] = []
    lock = threading.Lock()

    def one(i: int):
        try:
            status, body = publish(server, f"concurrent {i}", EndpointName="nt-load")
        except OSError:
            return  # the server was killed under this call: never acknowledged
        if status == 200:
            with lock:
                acked.append(body["MessageId"])

    def worker(first: int):
        for i in range(first, 200, 8):
            if not server.running():
                return
            one(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    spw.poll(lambda: len(acked) >= 20, what="20 acknowledged publishes")
    server.sigkill()
    for t in threads:
        t.join(timeout=30)
    ids = set(acked)
    assert len(ids) == len(acked) >= 20
    up.set()
    server.restart()
    spw.poll(
        lambda: {p["headers"]["x-amz-sns-message-id"] for p in r.posts() if p["answered"] == 200} >= ids,
        timeout=60,
        what="every acknowledged notification to be delivered after the restart",
    )
    delivered = {d["messageId"] for d in notifications(server, "?state=delivered&endpoint=nt-load&limit=1000")}
    assert ids <= delivered


def test_the_notification_operations_refuse_what_they_cannot_do(start_server, receiver):
    r = receiver()
    server = start_server(config=notify_config(r.url))
    # a topic no URL is mapped to: SNS's NotFound, nothing stored
    status, body = publish(server, "x", topic=UNMAPPED)
    assert status == 404 and "no URL is mapped" in json.dumps(body), body
    status, body = publish(server, "x", topic="arn:aws:sqs:us-east-1:123456789012:q")
    assert status == 400 and "TopicArn" in json.dumps(body), body
    status, body = server.admin("POST", "notifications/test", {"TopicArn": TOPIC})
    assert status == 400 and "Message" in json.dumps(body), body
    status, body = publish(server, "")
    assert status == 400, body
    for q in ("?state=lost", "?limit=0", "?colour=red"):
        status, body = server.admin("GET", "notifications" + q)
        assert status == 400, (q, body)
    assert notifications(server) == []
    assert r.posts() == []
    # a caller allowed to list but not to publish to this topic
    iam = server.client("iam")
    iam.create_user(UserName="nt-reader")
    iam.put_user_policy(
        UserName="nt-reader",
        PolicyName="read-only",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "spillway:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "spillway:PublishTestNotification", "Resource": TOPIC},
        ]}),
    )
    key = iam.create_access_key(UserName="nt-reader")["AccessKey"]
    keys = (key["AccessKeyId"], key["SecretAccessKey"])
    data = json.dumps({"TopicArn": TOPIC, "Message": "x"}).encode()
    status, _, raw = spw.poll(
        lambda: (lambda x: x if x[0] == 403 else None)(
            server.http("POST", "/_spillway/notifications/test", data, {"Content-Type": "application/json"}, keys=keys)
        ),
        what="the new key to be denied",
    )
    assert b"spillway:PublishTestNotification" in raw, raw
    assert server.http("GET", "/_spillway/notifications?state=dead", keys=keys)[0] == 200
    assert r.posts() == []
    # unsigned: refused like the rest of the admin API
    assert server.http("GET", "/_spillway/notifications", sign=False)[0] in (400, 403)
