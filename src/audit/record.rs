//! One CloudTrail record, as CloudTrail writes it (`eventVersion` 1.09), and what goes into one:
//! the event source of each API, the caller's identity, redaction of secrets and bodies.

use crate::core::time::{iso8601, parse_iso8601};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `eventVersion` spillway writes: CloudTrail's current record format.
pub const EVENT_VERSION: &str = "1.09";

/// What CloudTrail writes in place of a sensitive value it does not record.
pub const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// One CloudTrail record. Members are serialized in CloudTrail's order and with its names;
/// absent optional members are left out, except `requestParameters` and `responseElements`,
/// which CloudTrail writes as `null` when a call has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Always [`EVENT_VERSION`].
    pub event_version: String,
    /// Who made the call.
    pub user_identity: UserIdentity,
    /// When the request arrived, `YYYY-MM-DDTHH:MM:SSZ` (see [`format_time`]).
    pub event_time: String,
    /// The API: `sagemaker.amazonaws.com`, … (see [`event_source`]).
    pub event_source: String,
    /// The operation, e.g. `CreateEndpoint`.
    pub event_name: String,
    /// The server's region.
    pub aws_region: String,
    /// The client's address.
    #[serde(rename = "sourceIPAddress")]
    pub source_ip_address: String,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The error code of a failed call (absent when it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The error message of a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The request, redacted (see [`redact`]); `null` when none.
    #[serde(default)]
    pub request_parameters: Option<Value>,
    /// The answer, redacted; `null` when none (read-only calls, failures).
    #[serde(default)]
    pub response_elements: Option<Value>,
    /// Further data CloudTrail records for some events; spillway writes
    /// `{"outcomeUnknown": true}` on records completed from an intent after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_event_data: Option<Value>,
    /// The `x-amzn-RequestId` the call was answered with.
    #[serde(rename = "requestID")]
    pub request_id: String,
    /// This record's unique id (a UUID).
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// Whether the operation only reads.
    pub read_only: bool,
    /// The resources the call acted on (left out when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<RecordResource>,
    /// `AwsApiCall` for calls; `AwsServiceEvent` for things spillway did on its own.
    pub event_type: String,
    /// `true` for management events, `false` for data events (invocations).
    pub management_event: bool,
    /// The account the call was made to.
    pub recipient_account_id: String,
    /// `Management` or `Data`.
    pub event_category: String,
}

impl Record {
    /// The record of one call of an API (`service` is its IAM service prefix, see
    /// [`event_source`]) made at `event_time` (epoch seconds): a new `eventID`, `readOnly` by
    /// [`is_read_only`], a management event. The caller fills in the address, user agent,
    /// request id, parameters, answer or error and resources.
    pub fn api_call(
        service: &str,
        event_name: &str,
        event_time: f64,
        region: &str,
        account_id: &str,
        user_identity: UserIdentity,
    ) -> Self {
        Self {
            event_version: EVENT_VERSION.into(),
            user_identity,
            event_time: format_time(event_time),
            event_source: event_source(service),
            event_name: event_name.into(),
            aws_region: region.into(),
            source_ip_address: String::new(),
            user_agent: String::new(),
            error_code: None,
            error_message: None,
            request_parameters: None,
            response_elements: None,
            additional_event_data: None,
            request_id: String::new(),
            event_id: uuid::Uuid::new_v4().to_string(),
            read_only: is_read_only(event_name),
            resources: vec![],
            event_type: "AwsApiCall".into(),
            management_event: true,
            recipient_account_id: account_id.into(),
            event_category: "Management".into(),
        }
    }
}

/// `userIdentity` of a record.
///
/// An IAM user's call has `type` `IAMUser` and every member. A call spillway could not tie to
/// an identity (no or bad credentials, or `[auth] mode = "none"`) is written as CloudTrail
/// writes anonymous calls: `type` `AWSAccount`, `principalId` empty and `accountId`
/// `ANONYMOUS_PRINCIPAL` (see [`UserIdentity::anonymous`]), with the access key id the request
/// presented, if any — never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    /// `IAMUser` or `AWSAccount` (anonymous).
    #[serde(rename = "type")]
    pub identity_type: String,
    /// The user's id (`AIDA…`), empty for anonymous calls.
    pub principal_id: String,
    /// The user's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// The account id, or `ANONYMOUS_PRINCIPAL`.
    pub account_id: String,
    /// The access key the request was signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

