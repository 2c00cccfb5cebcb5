//! CloudWatch Logs (awsJson1_1, `X-Amz-Target: Logs_20140328.<Op>`, SigV4 service `logs`, as
//! botocore's `logs/2014-03-28/service-2.json` names it): the instances' output
//! ([`crate::logs`]) as SageMaker's log groups (`/aws/sagemaker/Endpoints/<endpoint>`) and
//! streams (`<variant>/<instance id>`).
//!
//! - `DescribeLogGroups`: ASCII order by name; `logGroupNamePrefix` (case-sensitive prefix) or
//!   `logGroupNamePattern` (case-sensitive substring; the answer then has only `arn`,
//!   `creationTime` and `logGroupName`, as AWS's), or `logGroupIdentifiers` (names or ARNs);
//!   `logGroupClass` (every group is `STANDARD`); `limit` 1..50, default 50.
//! - `DescribeLogStreams`: `orderBy` `LogStreamName` (default) or `LastEventTime` (not with
//!   `logStreamNamePrefix`), `descending`, `limit` 1..50 (default 50). A stream's `storedBytes`
//!   is 0, as AWS reports it since 2019 (the group's is the bytes on disk).
//! - `GetLogEvents`: `startTime` (inclusive) and `endTime` (exclusive) in ms, `limit` 1..10000
//!   (default: as many as fit), at most 1 MB a page (a message counts its bytes and 26);
//!   `startFromHead` (default false: the latest events). `nextForwardToken` and
//!   `nextBackwardToken` are never absent; at the end of the stream in a direction the token
//!   handed in comes back. A token's direction wins over `startFromHead`.
//! - `FilterLogEvents`: the group's streams (`logStreamNames`, 1..100, or
//!   `logStreamNamePrefix`, not both), `startTime` and `endTime` (both inclusive),
//!   `filterPattern` ([`crate::core::logs::FilterPattern`]), `limit` 1..10000 (default 10000),
//!   1 MB a page, interleaved across streams by timestamp (`interleaved` is ignored, as AWS has
//!   ignored it since 2019), `startFromHead` (default true; false: latest first, only with a
//!   `startTime` on or after 2024-01-01 if one is given). A `nextToken` is given when more
//!   matching events exist, and never otherwise. `searchedLogStreams` is an empty list, as AWS
//!   has answered since 2020.
//! - Tokens are opaque: a position and the request's parameters, sealed with a key of the data
//!   directory (HMAC-SHA-256). A token that was not handed out, was handed out for another
//!   stream, group or filter, or is garbled is `InvalidParameterException` ("The specified
//!   nextToken is invalid.").
//! - A group that does not exist is `ResourceNotFoundException` ("The specified log group does
//!   not exist."), a stream likewise; every other refusal is `InvalidParameterException`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::control::app::App;
use crate::core::iam::{Arns, Resource};
use crate::core::logs::{FilterPattern, endpoint_of_group, group_name};
use crate::core::validate::ValidationError;
use crate::error::{ApiError, ErrorCode};
use crate::logs::format::Position;
use crate::logs::store::{Cursor, Event, LogStore, StreamInfo};

/// The `X-Amz-Target` service prefix of CloudWatch Logs.
pub const TARGET_PREFIX: &str = "Logs_20140328";

crate::operations! {
    /// The CloudWatch Logs operations spillway implements, authorized as AWS does: on the log
    /// group's ARN (`arn:aws:logs:<region>:<account>:log-group:<name>`), `GetLogEvents` on the
    /// stream's (`…:log-group:<name>:log-stream:<stream>`), and `DescribeLogGroups`, which lists
    /// every group, on `arn:aws:logs:<region>:<account>:log-group::log-stream:` (the ARN AWS's
    /// refusals name: `*` and `…:log-group:*` allow it, a policy on some groups does not).
    pub(crate) enum LogsOp: "logs" {
        DescribeLogGroups(DescribeLogGroupsInput) => arn |_i, a| Resource::Arn(a.log_stream("", "")),
        DescribeLogStreams(DescribeLogStreamsInput) => arn |i, a| group_resource(a, i.log_group_name.as_deref(), i.log_group_identifier.as_deref()),
        GetLogEvents(GetLogEventsInput) => arn |i, a| Resource::Arn(a.log_stream(&named_group(i.log_group_name.as_deref(), i.log_group_identifier.as_deref()), &i.log_stream_name)),
        FilterLogEvents(FilterLogEventsInput) => arn |i, a| group_resource(a, i.log_group_name.as_deref(), i.log_group_identifier.as_deref()),
    }
}

