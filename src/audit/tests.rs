use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::json;

use super::*;

const T0: f64 = 1_796_022_000.0; // 2026-11-30T07:00:00Z
const ACCOUNT: &str = "123456789012";

fn rec(n: usize, name: &str, time: f64, user: Option<&str>, resources: &[&str], read_only: bool) -> Record {
    Record {
        event_version: record::EVENT_VERSION.into(),
        user_identity: match user {
            Some(u) => UserIdentity::iam_user(
                &format!("AIDA{u}"),
                &format!("arn:aws:iam::{ACCOUNT}:user/{u}"),
                ACCOUNT,
                &format!("AKIA{u}"),
                u,
            ),
            None => UserIdentity::anonymous(None),
        },
        event_time: format_time(time),
        event_source: event_source(if name.starts_with("Get") { "iam" } else { "sagemaker" }),
        event_name: name.into(),
        aws_region: "us-east-1".into(),
        source_ip_address: "127.0.0.1".into(),
        user_agent: "test".into(),
        error_code: None,
        error_message: None,
        request_parameters: Some(json!({"n": n})),
        response_elements: None,
        additional_event_data: None,
        request_id: format!("req-{n}"),
        event_id: format!("ev-{n}"),
        read_only,
        resources: resources.iter().map(|a| RecordResource::of_arn(a)).collect(),
        event_type: "AwsApiCall".into(),
        management_event: true,
        recipient_account_id: ACCOUNT.into(),
        event_category: "Management".into(),
    }
}

fn simple(n: usize, time: f64) -> Record {
    rec(n, "CreateModel", time, Some("alice"), &[], false)
}

fn dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit.db");
    (d, p)
}

const DAY: Duration = Duration::from_secs(86_400);

fn fault_of(path: &std::path::Path) -> Option<Fault> {
    AuditLog::open_read_only(path).unwrap().verify().unwrap().fault
}

fn all(log: &AuditLog) -> Vec<String> {
    let mut out = Vec::new();
    log.export(&mut out).unwrap();
    String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn appended_records_are_chained_and_exported_as_json_lines() {
    let (_d, p) = dir();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    for i in 0..5 {
        log.append(&simple(i, T0 + i as f64)).unwrap();
    }
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.head_seq), (5, 5));
    let lines = all(&log);
    assert_eq!(lines.len(), 5);
    let first: Record = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first, simple(0, T0));
    let mut out = Vec::new();
    assert_eq!(log.export_since(&mut out, Some(T0 + 3.0)).unwrap(), 2);
    // Reopening continues the chain.
    drop(log);
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    log.append(&simple(5, T0 + 5.0)).unwrap();
    assert!(log.verify().unwrap().is_ok());
    assert_eq!(log.verify().unwrap().records, 6);
}

#[test]
fn an_intent_left_by_a_crash_is_completed_on_open_as_outcome_unknown() {
    let (_d, p) = dir();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    log.append(&simple(0, T0)).unwrap();
    let done = log.begin(&simple(1, T0 + 1.0)).unwrap();
    let mut finished = simple(1, T0 + 1.0);
    finished.response_elements = Some(json!({"modelArn": "arn"}));
    log.complete(done, &finished).unwrap();
    let _lost = log.begin(&simple(2, T0 + 2.0)).unwrap();
    assert_eq!(all(&log).len(), 2, "an intent is not a record");
    drop(log); // The process "crashes": the intent is never completed.
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    let lines = all(&log);
    assert_eq!(lines.len(), 3);
    let r: Record = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(r.event_id, "ev-2");
    assert_eq!(r.error_code.as_deref(), Some(OUTCOME_UNKNOWN));
    assert!(r.error_message.unwrap().contains("unknown"));
    assert_eq!(r.additional_event_data, Some(json!({"outcomeUnknown": true})));
    let completed: Record = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(completed, finished);
    assert!(log.verify().unwrap().is_ok());
    let conn = Connection::open(&p).unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM intents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    drop(log);
    // Opening again completes nothing twice.
    assert_eq!(all(&AuditLog::open(&p, 90 * DAY).unwrap()).len(), 3);
}

#[test]
fn completing_twice_or_a_foreign_ticket_fails() {
    let (_d, p) = dir();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    assert!(log.complete(Ticket(99), &simple(0, T0)).is_err());
    // A bad job in a batch fails alone; the log stays whole.
    log.append(&simple(1, T0)).unwrap();
    assert!(log.verify().unwrap().is_ok());
    assert_eq!(all(&log).len(), 1);
}