impl UserIdentity {
    /// An IAM user.
    pub fn iam_user(principal_id: &str, arn: &str, account_id: &str, access_key_id: &str, user_name: &str) -> Self {
        Self {
            identity_type: "IAMUser".into(),
            principal_id: principal_id.into(),
            arn: Some(arn.into()),
            account_id: account_id.into(),
            access_key_id: Some(access_key_id.into()),
            user_name: Some(user_name.into()),
        }
    }

    /// A caller without a verified identity, optionally with the access key id it presented.
    pub fn anonymous(presented_access_key_id: Option<&str>) -> Self {
        Self {
            identity_type: "AWSAccount".into(),
            principal_id: String::new(),
            arn: None,
            account_id: "ANONYMOUS_PRINCIPAL".into(),
            access_key_id: presented_access_key_id.map(str::to_string),
            user_name: None,
        }
    }
}

/// One entry of a record's `resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordResource {
    /// The resource's ARN.
    #[serde(rename = "ARN")]
    pub arn: String,
    /// The account that owns it.
    #[serde(rename = "accountId")]
    pub account_id: String,
    /// Its CloudFormation-style type, e.g. `AWS::SageMaker::Endpoint` (see [`resource_type`]).
    #[serde(rename = "type")]
    pub resource_type: String,
}

impl RecordResource {
    /// The resource of an ARN, its account and type taken from the ARN.
    pub fn of_arn(arn: &str) -> Self {
        Self {
            arn: arn.to_string(),
            account_id: arn.split(':').nth(4).unwrap_or("").to_string(),
            resource_type: resource_type(arn).to_string(),
        }
    }

    /// The resource's name as lookups see it: the part of the ARN after the resource kind
    /// (`arn:…:endpoint/my-endpoint` → `my-endpoint`, `arn:…:log-group:/aws/x` → `/aws/x`); the
    /// ARN itself when it has no kind.
    pub fn name(&self) -> &str {
        let tail = self.arn.splitn(6, ':').nth(5).unwrap_or(&self.arn);
        if let Some(group) = tail.strip_prefix("log-group:") {
            return group;
        }
        tail.split_once('/').map_or(tail, |(_, n)| n)
    }
}

/// The type CloudTrail gives a resource of this ARN (`AWS::SageMaker::Endpoint`, …); `AWS::`
/// plus service and kind as written for kinds spillway does not know.
pub fn resource_type(arn: &str) -> &'static str {
    let mut parts = arn.splitn(6, ':');
    let service = parts.nth(2).unwrap_or("");
    let kind = parts.nth(2).and_then(|r| r.split(['/', ':']).next()).unwrap_or("");
    match (service, kind) {
        ("sagemaker", "endpoint") => "AWS::SageMaker::Endpoint",
        ("sagemaker", "endpoint-config") => "AWS::SageMaker::EndpointConfig",
        ("sagemaker", "model") => "AWS::SageMaker::Model",
        ("iam", "user") => "AWS::IAM::User",
        ("iam", "group") => "AWS::IAM::Group",
        ("iam", "policy") => "AWS::IAM::Policy",
        ("iam", "role") => "AWS::IAM::Role",
        ("iam", "accesskey") => "AWS::IAM::AccessKey",
        ("application-autoscaling", _) => "AWS::ApplicationAutoScaling::ScalableTarget",
        ("logs", "log-group") => "AWS::Logs::LogGroup",
        ("cloudwatch", "alarm") => "AWS::CloudWatch::Alarm",
        // `arn:aws:s3:::bucket` and `arn:aws:s3:::bucket/key` (S3 ARNs have no kind).
        ("s3", _) if arn.splitn(6, ':').nth(5).is_some_and(|r| r.contains('/')) => "AWS::S3::Object",
        ("s3", _) => "AWS::S3::Bucket",
        _ => "AWS::Unknown",
    }
}