/// CloudWatch Logs' reads carry no condition keys of their own.
impl super::ops::Conditions for LogsOp {}

/// A request that breaks a member's constraint is CloudWatch Logs' modelled
/// `InvalidParameterException` (its operations model no `ValidationException`).
pub(crate) fn parse_error(e: ApiError) -> ApiError {
    if e.code == ErrorCode::ValidationException {
        invalid(e.message)
    } else {
        e
    }
}

/// `DescribeLogGroups`' input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeLogGroupsInput {
    log_group_name_prefix: Option<String>,
    log_group_name_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
    log_group_class: Option<String>,
    log_group_identifiers: Option<Vec<String>>,
}

/// `DescribeLogStreams`' input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeLogStreamsInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    next_token: Option<String>,
    limit: Option<i64>,
}

/// `GetLogEvents`' input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetLogEventsInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

/// `FilterLogEvents`' input.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilterLogEventsInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

/// Runs one operation; the files are read on a blocking thread.
pub(crate) async fn dispatch(app: &Arc<App>, op: LogsOp) -> Result<Value, ApiError> {
    let store = app.logs.clone();
    let arns = app.arns();
    tokio::task::spawn_blocking(move || match op {
        LogsOp::DescribeLogGroups(i) => describe_log_groups(&store, &arns, i),
        LogsOp::DescribeLogStreams(i) => describe_log_streams(&store, &arns, i),
        LogsOp::GetLogEvents(i) => get_log_events(&store, &arns, i),
        LogsOp::FilterLogEvents(i) => filter_log_events(&store, &arns, i),
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the logs failed: {e}")))?
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameterException, message)
}

fn no_group() -> ApiError {
    ApiError::new(
        ErrorCode::ResourceNotFoundException,
        "The specified log group does not exist.",
    )
}

fn no_stream() -> ApiError {
    ApiError::new(
        ErrorCode::ResourceNotFoundException,
        "The specified log stream does not exist.",
    )
}

fn bad_token() -> ApiError {
    invalid("The specified nextToken is invalid.")
}

/// The most bytes of events one page holds.
const PAGE_BYTES: usize = 1_048_576;
/// The most events one page holds.
const MAX_EVENTS: i64 = 10_000;
/// The most groups or streams one page of a `Describe*` holds.
const MAX_DESCRIBE: i64 = 50;
/// 2024-01-01T00:00:00Z in ms: `FilterLogEvents` lists latest first only from then on.
const LATEST_FIRST_SINCE_MS: i64 = 1_704_067_200_000;

/// A `limit` within `1..=max` (the default when absent).
fn limit(value: Option<i64>, max: i64, default: i64) -> Result<usize, ApiError> {
    match value {
        None => Ok(default as usize),
        Some(v) if v < 1 => Err(invalid(
            ValidationError::constraint(v, "limit", "Member must have value greater than or equal to 1").0,
        )),
        Some(v) if v > max => Err(invalid(
            ValidationError::constraint(
                v,
                "limit",
                &format!("Member must have value less than or equal to {max}"),
            )
            .0,
        )),
        Some(v) => Ok(v as usize),
    }
}

/// A timestamp member: milliseconds, not negative.
fn timestamp(value: Option<i64>, field: &str) -> Result<Option<i64>, ApiError> {
    match value {
        Some(v) if v < 0 => Err(invalid(
            ValidationError::constraint(v, field, "Member must have value greater than or equal to 0").0,
        )),
        v => Ok(v),
    }
}

/// A log group name: 1..512 characters of `[\.\-_/#A-Za-z0-9]`.
fn check_group_name(name: &str, field: &str) -> Result<(), ApiError> {
    let ok = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'#'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            ValidationError::constraint(
                name,
                field,
                "Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+",
            )
            .0,
        ))
    }
}

/// A log stream name: 1..512 characters, none of them `:` or `*`.
fn check_stream_name(name: &str, field: &str) -> Result<(), ApiError> {
    if (1..=512).contains(&name.len()) && !name.contains([':', '*']) {
        Ok(())
    } else {
        Err(invalid(
            ValidationError::constraint(name, field, "Member must satisfy regular expression pattern: [^:*]*").0,
        ))
    }
}

