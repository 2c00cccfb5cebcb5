//! CloudTrail (awsJson1_1, `X-Amz-Target:
//! com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Op>`, as botocore's
//! `cloudtrail/2013-11-01/service-2.json` names it): `LookupEvents` over spillway's audit log.
//! The semantics are [`crate::audit::lookup`]'s.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::{AuditError, AuditLog, Lookup, LookupAttribute};
use crate::error::{ApiError, ErrorCode};

/// The `X-Amz-Target` service prefix of CloudTrail.
pub const TARGET_PREFIX: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101";

crate::operations! {
    /// The CloudTrail operations spillway implements. `LookupEvents` is authorized on `*`, as
    /// AWS does.
    pub(crate) enum CloudTrailOp: "cloudtrail" {
        LookupEvents(LookupEventsInput) => any,
    }
}

/// CloudTrail's reads carry no condition keys of their own.
impl super::ops::Conditions for CloudTrailOp {}

/// A lookup refused is CloudTrail's error for it; a log that cannot be read is `InternalFailure`.
impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        let code = match &e {
            AuditError::InvalidLookupAttributes(_) => ErrorCode::InvalidLookupAttributesException,
            AuditError::InvalidTimeRange(_) => ErrorCode::InvalidTimeRangeException,
            AuditError::InvalidMaxResults(_) => ErrorCode::InvalidMaxResultsException,
            AuditError::InvalidNextToken(_) => ErrorCode::InvalidNextTokenException,
            AuditError::Storage(_) | AuditError::InvalidRecord(_) | AuditError::ReadOnly | AuditError::Stopped => {
                tracing::error!(error = %e, "audit log failure");
                return ApiError::internal(format!("spillway could not use its audit log: {e}"));
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// `LookupEvents`' input (botocore's `LookupEventsRequest`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LookupEventsInput {
    #[serde(default)]
    lookup_attributes: Vec<AttributeInput>,
    /// Epoch seconds (botocore sends awsJson timestamps as numbers).
    start_time: Option<f64>,
    end_time: Option<f64>,
    event_category: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeInput {
    attribute_key: String,
    attribute_value: String,
}

/// Runs one operation on the audit log (`None` when `[audit] enabled = false`).
pub(crate) async fn dispatch(audit: Option<&Arc<AuditLog>>, op: CloudTrailOp) -> Result<Value, ApiError> {
    match op {
        CloudTrailOp::LookupEvents(i) => lookup_events(audit, i).await,
    }
}

async fn lookup_events(audit: Option<&Arc<AuditLog>>, i: LookupEventsInput) -> Result<Value, ApiError> {
    let Some(audit) = audit else {
        return Err(ApiError::new(
            ErrorCode::OperationNotPermittedException,
            "The audit trail is off on this server ([audit] enabled = false); there are no events to look up",
        ));
    };
    match i.event_category.as_deref() {
        None => {}
        // spillway writes no Insights events.
        Some("insight") => return Ok(json!({ "Events": [] })),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidEventCategoryException,
                format!("EventCategory: {other:?} is not valid; the only event category is insight"),
            ));
        }
    }
    let q = Lookup {
        attributes: i
            .lookup_attributes
            .into_iter()
            .map(|a| LookupAttribute {
                key: a.attribute_key,
                value: a.attribute_value,
            })
            .collect(),
        start_time: i.start_time,
        end_time: i.end_time,
        max_results: i.max_results,
        next_token: i.next_token,
    };
    let audit = audit.clone();
    let page = tokio::task::spawn_blocking(move || audit.lookup(&q))
        .await
        .map_err(|e| ApiError::internal(format!("the audit lookup failed: {e}")))??;
    serde_json::to_value(page).map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::iam::Operation;

    #[test]
    fn lookup_events_is_cloudtrails_action_on_any_resource() {
        assert_eq!(CloudTrailOp::NAMES, ["LookupEvents"]);
        let op = match CloudTrailOp::parse(
            "LookupEvents",
            br#"{"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "CreateModel"}],
                 "StartTime": 1796022000, "EndTime": 1796022060.5, "MaxResults": 5}"#,
        ) {
            Some(Ok(op)) => op,
            _ => panic!("LookupEvents did not parse"),
        };
        assert_eq!(op.action().to_string(), "cloudtrail:LookupEvents");
        assert_eq!(
            op.resource(&crate::core::iam::Arns {
                region: "us-east-1".into(),
                account_id: "123456789012".into()
            })
            .to_string(),
            "*"
        );
        let CloudTrailOp::LookupEvents(i) = op;
        assert_eq!(i.lookup_attributes.len(), 1);
        assert_eq!(
            (i.start_time, i.end_time, i.max_results),
            (Some(1796022000.0), Some(1796022060.5), Some(5))
        );
        let e = match CloudTrailOp::parse(
            "LookupEvents",
            br#"{"LookupAttributes": [{"AttributeKey": "EventName"}]}"#,
        ) {
            Some(Err(e)) => e,
            _ => panic!("a missing AttributeValue parsed"),
        };
        assert!(e.message.contains("AttributeValue"), "{e}");
    }

    #[test]
    fn lookup_refusals_are_cloudtrails_codes() {
        let cases = [
            (
                AuditError::InvalidLookupAttributes("x".into()),
                "InvalidLookupAttributesException",
                400,
            ),
            (
                AuditError::InvalidTimeRange("x".into()),
                "InvalidTimeRangeException",
                400,
            ),
            (
                AuditError::InvalidMaxResults("x".into()),
                "InvalidMaxResultsException",
                400,
            ),
            (
                AuditError::InvalidNextToken("x".into()),
                "InvalidNextTokenException",
                400,
            ),
            (AuditError::Storage("disk full".into()), "InternalFailure", 500),
        ];
        for (e, code, status) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.code.as_str(), a.status().as_u16()), (code, status));
        }
    }

    #[tokio::test]
    async fn lookups_without_an_audit_log_or_for_insights() {
        let input = |body: &[u8]| match CloudTrailOp::parse("LookupEvents", body) {
            Some(Ok(op)) => op,
            _ => panic!("did not parse"),
        };
        let e = dispatch(None, input(b"{}")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OperationNotPermittedException);
        let dir = tempfile::tempdir().unwrap();
        let log =
            Arc::new(AuditLog::open(&dir.path().join("audit.db"), std::time::Duration::from_secs(86_400)).unwrap());
        let v = dispatch(Some(&log), input(br#"{"EventCategory": "insight"}"#))
            .await
            .unwrap();
        assert_eq!(v, json!({"Events": []}));
        let e = dispatch(Some(&log), input(br#"{"EventCategory": "data"}"#))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEventCategoryException);
        let e = dispatch(Some(&log), input(br#"{"MaxResults": 0}"#)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMaxResultsException);
        let v = dispatch(Some(&log), input(b"{}")).await.unwrap();
        assert_eq!(v, json!({"Events": []}));
    }
}