/// The `eventSource` of an API, from the service prefix of its IAM actions:
/// `sagemaker` → `sagemaker.amazonaws.com` (the runtime's invocations too, as CloudTrail logs
/// them), `cloudwatch` → `monitoring.amazonaws.com` (CloudWatch's endpoint name), and
/// `<service>.amazonaws.com` for the others (`application-autoscaling`, `iam`, `sts`,
/// `cloudtrail`). spillway's admin API, whose actions are `spillway:*`, is
/// `spillway.amazonaws.com`: a name of the same shape, so tools that filter on `eventSource`
/// handle it, and one no AWS service uses.
pub fn event_source(service: &str) -> String {
    match service {
        "cloudwatch" => "monitoring.amazonaws.com".to_string(),
        s => format!("{s}.amazonaws.com"),
    }
}

/// Whether CloudTrail marks an operation `readOnly`: the ones that only read (`Describe*`,
/// `List*`, `Get*`, `Lookup*`, `Filter*` (CloudWatch Logs' `FilterLogEvents`), and the
/// invocations, which change no resource).
pub fn is_read_only(event_name: &str) -> bool {
    ["Describe", "List", "Get", "Lookup", "Filter", "Explain"]
        .iter()
        .any(|p| event_name.starts_with(p))
        || INVOCATIONS.contains(&event_name)
}

/// The longest `userAgent` (or other client-chosen text) a record keeps, in bytes.
pub const MAX_CLIENT_TEXT: usize = 512;

/// `text` cut to [`MAX_CLIENT_TEXT`] bytes (at a character boundary): a client cannot make
/// records large.
pub fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_CLIENT_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds (fractions dropped, as CloudTrail does).
pub fn format_time(epoch_seconds: f64) -> String {
    iso8601(epoch_seconds.floor() as i64)
}

/// Epoch seconds of a `YYYY-MM-DDTHH:MM:SSZ` time as [`format_time`] writes it; `None` otherwise.
pub fn parse_time(s: &str) -> Option<i64> {
    parse_iso8601(s)
}

/// Operations whose bodies are the user's data: their `Body` is never recorded, and neither is
/// any member of their answers but the content type and the variant that answered.
const INVOCATIONS: &[&str] = &[
    "InvokeEndpoint",
    "InvokeEndpointAsync",
    "InvokeEndpointWithResponseStream",
];

/// Members that hold key material or passwords (compared case-insensitively): left out of
/// records entirely, wherever they appear.
const SECRETS: &[&str] = &[
    "secretaccesskey",
    "sessiontoken",
    "password",
    "newpassword",
    "oldpassword",
    "privatekey",
    "authorization",
];

/// Map-typed members whose keys are the user's own names (kept as written) and whose values
/// may be secrets: each value becomes [`HIDDEN`], as CloudTrail does for sensitive fields.
const HIDDEN_MAPS: &[&str] = &["Environment"];

/// The `requestParameters` and `responseElements` of a call, as CloudTrail writes them:
/// member names in camelCase (`EndpointName` → `endpointName`), key material and passwords left
/// out (`SecretAccessKey` of `CreateAccessKey`'s answer, session tokens), a model's
/// `Environment` values replaced by [`HIDDEN`] (keys kept), an invocation's body and answer
/// never recorded. Policy documents are kept: they are not secret, and auditors need them.
/// `Null` or an empty object gives `None` (CloudTrail's `null`).
pub fn redact(event_name: &str, request: &Value, response: &Value) -> (Option<Value>, Option<Value>) {
    let invocation = INVOCATIONS.contains(&event_name);
    let request = match request {
        Value::Object(m) if invocation => {
            let kept: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("Body"))
                .map(|(k, v)| {
                    // Custom attributes are the caller's free text, like a body.
                    let v = if k.eq_ignore_ascii_case("CustomAttributes") {
                        Value::String(HIDDEN.into())
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect();
            Value::Object(kept)
        }
        v => v.clone(),
    };
    let response = match response {
        Value::Object(m) if invocation => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    k.eq_ignore_ascii_case("ContentType") || k.eq_ignore_ascii_case("InvokedProductionVariant")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ if invocation => Value::Null,
        v => v.clone(),
    };
    (clean(&request), clean(&response))
}

/// Camel-cases, strips secrets and hides map values; `None` for nothing.
fn clean(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) if m.is_empty() => None,
        v => Some(scrub(v)),
    }
}