/// The group name a `logGroupIdentifier` (a name, or an ARN with or without `:*`) names.
fn name_of_identifier(identifier: &str) -> Option<(&str, Option<(&str, &str)>)> {
    let Some(rest) = identifier.strip_prefix("arn:") else {
        return Some((identifier, None));
    };
    let mut parts = rest.splitn(5, ':');
    let (_partition, service, region, account) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let name = parts.next()?.strip_prefix("log-group:")?;
    let name = name.strip_suffix(":*").unwrap_or(name);
    (service == "logs").then_some((name, Some((region, account))))
}

/// The group a request names (best effort, for its IAM resource; the handler checks it).
fn named_group(name: Option<&str>, identifier: Option<&str>) -> String {
    name.or_else(|| identifier.and_then(|i| name_of_identifier(i).map(|(n, _)| n)))
        .unwrap_or_default()
        .to_string()
}

fn group_resource(arns: &Arns, name: Option<&str>, identifier: Option<&str>) -> Resource {
    Resource::Arn(arns.log_group(&named_group(name, identifier)))
}

/// The group a request names: exactly one of `logGroupName` and `logGroupIdentifier` (an ARN
/// of this server's region and account, or a name).
fn requested_group(arns: &Arns, name: Option<&str>, identifier: Option<&str>) -> Result<String, ApiError> {
    match (name, identifier) {
        (Some(_), Some(_)) => Err(invalid(
            "LogGroup name and LogGroup ARN are mutually exclusive parameters: specify logGroupName or logGroupIdentifier, not both",
        )),
        (None, None) => Err(invalid("Should provide either logGroupName or logGroupIdentifier.")),
        (Some(n), None) => {
            check_group_name(n, "logGroupName")?;
            Ok(n.to_string())
        }
        (None, Some(i)) => {
            let Some((n, scope)) = name_of_identifier(i) else {
                return Err(invalid(format!(
                    "logGroupIdentifier {i:?} is neither a log group name nor a log group ARN"
                )));
            };
            check_group_name(n, "logGroupIdentifier")?;
            if scope.is_some_and(|(region, account)| region != arns.region || account != arns.account_id) {
                return Err(no_group());
            }
            Ok(n.to_string())
        }
    }
}

/// The endpoint of an existing group.
fn existing_group<'g>(store: &LogStore, group: &'g str) -> Result<&'g str, ApiError> {
    endpoint_of_group(group)
        .filter(|e| store.group(e).is_some())
        .ok_or_else(no_group)
}

// ------------------------------------------------------------------------------------------
// tokens

type HmacSha256 = Hmac<Sha256>;

/// The bytes of a token's seal kept.
const SEAL_BYTES: usize = 16;

