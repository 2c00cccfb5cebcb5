use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:done";

/// One request the receiver got: lower-cased headers and the body.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A subscriber on the loopback answering the statuses of `script` in turn (then 200).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

async fn receiver(script: Vec<u16>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(vec![]));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (seen, script) = (seen.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = vec![];
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                seen.lock().expect("lock").push(Got { path, headers, body });
                let status = script.lock().expect("lock").pop_front().unwrap_or(200);
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    Receiver { url, got }
}

fn config(url: &str, max_attempts: u32) -> NotificationsConfig {
    NotificationsConfig {
        topics: [(TOPIC.to_string(), url.to_string())].into_iter().collect(),
        max_attempts,
        backoff_initial_seconds: 0.02,
        backoff_max_seconds: 0.05,
        timeout_seconds: 5.0,
        signing_secret: None,
        retention_days: 1,
    }
}

fn note(endpoint: &str) -> Notification {
    Notification {
        topic_arn: TOPIC.into(),
        endpoint: endpoint.into(),
        inference_id: "inf-1".into(),
        message: r#"{"invocationStatus":"Completed"}"#.into(),
    }
}

type Events = Arc<Mutex<Vec<Event>>>;

fn start(n: &Arc<Notifier>) -> (Events, watch::Sender<bool>) {
    let events: Events = Arc::default();
    let sink = events.clone();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(n.clone().run(Arc::new(move |e| sink.lock().expect("lock").push(e)), rx));
    (events, stop)
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn kinds(events: &Events) -> Vec<String> {
    events.lock().expect("lock").iter().map(|e| e.kind.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_notification_is_posted_in_snss_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = receiver(vec![]).await;
    let mut cfg = config(&r.url, 3);
    cfg.signing_secret = Some("0123456789abcdef".into());
    let n = Arc::new(Notifier::open(&cfg, dir.path(), Clock::wall()).expect("open"));
    let (events, _stop) = start(&n);
    let id = n.publish(note("e")).await.expect("publish");
    let got = until("the POST", || r.got.lock().expect("lock").first().cloned()).await;
    assert_eq!(got.path, "/hook");
    assert_eq!(got.header("x-amz-sns-message-type"), Some("Notification"));
    assert_eq!(got.header("x-amz-sns-message-id"), Some(id.as_str()));
    assert_eq!(got.header("x-amz-sns-topic-arn"), Some(TOPIC));
    assert_eq!(got.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert!(
        got.header("x-amz-sns-subscription-arn")
            .is_some_and(|s| s.starts_with(TOPIC))
    );
    assert_eq!(
        got.header("x-spillway-signature").map(str::to_string),
        Some(deliver::signature("0123456789abcdef", got.body.as_bytes()))
    );
    let body: serde_json::Value = serde_json::from_str(&got.body).expect("json");
    assert_eq!(body["Type"], "Notification");
    assert_eq!(body["MessageId"], id.as_str());
    assert_eq!(body["TopicArn"], TOPIC);
    assert_eq!(body["Message"], r#"{"invocationStatus":"Completed"}"#);
    assert!(body.get("Subject").is_none() && body.get("Signature").is_none());
    until("the delivered event", || {
        kinds(&events)
            .contains(&"NotificationDelivered".to_string())
            .then_some(())
    })
    .await;
    let rec = n.list(Some(State::Delivered), Some("e"), 10).expect("list");
    assert_eq!(rec.len(), 1);
    assert_eq!((rec[0].message_id.as_str(), rec[0].attempts), (id.as_str(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_the_same_message_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = receiver(vec![500, 503, 404]).await;
    let n = Arc::new(Notifier::open(&config(&r.url, 5), dir.path(), Clock::wall()).expect("open"));
    let (events, _stop) = start(&n);
    let id = n.publish(note("e")).await.expect("publish");
    until("delivery", || {
        (n.list(Some(State::Delivered), None, 10).expect("list").len() == 1).then_some(())
    })
    .await;
    let got = r.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 4, "three failures, then 200");
    assert!(
        got.iter()
            .all(|g| g.header("x-amz-sns-message-id") == Some(id.as_str()))
    );
    // The row is updated before its event is recorded.
    let k = until("the delivered event", || {
        let k = kinds(&events);
        k.contains(&"NotificationDelivered".to_string()).then_some(k)
    })
    .await;
    assert_eq!(k.iter().filter(|k| *k == "NotificationFailed").count(), 3, "{k:?}");
    assert_eq!(k.last().map(String::as_str), Some("NotificationDelivered"));
    assert_eq!(n.list(None, None, 10).expect("list")[0].attempts, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_attempts_a_notification_is_a_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = receiver(vec![500; 10]).await;
    let n = Arc::new(Notifier::open(&config(&r.url, 3), dir.path(), Clock::wall()).expect("open"));
    let (events, _stop) = start(&n);
    n.publish(note("e")).await.expect("publish");
    let dead = until("the dead letter", || {
        n.list(Some(State::Dead), None, 10).expect("list").pop()
    })
    .await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 500 Internal Server Error"));
    assert_eq!(r.got.lock().expect("lock").len(), 3);
    let k = until("the dead-letter event", || {
        let k = kinds(&events);
        (k.len() == 3).then_some(k)
    })
    .await;
    assert_eq!(
        k,
        ["NotificationFailed", "NotificationFailed", "NotificationDeadLettered"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_url_is_recorded_not_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Arc::new(Notifier::open(&NotificationsConfig::default(), dir.path(), Clock::wall()).expect("open"));
    let (events, _stop) = start(&n);
    tokio::time::sleep(Duration::from_millis(50)).await;
    n.publish(note("e")).await.expect("publish is not refused");
    let dead = n.list(Some(State::Dead), Some("e"), 10).expect("list");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no URL is mapped"))
    );
    assert_eq!(kinds(&events), ["NotificationNotDelivered"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_notifications_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = receiver(vec![]).await;
    let cfg = config(&r.url, 3);
    let id = {
        // Published with no delivery task running: it stays pending in the file.
        let n = Notifier::open(&cfg, dir.path(), Clock::wall()).expect("open");
        let id = n.publish(note("e")).await.expect("publish");
        assert_eq!(n.list(Some(State::Pending), None, 10).expect("list").len(), 1);
        n.close();
        id
    };
    let n = Arc::new(Notifier::open(&cfg, dir.path(), Clock::wall()).expect("reopen"));
    let (_events, stop) = start(&n);
    let got = until("the POST after reopening", || {
        r.got.lock().expect("lock").first().cloned()
    })
    .await;
    assert_eq!(got.header("x-amz-sns-message-id"), Some(id.as_str()));
    stop.send_replace(true);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(n.path()).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_by_state_and_endpoint_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::open(&NotificationsConfig::default(), dir.path(), Clock::wall()).expect("open");
    let a = n.publish(note("a")).await.expect("publish");
    let b = n.publish(note("b")).await.expect("publish");
    let all: Vec<String> = n
        .list(None, None, 10)
        .expect("list")
        .into_iter()
        .map(|r| r.message_id)
        .collect();
    assert_eq!(all, [b.clone(), a.clone()]);
    assert_eq!(n.list(None, Some("a"), 10).expect("list")[0].message_id, a);
    assert!(n.list(Some(State::Pending), None, 10).expect("list").is_empty());
    assert_eq!(n.list(None, None, 1).expect("list").len(), 1);
    assert!(
        n.publish(Notification {
            topic_arn: String::new(),
            ..note("a")
        })
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_one_inference_twice_to_a_topic_stores_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::open(&NotificationsConfig::default(), dir.path(), Clock::wall()).expect("open");
    let first = n.publish(note("e")).await.expect("publish");
    let again = n
        .publish(Notification {
            message: "other text".into(),
            ..note("e")
        })
        .await
        .expect("publish");
    assert_eq!(first, again, "the first MessageId");
    let other_topic = Notification {
        topic_arn: "arn:aws:sns:us-east-1:123456789012:err".into(),
        ..note("e")
    };
    let test = Notification {
        inference_id: String::new(),
        ..note("e")
    };
    let mut ids = vec![first.clone()];
    for other in [other_topic, note("f"), test.clone(), test] {
        ids.push(n.publish(other).await.expect("publish"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        5,
        "a new id for another topic, another endpoint, and each test notification"
    );
    assert_eq!(n.list(None, None, 10).expect("list").len(), 5);
    // Concurrent publishes of one inference (likely one group commit) are stored once too.
    let (a, b) = tokio::join!(n.publish(note("g")), n.publish(note("g")));
    assert_eq!(a.expect("publish"), b.expect("publish"));
    assert_eq!(n.list(None, Some("g"), 10).expect("list").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // measures real elapsed time against a real socket's timeout
async fn a_subscriber_that_hangs_does_not_hold_up_another_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_url = format!("http://{}/", silent.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let r = receiver(vec![]).await;
    let slow = "arn:aws:sns:us-east-1:123456789012:slow";
    let mut cfg = config(&r.url, 3);
    cfg.timeout_seconds = 30.0;
    cfg.topics.insert(slow.into(), silent_url);
    let n = Arc::new(Notifier::open(&cfg, dir.path(), Clock::wall()).expect("open"));
    let (_events, _stop) = start(&n);
    n.publish(Notification {
        topic_arn: slow.into(),
        ..note("e")
    })
    .await
    .expect("publish");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    n.publish(note("e")).await.expect("publish");
    until("the other topic's delivery", || {
        (n.list(Some(State::Delivered), None, 10).expect("list").len() == 1).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(
        n.list(Some(State::Pending), None, 10).expect("list").len(),
        1,
        "the hung one is still in flight"
    );
}
