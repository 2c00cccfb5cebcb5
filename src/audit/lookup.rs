//! CloudTrail's `LookupEvents` over the audit log.
//!
//! Semantics, as AWS documents them:
//! - `LookupAttributes`: at most one attribute (none: every event); its key one of `EventId`,
//!   `EventName`, `ReadOnly` (`true`/`false`), `Username`, `ResourceType`, `ResourceName`,
//!   `EventSource`, `AccessKeyId`, matched exactly (case-sensitive). Anything else is
//!   `InvalidLookupAttributesException`.
//! - `ResourceName` matches a resource's ARN or its name (the ARN's part after the kind,
//!   `endpoint/<name>`). SageMaker lower-cases names in ARNs, so for SageMaker resources the
//!   name is also matched lower-cased (`MyEndpoint` finds `endpoint/myendpoint`); AWS is silent
//!   on this, and it is what a user of case-insensitive SageMaker names expects.
//! - `StartTime`/`EndTime`: inclusive bounds on `eventTime` (whole seconds); a start after the
//!   end is `InvalidTimeRangeException`.
//! - `MaxResults`: 1 to 50, default 50; otherwise `InvalidMaxResultsException`.
//! - Newest first (by `eventTime`, then by position in the log).
//! - `NextToken`: opaque to the client: the position after the page's last event, a
//!   fingerprint of the lookup's attribute and time range, and a keyed hash over both (the key
//!   is random per log file, stored in it). A token this log did not hand out, or one used with
//!   a different attribute or time range, is `InvalidNextTokenException`; `MaxResults` may
//!   change between pages.

use rusqlite::Connection;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AuditError;
use super::record::Record;

/// The most events one page holds (and the default).
pub const MAX_RESULTS: i64 = 50;

/// One lookup attribute, as the request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupAttribute {
    /// `AttributeKey`.
    pub key: String,
    /// `AttributeValue`.
    pub value: String,
}

/// A `LookupEvents` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lookup {
    /// `LookupAttributes` (at most one).
    pub attributes: Vec<LookupAttribute>,
    /// `StartTime`, epoch seconds, inclusive.
    pub start_time: Option<f64>,
    /// `EndTime`, epoch seconds, inclusive.
    pub end_time: Option<f64>,
    /// `MaxResults` (1..=50, default 50).
    pub max_results: Option<i64>,
    /// `NextToken` of the previous page.
    pub next_token: Option<String>,
}

/// A `LookupEvents` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Page {
    /// The events, newest first.
    pub events: Vec<Event>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One event of a `LookupEvents` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// The record's `eventID`.
    pub event_id: String,
    /// The record's `eventName`.
    pub event_name: String,
    /// `"true"` or `"false"`.
    pub read_only: String,
    /// The access key the call was signed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Epoch seconds.
    pub event_time: i64,
    /// The record's `eventSource`.
    pub event_source: String,
    /// The caller's user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The resources the call acted on.
    pub resources: Vec<EventResource>,
    /// The whole record, as JSON text.
    pub cloud_trail_event: String,
}

/// One resource of an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventResource {
    /// E.g. `AWS::SageMaker::Endpoint`.
    pub resource_type: String,
    /// The resource's ARN.
    pub resource_name: String,
}

/// The attribute keys `LookupEvents` takes, and the filter each is.
const KEYS: &[(&str, &str)] = &[
    ("EventId", "event_id = :v"),
    ("EventName", "event_name = :v"),
    ("ReadOnly", "read_only = :v"),
    ("Username", "username = :v"),
    ("ResourceType", "seq IN (SELECT seq FROM resources WHERE type = :v)"),
    (
        "ResourceName",
        "seq IN (SELECT seq FROM resources WHERE name = :v OR arn = :v \
         OR (type LIKE 'AWS::SageMaker::%' AND name = lower(:v)))",
    ),
    ("EventSource", "event_source = :v"),
    ("AccessKeyId", "access_key_id = :v"),
];