#[test]
fn a_record_with_a_bad_event_time_is_refused() {
    let (_d, p) = dir();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    let mut r = simple(0, T0);
    r.event_time = "yesterday".into();
    assert!(matches!(log.append(&r), Err(AuditError::InvalidRecord(m)) if m.contains("eventTime")));
    assert!(matches!(log.begin(&r), Err(AuditError::InvalidRecord(_))));
}

#[test]
fn a_write_the_store_refuses_fails_the_call_and_the_chain_stays_whole() {
    let (_d, p) = dir();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    log.append(&simple(0, T0)).unwrap();
    let c = Connection::open(&p).unwrap();
    c.execute_batch("ALTER TABLE records RENAME TO hidden; DROP TABLE intents;")
        .unwrap();
    assert!(matches!(log.append(&simple(1, T0)), Err(AuditError::Storage(_))));
    assert!(matches!(log.begin(&simple(2, T0)), Err(AuditError::Storage(_))));
    c.execute_batch(
        "ALTER TABLE hidden RENAME TO records; CREATE TABLE intents (ticket INTEGER PRIMARY KEY, record TEXT NOT NULL);",
    )
    .unwrap();
    // The refused records took no place in the chain.
    log.append(&simple(3, T0)).unwrap();
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report}");
    let ids: Vec<String> = all(&log)
        .iter()
        .map(|l| serde_json::from_str::<Record>(l).unwrap().event_id)
        .collect();
    assert_eq!(ids, ["ev-0", "ev-3"]);
}

/// A log of 6 records, closed; the test then tampers with the file.
fn six() -> (tempfile::TempDir, PathBuf) {
    let (d, p) = dir();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    for i in 0..6 {
        log.append(&rec(i, "CreateModel", T0 + i as f64, Some("bob"), &[], false))
            .unwrap();
    }
    assert!(log.verify().unwrap().is_ok());
    (d, p)
}

#[test]
fn verify_finds_an_edited_record() {
    let (_d, p) = six();
    let c = Connection::open(&p).unwrap();
    c.execute(
        "UPDATE records SET record = replace(record, '\"n\":3', '\"n\":33') WHERE seq = 4",
        [],
    )
    .unwrap();
    let f = fault_of(&p).unwrap();
    assert_eq!(f.seq, 4);
    assert!(f.reason.contains("edited"), "{}", f.reason);
    // An edit that also recomputes the row's own hash breaks the next link.
    let (_d, p) = six();
    let c = Connection::open(&p).unwrap();
    let prev: Vec<u8> = c
        .query_row("SELECT hash FROM records WHERE seq = 3", [], |r| r.get(0))
        .unwrap();
    let text: String = c
        .query_row("SELECT record FROM records WHERE seq = 4", [], |r| r.get(0))
        .unwrap();
    let forged = text.replace("\"n\":3", "\"n\":33");
    c.execute(
        "UPDATE records SET record = ?1, hash = ?2 WHERE seq = 4",
        rusqlite::params![forged, &chain_hash(&prev, &forged)[..]],
    )
    .unwrap();
    assert_eq!(fault_of(&p).unwrap().seq, 5);
}

#[test]
fn verify_finds_an_edited_lookup_column() {
    let (_d, p) = six();
    let c = Connection::open(&p).unwrap();
    c.execute("UPDATE records SET username = 'mallory' WHERE seq = 2", [])
        .unwrap();
    let f = fault_of(&p).unwrap();
    assert_eq!(f.seq, 2);
    assert!(f.reason.contains("lookup columns"), "{}", f.reason);
}

#[test]
fn verify_finds_a_deleted_record() {
    let (_d, p) = six();
    let c = Connection::open(&p).unwrap();
    c.execute("DELETE FROM records WHERE seq = 3", []).unwrap();
    let f = fault_of(&p).unwrap();
    assert_eq!(f.seq, 3);
    assert!(f.reason.contains("missing"), "{}", f.reason);
    // The newest record gone: the head the log wrote says so.
    let (_d, p) = six();
    let c = Connection::open(&p).unwrap();
    c.execute("DELETE FROM records WHERE seq = 6", []).unwrap();
    let f = fault_of(&p).unwrap();
    assert_eq!(f.seq, 6);
    assert!(f.reason.contains("missing"), "{}", f.reason);
}