fn scrub(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !SECRETS.iter().any(|s| k.eq_ignore_ascii_case(s)))
                .map(|(k, v)| {
                    let v = if HIDDEN_MAPS.iter().any(|h| k.eq_ignore_ascii_case(h)) {
                        hide_values(v)
                    } else {
                        scrub(v)
                    };
                    (camel(k), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(scrub).collect()),
        v => v.clone(),
    }
}

/// A map's values replaced by [`HIDDEN`]; anything else wholly hidden.
fn hide_values(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.keys().map(|k| (k.clone(), Value::String(HIDDEN.into()))).collect()),
        Value::Null => Value::Null,
        _ => Value::String(HIDDEN.into()),
    }
}

/// `EndpointName` → `endpointName`; `ARN` stays `ARN`-like (`aRN` would be wrong): a name that
/// is all capitals is lower-cased whole (`ARN` → `arn`).
fn camel(k: &str) -> String {
    if k.len() > 1 && k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return k.to_ascii_lowercase();
    }
    let mut c = k.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn times_are_written_as_cloudtrail_does() {
        assert_eq!(format_time(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_796_022_000.7), "2026-11-30T07:00:00Z");
        assert_eq!(parse_time("2026-11-30T07:00:00Z"), Some(1_796_022_000));
        assert_eq!(parse_time("2026-11-30T07:00:00"), None);
        assert_eq!(parse_time("2026-13-30T07:00:00Z"), None);
        assert_eq!(parse_time("2026-1a-30T07:00:00Z"), None);
    }

    proptest! {
        #[test]
        fn time_round_trips(secs in -62_135_596_800i64..253_402_300_799) {
            prop_assert_eq!(parse_time(&format_time(secs as f64)), Some(secs));
        }

        #[test]
        fn no_secret_survives_redaction(
            name in "[A-Za-z]{1,20}",
            secret in "[A-Za-z0-9/+]{20,40}",
            key in prop::sample::select(vec!["SecretAccessKey", "secretAccessKey", "Password", "SessionToken"]),
            depth in 0usize..4,
        ) {
            let mut v = json!({ key: secret.clone() });
            for _ in 0..depth {
                v = json!({"Outer": [v, {"x": 1}]});
            }
            let (req, resp) = redact(&name, &v, &v);
            let text = format!("{req:?}{resp:?}");
            prop_assert!(!text.contains(&secret), "{}", text);
        }
    }

    #[test]
    fn a_record_is_written_with_cloudtrails_member_names() {
        let r = Record {
            event_version: EVENT_VERSION.into(),
            user_identity: UserIdentity::iam_user(
                "AIDAEXAMPLE",
                "arn:aws:iam::123456789012:user/alice",
                "123456789012",
                "AKIAEXAMPLE",
                "alice",
            ),
            event_time: format_time(1_796_022_000.0),
            event_source: event_source("sagemaker"),
            event_name: "CreateEndpoint".into(),
            aws_region: "us-east-1".into(),
            source_ip_address: "127.0.0.1".into(),
            user_agent: "boto3".into(),
            error_code: None,
            error_message: None,
            request_parameters: Some(json!({"endpointName": "e"})),
            response_elements: None,
            additional_event_data: None,
            request_id: "r".into(),
            event_id: "e".into(),
            read_only: false,
            resources: vec![RecordResource::of_arn(
                "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e",
            )],
            event_type: "AwsApiCall".into(),
            management_event: true,
            recipient_account_id: "123456789012".into(),
            event_category: "Management".into(),
        };
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "eventVersion",
            "userIdentity",
            "eventTime",
            "eventSource",
            "eventName",
            "awsRegion",
            "sourceIPAddress",
            "userAgent",
            "requestParameters",
            "responseElements",
            "requestID",
            "eventID",
            "readOnly",
            "resources",
            "eventType",
            "managementEvent",
            "recipientAccountId",
            "eventCategory",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains(&"errorCode"));
        assert_eq!(v["responseElements"], Value::Null);
        assert_eq!(v["userIdentity"]["type"], "IAMUser");
        assert_eq!(v["userIdentity"]["userName"], "alice");
        assert_eq!(v["resources"][0]["type"], "AWS::SageMaker::Endpoint");
        assert_eq!(
            v["resources"][0]["ARN"],
            "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"
        );
        assert_eq!(v["resources"][0]["accountId"], "123456789012");
        assert_eq!(serde_json::from_value::<Record>(v).unwrap(), r);
        let anon = serde_json::to_value(UserIdentity::anonymous(None)).unwrap();
        assert_eq!(
            anon,
            json!({"type": "AWSAccount", "principalId": "", "accountId": "ANONYMOUS_PRINCIPAL"})
        );
    }

    #[test]
    fn redaction_keeps_policies_and_hides_secrets_bodies_and_environment() {
        let (_, resp) = redact(
            "CreateAccessKey",
            &json!({"UserName": "bob"}),
            &json!({"AccessKey": {"UserName": "bob", "AccessKeyId": "AKIA1", "SecretAccessKey": "s3cr3t", "Status": "Active"}}),
        );
        assert_eq!(
            resp,
            Some(json!({"accessKey": {"userName": "bob", "accessKeyId": "AKIA1", "status": "Active"}}))
        );
        let doc = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let (req, _) = redact(
            "PutUserPolicy",
            &json!({"UserName": "bob", "PolicyName": "p", "PolicyDocument": doc}),
            &Value::Null,
        );
        assert_eq!(req.unwrap()["policyDocument"], doc);
        let (req, _) = redact(
            "CreateModel",
            &json!({"ModelName": "m", "PrimaryContainer": {"Image": "builtin:echo", "Environment": {"TOKEN": "abc"}}}),
            &json!({"ModelArn": "arn"}),
        );
        assert_eq!(
            req,
            Some(
                json!({"modelName": "m", "primaryContainer": {"image": "builtin:echo", "environment": {"TOKEN": HIDDEN}}})
            )
        );
        let (req, resp) = redact(
            "InvokeEndpoint",
            &json!({"EndpointName": "e", "Body": "private", "ContentType": "text/plain"}),
            &json!({"Body": "answer", "ContentType": "text/plain", "InvokedProductionVariant": "v"}),
        );
        assert_eq!(req, Some(json!({"endpointName": "e", "contentType": "text/plain"})));
        assert_eq!(
            resp,
            Some(json!({"contentType": "text/plain", "invokedProductionVariant": "v"}))
        );
        assert_eq!(redact("ListModels", &json!({}), &Value::Null), (None, None));
    }

    #[test]
    fn reads_are_read_only() {
        for (name, ro) in [
            ("DescribeEndpoint", true),
            ("ListModels", true),
            ("GetMetricData", true),
            ("LookupEvents", true),
            ("FilterLogEvents", true),
            ("GetLogEvents", true),
            ("InvokeEndpoint", true),
            ("CreateEndpoint", false),
            ("PutUserPolicy", false),
            ("UpdateEndpointWeightsAndCapacities", false),
        ] {
            assert_eq!(is_read_only(name), ro, "{name}");
        }
    }

    #[test]
    fn resources_name_their_type_and_name() {
        let r = RecordResource::of_arn("arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c1");
        assert_eq!(r.resource_type, "AWS::SageMaker::EndpointConfig");
        assert_eq!(r.name(), "c1");
        assert_eq!(r.account_id, "123456789012");
        assert_eq!(
            RecordResource::of_arn("arn:aws:iam::123456789012:user/bob").name(),
            "bob"
        );
        assert_eq!(resource_type("nonsense"), "AWS::Unknown");
        let g = RecordResource::of_arn("arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/e");
        assert_eq!(
            (g.resource_type.as_str(), g.name()),
            ("AWS::Logs::LogGroup", "/aws/sagemaker/Endpoints/e")
        );
    }
}