/// The validated filter of a lookup: SQL condition and value.
fn filter(q: &Lookup) -> Result<(&'static str, String), AuditError> {
    let attr = match q.attributes.as_slice() {
        [] => return Ok(("1", String::new())),
        [a] => a,
        more => {
            return Err(AuditError::InvalidLookupAttributes(format!(
                "LookupAttributes: only one lookup attribute is allowed per request, {} were given",
                more.len()
            )));
        }
    };
    let Some((_, sql)) = KEYS.iter().find(|(k, _)| *k == attr.key) else {
        return Err(AuditError::InvalidLookupAttributes(format!(
            "LookupAttributes.1.AttributeKey: {:?} is not a lookup attribute; use one of {}",
            attr.key,
            KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )));
    };
    if attr.value.is_empty() || attr.value.len() > 2000 {
        return Err(AuditError::InvalidLookupAttributes(
            "LookupAttributes.1.AttributeValue: must be 1 to 2000 characters long".into(),
        ));
    }
    let value = if attr.key == "ReadOnly" {
        match attr.value.to_ascii_lowercase().as_str() {
            v @ ("true" | "false") => v.to_string(),
            _ => {
                return Err(AuditError::InvalidLookupAttributes(format!(
                    "LookupAttributes.1.AttributeValue: ReadOnly is true or false, not {:?}",
                    attr.value
                )));
            }
        }
    } else {
        attr.value.clone()
    };
    Ok((sql, value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of what a token may be reused with: attribute and time range.
fn fingerprint(q: &Lookup) -> String {
    let mut h = Sha256::new();
    for a in &q.attributes {
        h.update(a.key.as_bytes());
        h.update([0]);
        h.update(a.value.as_bytes());
        h.update([0]);
    }
    h.update(format!("{:?}\0{:?}", q.start_time, q.end_time));
    hex(&h.finalize()[..8])
}

fn mac(key: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(payload.as_bytes());
    hex(&h.finalize()[..16])
}

fn make_token(key: &str, q: &Lookup, time: i64, seq: i64) -> String {
    let payload = format!("{time}.{seq}.{}", fingerprint(q));
    let m = mac(key, &payload);
    format!("{payload}.{m}")
}

/// The position (time, seq) a token resumes after.
fn read_token(key: &str, q: &Lookup, token: &str) -> Result<(i64, i64), AuditError> {
    let invalid = || AuditError::InvalidNextToken("NextToken: the token is not valid".into());
    let (payload, m) = token.rsplit_once('.').ok_or_else(invalid)?;
    let expected = mac(key, payload);
    // Compared without an early exit.
    if key.is_empty()
        || m.len() != expected.len()
        || m.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0
    {
        return Err(invalid());
    }
    let mut parts = payload.splitn(3, '.');
    let time: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(invalid)?;
    let seq: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(invalid)?;
    if parts.next() != Some(fingerprint(q).as_str()) {
        return Err(AuditError::InvalidNextToken(
            "NextToken: the token was handed out for a lookup with other LookupAttributes, StartTime or EndTime; \
             pass the same parameters with it"
                .into(),
        ));
    }
    Ok((time, seq))
}

/// Runs a lookup on a connection of the log.
pub(super) fn run(conn: &Connection, token_key: &str, q: &Lookup) -> Result<Page, AuditError> {
    let (cond, value) = filter(q)?;
    let n = q.max_results.unwrap_or(MAX_RESULTS);
    if !(1..=MAX_RESULTS).contains(&n) {
        return Err(AuditError::InvalidMaxResults(format!(
            "MaxResults: {n} is not valid; it must be between 1 and {MAX_RESULTS}"
        )));
    }
    if let (Some(s), Some(e)) = (q.start_time, q.end_time)
        && s > e
    {
        return Err(AuditError::InvalidTimeRange(
            "StartTime must not be after EndTime".into(),
        ));
    }
    let (after_time, after_seq) = match &q.next_token {
        Some(t) => read_token(token_key, q, t)?,
        None => (i64::MAX, i64::MAX),
    };
    let sql = format!(
        "SELECT seq, event_time, record FROM records WHERE {cond} \
         AND event_time >= :start AND event_time <= :end AND (event_time, seq) < (:t, :s) \
         ORDER BY event_time DESC, seq DESC LIMIT :n"
    );
    let mut stmt = conn.prepare(&sql)?;
    let (start, end, n1) = (q.start_time.unwrap_or(f64::MIN), q.end_time.unwrap_or(f64::MAX), n + 1);
    let mut params: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
        (":start", &start),
        (":end", &end),
        (":t", &after_time),
        (":s", &after_seq),
        (":n", &n1),
    ];
    if !value.is_empty() {
        params.push((":v", &value));
    }
    let mut rows = stmt.query(params.as_slice())?;
    let mut events = Vec::new();
    let mut last = None;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if events.len() as i64 == n {
            more = true;
            break;
        }
        let seq: i64 = row.get(0)?;
        let time: i64 = row.get(1)?;
        let text: String = row.get(2)?;
        let r: Record = serde_json::from_str(&text)
            .map_err(|e| AuditError::Storage(format!("record {seq} cannot be read: {e}")))?;
        events.push(Event {
            event_id: r.event_id,
            event_name: r.event_name,
            read_only: r.read_only.to_string(),
            access_key_id: r.user_identity.access_key_id,
            event_time: time,
            event_source: r.event_source,
            username: r.user_identity.user_name,
            resources: r
                .resources
                .into_iter()
                .map(|x| EventResource {
                    resource_type: x.resource_type,
                    resource_name: x.arn,
                })
                .collect(),
            cloud_trail_event: text,
        });
        last = Some((time, seq));
    }
    Ok(Page {
        events,
        next_token: match (more, last) {
            (true, Some((t, s))) => Some(make_token(token_key, q, t, s)),
            _ => None,
        },
    })
}