#[test]
fn verify_finds_reordered_records() {
    let (_d, p) = six();
    let c = Connection::open(&p).unwrap();
    c.execute_batch(
        "UPDATE records SET seq = -1 WHERE seq = 2;
         UPDATE records SET seq = 2 WHERE seq = 3;
         UPDATE records SET seq = 3 WHERE seq = -1;",
    )
    .unwrap();
    let f = fault_of(&p).unwrap();
    assert_eq!(f.seq, 2);
    assert!(f.reason.contains("prev_hash"), "{}", f.reason);
}

#[test]
fn retention_deletes_old_records_and_the_chain_stays_verifiable() {
    let (_d, p) = dir();
    let log = AuditLog::open(&p, Duration::from_secs(100)).unwrap();
    for i in 0..2500 {
        // Records 0..2000 at T0, the rest 1,000 s later.
        let t = if i < 2000 { T0 } else { T0 + 1000.0 };
        log.append(&simple(i, t)).unwrap();
    }
    assert_eq!(log.prune(T0 + 50.0).unwrap(), 0, "nothing is older than 100 s yet");
    assert_eq!(log.prune(T0 + 1050.0).unwrap(), 2000);
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.anchor_seq, report.records, report.head_seq), (2000, 500, 2500));
    log.append(&simple(9999, T0 + 1060.0)).unwrap();
    assert!(log.verify().unwrap().is_ok());
    // Everything deleted, then the chain continues from the anchor.
    assert_eq!(log.prune(T0 + 1_000_000.0).unwrap(), 501);
    assert!(log.verify().unwrap().is_ok());
    drop(log);
    let log = AuditLog::open(&p, Duration::from_secs(100)).unwrap();
    log.append(&simple(10_000, T0 + 2_000_000.0)).unwrap();
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.anchor_seq, report.records), (2501, 1));
    // Deleting the anchor is noticed.
    let c = Connection::open(&p).unwrap();
    c.execute("DELETE FROM anchor", []).unwrap();
    assert!(!log.verify().unwrap().is_ok());
}

#[test]
fn a_read_only_log_refuses_writes() {
    let (_d, p) = six();
    let ro = AuditLog::open_read_only(&p).unwrap();
    assert!(matches!(ro.append(&simple(0, T0)), Err(AuditError::ReadOnly)));
    assert!(ro.verify().unwrap().is_ok());
    assert!(AuditLog::open_read_only(&p.with_file_name("none.db")).is_err());
}

fn attr(key: &str, value: &str) -> Vec<LookupAttribute> {
    vec![LookupAttribute {
        key: key.into(),
        value: value.into(),
    }]
}