fn seal_mac(key: &[u8], kind: char, context: &str, payload: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(kind.to_string().as_bytes());
    m.update(&[0]);
    m.update(context.as_bytes());
    m.update(&[0]);
    m.update(payload);
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A token of `kind` (one letter) for `payload`, bound to `context`: `<kind>/<hex>`.
fn seal(key: &[u8], kind: char, context: &str, payload: &str) -> String {
    let tag = seal_mac(key, kind, context, payload.as_bytes()).finalize().into_bytes();
    format!("{kind}/{}{}", hex(payload.as_bytes()), hex(&tag[..SEAL_BYTES]))
}

/// The kind and payload of a token handed out for `context`, if it is one of `kinds`.
fn open(key: &[u8], token: &str, kinds: &[char], context: &str) -> Result<(char, String), ApiError> {
    let (kind, body) = token.split_once('/').ok_or_else(bad_token)?;
    let mut k = kind.chars();
    let kind = match (k.next(), k.next()) {
        (Some(c), None) if kinds.contains(&c) => c,
        _ => return Err(bad_token()),
    };
    let bytes = unhex(body).filter(|b| b.len() >= SEAL_BYTES).ok_or_else(bad_token)?;
    let (payload, tag) = bytes.split_at(bytes.len() - SEAL_BYTES);
    seal_mac(key, kind, context, payload)
        .verify_truncated_left(tag)
        .map_err(|_| bad_token())?;
    let payload = String::from_utf8(payload.to_vec()).map_err(|_| bad_token())?;
    Ok((kind, payload))
}

fn position_payload(p: Position) -> String {
    format!("{}:{}", p.seq, p.offset)
}

fn parse_position(s: &str) -> Option<Position> {
    let (seq, offset) = s.split_once(':')?;
    Some(Position {
        seq: seq.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

// ------------------------------------------------------------------------------------------
// DescribeLogGroups

fn describe_log_groups(store: &LogStore, arns: &Arns, i: DescribeLogGroupsInput) -> Result<Value, ApiError> {
    let limit = limit(i.limit, MAX_DESCRIBE, MAX_DESCRIBE)?;
    if i.log_group_name_prefix.is_some() && i.log_group_name_pattern.is_some() {
        return Err(invalid(
            "logGroupNamePrefix and logGroupNamePattern are mutually exclusive. Only one of these parameters can be passed.",
        ));
    }
    if i.log_group_identifiers.is_some() && (i.log_group_name_prefix.is_some() || i.log_group_name_pattern.is_some()) {
        return Err(invalid(
            "logGroupIdentifiers cannot be combined with logGroupNamePrefix or logGroupNamePattern",
        ));
    }
    if let Some(p) = &i.log_group_name_prefix {
        check_group_name(p, "logGroupNamePrefix")?;
    }
    let standard = match i.log_group_class.as_deref() {
        None | Some("STANDARD") => true,
        Some("INFREQUENT_ACCESS" | "DELIVERY" | "ESSENTIALS") => false,
        Some(other) => {
            return Err(invalid(
                ValidationError::constraint(
                    other,
                    "logGroupClass",
                    "Member must satisfy enum value set: [STANDARD, INFREQUENT_ACCESS, DELIVERY, ESSENTIALS]",
                )
                .0,
            ));
        }
    };
    let wanted: Option<Vec<String>> = i.log_group_identifiers.as_ref().map(|ids| {
        ids.iter()
            .filter_map(|id| match name_of_identifier(id)? {
                (n, None) => Some(n.to_string()),
                (n, Some((r, a))) => (r == arns.region && a == arns.account_id).then(|| n.to_string()),
            })
            .collect()
    });
    let context = format!(
        "{:?}\0{:?}\0{:?}\0{:?}",
        i.log_group_name_prefix, i.log_group_name_pattern, wanted, i.log_group_class
    );
    let after = match &i.next_token {
        Some(t) => Some(open(store.token_key(), t, &['g'], &context)?.1),
        None => None,
    };
    let brief = i.log_group_name_pattern.is_some();
    let mut groups: Vec<(String, crate::logs::store::GroupInfo)> = store
        .groups()
        .into_iter()
        .filter(|_| standard)
        .map(|g| (group_name(&g.endpoint), g))
        .filter(|(name, _)| i.log_group_name_prefix.as_deref().is_none_or(|p| name.starts_with(p)))
        .filter(|(name, _)| i.log_group_name_pattern.as_deref().is_none_or(|p| name.contains(p)))
        .filter(|(name, _)| wanted.as_ref().is_none_or(|w| w.contains(name)))
        .filter(|(name, _)| after.as_deref().is_none_or(|a| name.as_str() > a))
        .collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let more = groups.len() > limit;
    groups.truncate(limit);
    let list: Vec<Value> = groups
        .iter()
        .map(|(name, g)| {
            let arn = arns.log_group(name);
            if brief {
                json!({"logGroupName": name, "creationTime": g.creation_ms, "arn": format!("{arn}:*")})
            } else {
                json!({
                    "logGroupName": name,
                    "creationTime": g.creation_ms,
                    "metricFilterCount": 0,
                    "arn": format!("{arn}:*"),
                    "storedBytes": g.stored_bytes,
                    "logGroupClass": "STANDARD",
                    "logGroupArn": arn,
                })
            }
        })
        .collect();
    let mut out = json!({ "logGroups": list });
    if more && let Some((last, _)) = groups.last() {
        out["nextToken"] = json!(seal(store.token_key(), 'g', &context, last));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// DescribeLogStreams

fn describe_log_streams(store: &LogStore, arns: &Arns, i: DescribeLogStreamsInput) -> Result<Value, ApiError> {
    let group = requested_group(arns, i.log_group_name.as_deref(), i.log_group_identifier.as_deref())?;
    let limit = limit(i.limit, MAX_DESCRIBE, MAX_DESCRIBE)?;
    let by_time = match i.order_by.as_deref() {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(other) => {
            return Err(invalid(
                ValidationError::constraint(
                    other,
                    "orderBy",
                    "Member must satisfy enum value set: [LogStreamName, LastEventTime]",
                )
                .0,
            ));
        }
    };
    if by_time && i.log_stream_name_prefix.is_some() {
        return Err(invalid("Cannot order by LastEventTime with a logStreamNamePrefix."));
    }
    if let Some(p) = &i.log_stream_name_prefix {
        check_stream_name(p, "logStreamNamePrefix")?;
    }
    let descending = i.descending.unwrap_or(false);
    let endpoint = existing_group(store, &group)?;
    let context = format!("{group}\0{:?}\0{by_time}\0{descending}", i.log_stream_name_prefix);
    let key = |s: &StreamInfo| (if by_time { s.last_event_ms.unwrap_or(0) } else { 0 }, s.name.clone());
    let after = match &i.next_token {
        Some(t) => {
            let payload = open(store.token_key(), t, &['s'], &context)?.1;
            let (ts, name) = payload.split_once(':').ok_or_else(bad_token)?;
            Some((ts.parse::<i64>().map_err(|_| bad_token())?, name.to_string()))
        }
        None => None,
    };
    let mut streams: Vec<StreamInfo> = store
        .streams(endpoint)
        .ok_or_else(no_group)?
        .into_iter()
        .filter(|s| {
            i.log_stream_name_prefix
                .as_deref()
                .is_none_or(|p| s.name.starts_with(p))
        })
        .collect();
    streams.sort_by_key(|s| key(s));
    if descending {
        streams.reverse();
    }
    if let Some(a) = &after {
        streams.retain(|s| {
            let k = key(s);
            if descending { k < *a } else { k > *a }
        });
    }
    let more = streams.len() > limit;
    streams.truncate(limit);
    let list: Vec<Value> = streams
        .iter()
        .map(|s| {
            let mut v = json!({
                "logStreamName": s.name,
                "creationTime": s.creation_ms,
                "arn": arns.log_stream(&group, &s.name),
                "storedBytes": 0,
            });
            if let (Some(first), Some(last)) = (s.first_event_ms, s.last_event_ms) {
                v["firstEventTimestamp"] = json!(first);
                v["lastEventTimestamp"] = json!(last);
                v["lastIngestionTime"] = json!(last);
            }
            v
        })
        .collect();
    let mut out = json!({ "logStreams": list });
    if more && let Some(last) = streams.last() {
        let (ts, name) = key(last);
        out["nextToken"] = json!(seal(store.token_key(), 's', &context, &format!("{ts}:{name}")));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// GetLogEvents

fn get_log_events(store: &LogStore, arns: &Arns, i: GetLogEventsInput) -> Result<Value, ApiError> {
    let group = requested_group(arns, i.log_group_name.as_deref(), i.log_group_identifier.as_deref())?;
    check_stream_name(&i.log_stream_name, "logStreamName")?;
    let limit = limit(i.limit, MAX_EVENTS, MAX_EVENTS)?;
    let start = timestamp(i.start_time, "startTime")?;
    let end = timestamp(i.end_time, "endTime")?;
    let endpoint = existing_group(store, &group)?;
    let dir = store.stream_dir(endpoint, &i.log_stream_name).ok_or_else(no_stream)?;
    let context = format!("{group}\0{}", i.log_stream_name);
    let key = store.token_key();
    let (forward, from) = match &i.next_token {
        Some(t) => {
            let (kind, payload) = open(key, t, &['f', 'b'], &context)?;
            (kind == 'f', Some(parse_position(&payload).ok_or_else(bad_token)?))
        }
        None => (i.start_from_head.unwrap_or(false), None),
    };
    let in_range = |e: &Event| start.is_none_or(|s| e.timestamp >= s) && end.is_none_or(|x| e.timestamp < x);
    let (page, next_forward, next_backward) = if forward {
        // The first events at or after `from`.
        let from = from.unwrap_or(Position::ORIGIN);
        let mut cursor = Cursor::open(&dir, from);
        let (mut page, mut bytes, mut stopped) = (Vec::new(), 0, None);
        while let Some(e) = cursor.next_event() {
            if !in_range(&e) {
                continue;
            }
            if page.len() == limit || bytes + e.size() > PAGE_BYTES {
                stopped = Some(e.position);
                break;
            }
            bytes += e.size();
            page.push(e);
        }
        let forward = stopped.unwrap_or_else(|| cursor.position());
        let backward = page.first().map_or(from, |e| e.position);
        (page, forward, backward)
    } else {
        // The last events before `from` (the end of the stream when absent).
        let mut cursor = Cursor::open(&dir, Position::ORIGIN);
        let (mut page, mut bytes, mut until) = (VecDeque::new(), 0, from);
        while let Some(e) = cursor.next_event() {
            if until.is_some_and(|u| e.position >= u) {
                break;
            }
            if !in_range(&e) {
                continue;
            }
            bytes += e.size();
            page.push_back(e);
            while page.len() > limit || bytes > PAGE_BYTES {
                bytes -= page.pop_front().map_or(0, |e| e.size());
            }
        }
        let until = *until.get_or_insert_with(|| cursor.position());
        let backward = page.front().map_or(until, |e| e.position);
        let forward = page.back().map_or(until, |e| e.next);
        (page.into(), forward, backward)
    };
    let events: Vec<Value> = page
        .iter()
        .map(|e| json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp}))
        .collect();
    Ok(json!({
        "events": events,
        "nextForwardToken": seal(key, 'f', &context, &position_payload(next_forward)),
        "nextBackwardToken": seal(key, 'b', &context, &position_payload(next_backward)),
    }))
}

// ------------------------------------------------------------------------------------------
// FilterLogEvents

/// Where an event of a group is in `FilterLogEvents`' order: by timestamp, then stream name,
/// then position in the stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    timestamp: i64,
    stream: String,
    position: Position,
}

impl Key {
    fn payload(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.timestamp, self.position.seq, self.position.offset, self.stream
        )
    }

    fn parse(s: &str) -> Option<Self> {
        let mut p = s.splitn(4, ':');
        Some(Self {
            timestamp: p.next()?.parse().ok()?,
            position: Position {
                seq: p.next()?.parse().ok()?,
                offset: p.next()?.parse().ok()?,
            },
            stream: p.next()?.to_string(),
        })
    }
}

/// An event ranked for a page: ordered so that the best (the next to hand out) is the smallest.
struct Ranked {
    key: Key,
    latest_first: bool,
    event: Event,
}

impl Ranked {
    fn rank(&self, other: &Self) -> Ordering {
        if self.latest_first {
            other.key.cmp(&self.key)
        } else {
            self.key.cmp(&other.key)
        }
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank(other)
    }
}

/// A stable id of an event of a group: digits, from its timestamp, stream and position.
fn event_id(key: &Key) -> String {
    let h = Sha256::digest(key.stream.as_bytes());
    let stream = u64::from_be_bytes(h[..8].try_into().unwrap_or_default()) % 1_000_000_000_000;
    format!(
        "{:015}{stream:012}{:08}{:012}",
        key.timestamp.max(0),
        key.position.seq % 100_000_000,
        key.position.offset % 1_000_000_000_000
    )
}

fn filter_log_events(store: &LogStore, arns: &Arns, i: FilterLogEventsInput) -> Result<Value, ApiError> {
    let group = requested_group(arns, i.log_group_name.as_deref(), i.log_group_identifier.as_deref())?;
    if i.log_stream_names.is_some() && i.log_stream_name_prefix.is_some() {
        return Err(invalid(
            "logStreamNames and logStreamNamePrefix are mutually exclusive: specify one of them, not both",
        ));
    }
    if let Some(names) = &i.log_stream_names {
        if !(1..=100).contains(&names.len()) {
            return Err(invalid(
                ValidationError::constraint(
                    format!("{names:?}"),
                    "logStreamNames",
                    "Member must have length between 1 and 100",
                )
                .0,
            ));
        }
        for n in names {
            check_stream_name(n, "logStreamNames.member")?;
        }
    }
    if let Some(p) = &i.log_stream_name_prefix {
        check_stream_name(p, "logStreamNamePrefix")?;
    }
    let limit = limit(i.limit, MAX_EVENTS, MAX_EVENTS)?;
    let start = timestamp(i.start_time, "startTime")?;
    let end = timestamp(i.end_time, "endTime")?;
    let pattern_text = i.filter_pattern.clone().unwrap_or_default();
    let pattern = FilterPattern::parse(&pattern_text).map_err(|e| invalid(e.0))?;
    let endpoint = existing_group(store, &group)?;
    let context = format!(
        "{group}\0{:?}\0{:?}\0{start:?}\0{end:?}\0{pattern_text}",
        i.log_stream_names, i.log_stream_name_prefix
    );
    let key = store.token_key();
    let (latest_first, after) = match &i.next_token {
        Some(t) => {
            let (kind, payload) = open(key, t, &['n', 'p'], &context)?;
            (kind == 'p', Some(Key::parse(&payload).ok_or_else(bad_token)?))
        }
        None => {
            let latest_first = i.start_from_head == Some(false);
            if latest_first && start.is_some_and(|s| s < LATEST_FIRST_SINCE_MS) {
                return Err(invalid(
                    "startFromHead set to false is supported only with a startTime on or after Jan 1, 2024 00:00:00 UTC",
                ));
            }
            (latest_first, None)
        }
    };
    let streams: Vec<StreamInfo> = store
        .streams(endpoint)
        .ok_or_else(no_group)?
        .into_iter()
        .filter(|s| i.log_stream_names.as_ref().is_none_or(|n| n.contains(&s.name)))
        .filter(|s| {
            i.log_stream_name_prefix
                .as_deref()
                .is_none_or(|p| s.name.starts_with(p))
        })
        .collect();
    // The best `limit` events within a page's bytes, kept as a heap whose top is the worst.
    let mut best: BinaryHeap<Ranked> = BinaryHeap::new();
    let (mut bytes, mut more) = (0usize, false);
    for s in &streams {
        for e in Cursor::open(&s.dir, Position::ORIGIN) {
            if start.is_some_and(|t| e.timestamp < t) || end.is_some_and(|t| e.timestamp > t) {
                continue;
            }
            let k = Key {
                timestamp: e.timestamp,
                stream: s.name.clone(),
                position: e.position,
            };
            if let Some(a) = &after
                && (if latest_first { k >= *a } else { k <= *a })
            {
                continue;
            }
            if !pattern.matches(&e.message) {
                continue;
            }
            bytes += e.size();
            best.push(Ranked {
                key: k,
                latest_first,
                event: e,
            });
            while best.len() > limit || bytes > PAGE_BYTES {
                let Some(worst) = best.pop() else { break };
                bytes -= worst.event.size();
                more = true;
            }
        }
    }
    let page = best.into_sorted_vec();
    let events: Vec<Value> = page
        .iter()
        .map(|r| {
            json!({
                "logStreamName": r.key.stream,
                "timestamp": r.event.timestamp,
                "message": r.event.message,
                "ingestionTime": r.event.timestamp,
                "eventId": event_id(&r.key),
            })
        })
        .collect();
    let mut out = json!({ "events": events, "searchedLogStreams": [] });
    if more && let Some(last) = page.last() {
        let kind = if latest_first { 'p' } else { 'n' };
        out["nextToken"] = json!(seal(key, kind, &context, &last.key.payload()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::iam::Operation;

    fn arns() -> Arns {
        Arns {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
        }
    }

    #[test]
    fn operations_name_logs_actions_and_group_or_stream_arns() {
        assert_eq!(
            LogsOp::NAMES,
            [
                "DescribeLogGroups",
                "DescribeLogStreams",
                "GetLogEvents",
                "FilterLogEvents"
            ]
        );
        let op = |name: &str, body: &str| match LogsOp::parse(name, body.as_bytes()) {
            Some(Ok(op)) => op,
            _ => panic!("{name} did not parse"),
        };
        let g = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/e";
        let cases = [
            (
                "DescribeLogGroups",
                "{}",
                "arn:aws:logs:us-east-1:123456789012:log-group::log-stream:".to_string(),
            ),
            (
                "DescribeLogStreams",
                r#"{"logGroupName": "/aws/sagemaker/Endpoints/e"}"#,
                g.to_string(),
            ),
            (
                "FilterLogEvents",
                &format!(r#"{{"logGroupIdentifier": "{g}:*"}}"#),
                g.to_string(),
            ),
            (
                "GetLogEvents",
                r#"{"logGroupName": "/aws/sagemaker/Endpoints/e", "logStreamName": "AllTraffic/i-1"}"#,
                format!("{g}:log-stream:AllTraffic/i-1"),
            ),
        ];
        for (name, body, resource) in cases {
            let o = op(name, body);
            assert_eq!(o.action().to_string(), format!("logs:{name}"));
            assert_eq!(o.resource(&arns()).to_string(), resource, "{name}");
        }
        let e = match LogsOp::parse("GetLogEvents", br#"{"logGroupName": "g"}"#) {
            Some(Err(e)) => parse_error(e),
            _ => panic!("a missing logStreamName parsed"),
        };
        assert_eq!(e.code, ErrorCode::InvalidParameterException);
        assert!(e.message.contains("logStreamName"), "{e}");
    }

    #[test]
    fn tokens_open_only_where_they_were_handed_out() {
        let key = b"0123456789abcdef0123456789abcdef";
        let t = seal(key, 'f', "g\0s", "3:120");
        assert!(t.starts_with("f/"));
        assert_eq!(open(key, &t, &['f', 'b'], "g\0s").unwrap(), ('f', "3:120".to_string()));
        assert_eq!(seal(key, 'f', "g\0s", "3:120"), t, "the same position, the same token");
        let bad = |token: &str, kinds: &[char], context: &str| {
            let e = open(key, token, kinds, context).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParameterException, "{token}");
            assert_eq!(e.message, "The specified nextToken is invalid.");
        };
        bad(&t, &['f'], "g\0other");
        bad(&t, &['b'], "g\0s");
        bad(&t, &['f'], "g\0s2");
        bad(&seal(b"another key", 'f', "g\0s", "3:120"), &['f'], "g\0s");
        let mut forged = t.clone();
        forged.replace_range(2..4, "34");
        bad(&forged, &['f'], "g\0s");
        for garbage in ["", "f", "f/", "f/zz", "ff/00", "f/0", "x/00", "f/3a3a", "💥/00"] {
            bad(garbage, &['f'], "g\0s");
        }
    }

    proptest::proptest! {
        /// No token a client makes up opens, and none makes the server panic.
        #[test]
        fn made_up_tokens_are_refused(token in "\\PC{0,80}") {
            let key = b"0123456789abcdef0123456789abcdef";
            proptest::prop_assert!(open(key, &token, &['f', 'b', 'n', 'p', 's', 'g'], "ctx").is_err());
        }
    }

    #[test]
    fn identifiers_are_names_or_arns_of_this_server() {
        let a = arns();
        assert_eq!(requested_group(&a, Some("/aws/x"), None).unwrap(), "/aws/x");
        assert_eq!(
            requested_group(&a, None, Some("arn:aws:logs:us-east-1:123456789012:log-group:/aws/x:*")).unwrap(),
            "/aws/x"
        );
        assert_eq!(requested_group(&a, None, Some("/aws/x")).unwrap(), "/aws/x");
        let code = |r: Result<String, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(requested_group(
                &a,
                None,
                Some("arn:aws:logs:eu-west-1:123456789012:log-group:/aws/x")
            )),
            ErrorCode::ResourceNotFoundException
        );
        assert_eq!(
            code(requested_group(&a, Some("a"), Some("a"))),
            ErrorCode::InvalidParameterException
        );
        assert_eq!(
            code(requested_group(&a, None, None)),
            ErrorCode::InvalidParameterException
        );
        assert_eq!(
            code(requested_group(&a, Some("bad name!"), None)),
            ErrorCode::InvalidParameterException
        );
        assert_eq!(
            code(requested_group(&a, None, Some("arn:aws:s3:::bucket"))),
            ErrorCode::InvalidParameterException
        );
    }

    #[test]
    fn event_ids_are_digits_and_differ_by_stream_and_position() {
        let k = |stream: &str, offset| Key {
            timestamp: 1_700_000_000_000,
            stream: stream.into(),
            position: Position { seq: 1, offset },
        };
        let a = event_id(&k("v/i-1", 0));
        assert!(a.bytes().all(|b| b.is_ascii_digit()) && a.len() == 47, "{a}");
        assert_ne!(a, event_id(&k("v/i-2", 0)));
        assert_ne!(a, event_id(&k("v/i-1", 10)));
        assert_eq!(Key::parse(&k("v/i:1", 7).payload()), Some(k("v/i:1", 7)));
    }
}