#[test]
fn lookups_are_refused_as_cloudtrail_refuses_them() {
    let (_d, p) = six();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    let err = |q: Lookup| log.lookup(&q).unwrap_err();
    let mut two = attr("EventName", "CreateModel");
    two.extend(attr("Username", "bob"));
    assert!(matches!(
        err(Lookup {
            attributes: two,
            ..Default::default()
        }),
        AuditError::InvalidLookupAttributes(_)
    ));
    assert!(matches!(
        err(Lookup { attributes: attr("Colour", "x"), ..Default::default() }),
        AuditError::InvalidLookupAttributes(m) if m.contains("AttributeKey")
    ));
    assert!(matches!(
        err(Lookup {
            attributes: attr("ReadOnly", "maybe"),
            ..Default::default()
        }),
        AuditError::InvalidLookupAttributes(_)
    ));
    for n in [0, 51, -1] {
        assert!(matches!(
            err(Lookup { max_results: Some(n), ..Default::default() }),
            AuditError::InvalidMaxResults(m) if m.contains("MaxResults")
        ));
    }
    assert!(matches!(
        err(Lookup {
            start_time: Some(T0 + 1.0),
            end_time: Some(T0),
            ..Default::default()
        }),
        AuditError::InvalidTimeRange(_)
    ));
    let page = log
        .lookup(&Lookup {
            max_results: Some(2),
            ..Default::default()
        })
        .unwrap();
    let token = page.next_token.unwrap();
    let forged = format!("2{}", &token[1..]); // another time, the same MAC
    for bad in [forged, "garbage".into(), String::new(), format!("{token}x")] {
        assert!(matches!(
            err(Lookup {
                next_token: Some(bad),
                ..Default::default()
            }),
            AuditError::InvalidNextToken(_)
        ));
    }
    // The token of one lookup does not continue another.
    assert!(matches!(
        err(Lookup { next_token: Some(token.clone()), attributes: attr("Username", "bob"), ..Default::default() }),
        AuditError::InvalidNextToken(m) if m.contains("same parameters")
    ));
    // ... but MaxResults may change.
    let rest = log
        .lookup(&Lookup {
            next_token: Some(token),
            max_results: Some(50),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rest.events.len(), 4);
    assert!(rest.next_token.is_none());
}

#[test]
fn an_event_carries_the_record_and_its_resources() {
    let (_d, p) = dir();
    let log = AuditLog::open(&p, 90 * DAY).unwrap();
    let arn = format!("arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/my-endpoint");
    let r = rec(1, "CreateEndpoint", T0, Some("carol"), &[&arn], false);
    log.append(&r).unwrap();
    for (k, v, hit) in [
        ("ResourceName", "my-endpoint", true),
        ("ResourceName", "My-Endpoint", true),
        ("ResourceName", arn.as_str(), true),
        ("ResourceName", "other", false),
        ("ResourceType", "AWS::SageMaker::Endpoint", true),
        ("ResourceType", "AWS::SageMaker::Model", false),
        ("Username", "carol", true),
        ("AccessKeyId", "AKIAcarol", true),
        ("EventSource", "sagemaker.amazonaws.com", true),
        ("ReadOnly", "false", true),
        ("ReadOnly", "true", false),
        ("EventId", "ev-1", true),
    ] {
        let page = log
            .lookup(&Lookup {
                attributes: attr(k, v),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.events.len(), usize::from(hit), "{k}={v}");
    }
    let e = &log.lookup(&Lookup::default()).unwrap().events[0];
    assert_eq!(e.event_time, T0 as i64);
    assert_eq!(e.username.as_deref(), Some("carol"));
    assert_eq!(
        e.resources,
        vec![EventResource {
            resource_type: "AWS::SageMaker::Endpoint".into(),
            resource_name: arn.clone()
        }]
    );
    assert_eq!(serde_json::from_str::<Record>(&e.cloud_trail_event).unwrap(), r);
    let v = serde_json::to_value(e).unwrap();
    for k in [
        "EventId",
        "EventName",
        "ReadOnly",
        "AccessKeyId",
        "EventTime",
        "EventSource",
        "Username",
        "Resources",
        "CloudTrailEvent",
    ] {
        assert!(v.get(k).is_some(), "{k} missing from {v}");
    }
}

const NAMES: &[&str] = &["CreateModel", "DeleteModel", "DescribeModel", "GetUser"];
const USERS: &[&str] = &["alice", "bob", "carol"];
const ARNS: &[&str] = &[
    "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e1",
    "arn:aws:sagemaker:us-east-1:123456789012:model/m1",
    "arn:aws:iam::123456789012:user/Alice",
];

/// The naive model: does record `r` match the attribute?
fn model_matches(r: &Record, a: Option<&LookupAttribute>) -> bool {
    let Some(a) = a else { return true };
    let v = a.value.as_str();
    match a.key.as_str() {
        "EventId" => r.event_id == v,
        "EventName" => r.event_name == v,
        "ReadOnly" => r.read_only.to_string() == v.to_ascii_lowercase(),
        "Username" => r.user_identity.user_name.as_deref() == Some(v),
        "AccessKeyId" => r.user_identity.access_key_id.as_deref() == Some(v),
        "EventSource" => r.event_source == v,
        "ResourceType" => r.resources.iter().any(|x| x.resource_type == v),
        "ResourceName" => r.resources.iter().any(|x| {
            x.name() == v
                || x.arn == v
                || (x.resource_type.starts_with("AWS::SageMaker::") && x.name() == v.to_lowercase())
        }),
        _ => unreachable!(),
    }
}

fn arb_attr() -> impl Strategy<Value = Option<LookupAttribute>> {
    let value = prop::sample::select(vec![
        "CreateModel",
        "GetUser",
        "alice",
        "bob",
        "AKIAbob",
        "true",
        "false",
        "e1",
        "E1",
        "m1",
        "Alice",
        "alice2",
        "ev-3",
        "sagemaker.amazonaws.com",
        "iam.amazonaws.com",
        "AWS::SageMaker::Model",
        "AWS::IAM::User",
        ARNS[0],
    ]);
    let key = prop::sample::select(KEYS_FOR_TEST.to_vec());
    prop::option::of((key, value).prop_map(|(k, v)| LookupAttribute {
        key: k.into(),
        value: v.into(),
    }))
}

const KEYS_FOR_TEST: &[&str] = &[
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn lookups_agree_with_a_naive_model(
        spec in prop::collection::vec(
            (0..NAMES.len(), prop::option::of(0..USERS.len()), 0u32..20, prop::collection::vec(0..ARNS.len(), 0..3), any::<bool>()),
            0..30,
        ),
        a in arb_attr(),
        start in prop::option::of(0u32..20),
        end in prop::option::of(0u32..20),
        page in 1i64..8,
    ) {
        let (_d, p) = dir();
        let log = AuditLog::open(&p, 90 * DAY).unwrap();
        let records: Vec<Record> = spec
            .iter()
            .enumerate()
            .map(|(i, (n, u, t, res, ro))| {
                let arns: Vec<&str> = res.iter().map(|&r| ARNS[r]).collect();
                rec(i, NAMES[*n], T0 + f64::from(*t), u.map(|u| USERS[u]), &arns, *ro)
            })
            .collect();
        // Appended from several threads at once, as the server does: the log's order is the
        // order of the writes, which the model reads back.
        let shared = Arc::new(log);
        std::thread::scope(|s| {
            for chunk in records.chunks(8) {
                let log = shared.clone();
                s.spawn(move || for r in chunk { log.append(r).unwrap() });
            }
        });
        let log = shared;
        let order: Vec<Record> = all(&log).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        prop_assert_eq!(order.len(), records.len());
        let q = Lookup {
            attributes: a.clone().into_iter().collect(),
            start_time: start.map(|s| T0 + f64::from(s)),
            end_time: end.map(|e| T0 + f64::from(e)),
            max_results: Some(page),
            next_token: None,
        };
        if let Some(a) = &a
            && a.key == "ReadOnly"
            && !matches!(a.value.to_ascii_lowercase().as_str(), "true" | "false")
        {
            prop_assert!(matches!(log.lookup(&q), Err(AuditError::InvalidLookupAttributes(_))));
            return Ok(());
        }
        if let (Some(s), Some(e)) = (start, end) && s > e {
            prop_assert!(matches!(log.lookup(&q), Err(AuditError::InvalidTimeRange(_))));
            return Ok(());
        }
        let mut want: Vec<(i64, usize, String)> = order
            .iter()
            .enumerate()
            .filter(|(_, r)| model_matches(r, a.as_ref()))
            .map(|(i, r)| (record::parse_time(&r.event_time).unwrap(), i, r.event_id.clone()))
            .filter(|(t, _, _)| start.is_none_or(|s| *t >= (T0 as i64) + i64::from(s)))
            .filter(|(t, _, _)| end.is_none_or(|e| *t <= (T0 as i64) + i64::from(e)))
            .collect();
        want.sort_by_key(|w| std::cmp::Reverse((w.0, w.1)));
        let want: Vec<String> = want.into_iter().map(|w| w.2).collect();
        let mut got = Vec::new();
        let mut q = q;
        loop {
            let pg = log.lookup(&q).unwrap();
            prop_assert!(pg.events.len() as i64 <= page);
            prop_assert!(pg.next_token.is_none() || pg.events.len() as i64 == page);
            got.extend(pg.events.into_iter().map(|e| e.event_id));
            match pg.next_token {
                Some(t) => q.next_token = Some(t),
                None => break,
            }
            prop_assert!(got.len() <= want.len());
        }
        prop_assert_eq!(got, want);
    }
}

/// Group commit: appends/s from one thread and from 8 at once. Run with
/// `cargo test --lib audit::tests::append_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
#[allow(clippy::disallowed_methods)] // Measures elapsed time.
fn append_throughput() {
    let (_d, p) = dir();
    let log = Arc::new(AuditLog::open(&p, 90 * DAY).unwrap());
    let n = 400;
    let t = std::time::Instant::now();
    for i in 0..n {
        log.append(&simple(i, T0)).unwrap();
    }
    let single = n as f64 / t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    std::thread::scope(|s| {
        for k in 0..8 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..n {
                    log.append(&simple(k * n + i, T0)).unwrap();
                }
            });
        }
    });
    let eight = (8 * n) as f64 / t.elapsed().as_secs_f64();
    println!("appends/s: 1 thread {single:.0}, 8 threads {eight:.0}");
    assert!(log.verify().unwrap().is_ok());
}
