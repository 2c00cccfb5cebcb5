//! The one table of AWS errors: every error code spillway answers, its HTTP status, its awsQuery
//! code where a protocol needs one, and how each protocol renders it.
//!
//! Inner layers return their own typed errors (`core::validate::ValidationError`,
//! `control::ControlError`, `store::StoreError`, …); they become an [`ApiError`] only at the edge,
//! through the `From` impls below and in `api/`, and the handlers of `api/` and `dataplane/`. Nothing else in the code base names
//! an AWS error code or picks an HTTP status for an error.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::core::validate::ValidationError;
use crate::store::StoreError;

/// Every AWS error code spillway answers with. The variant names are the wire codes, except
/// where one wire code is answered with two statuses (see [`ErrorCode::AdminNotFound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad input, not found, already exists, operation in progress (SageMaker, 400).
    ValidationException,
    /// Malformed JSON or a member of the wrong type (400).
    SerializationException,
    /// An operation or service spillway does not implement (400).
    UnknownOperationException,
    /// A bug or a broken store, never bad input (500).
    InternalFailure,
    /// The admin API's "no such endpoint": `ValidationException` on the wire, with 404.
    AdminNotFound,
    /// A request this server refuses to serve: a `Host` it does not answer for (DNS
    /// rebinding), a browser's cross-origin request (403).
    AccessDeniedException,
    /// IAM and STS (awsQuery): a caller's policies do not allow the call (`AccessDenied`, 403).
    AccessDenied,
    /// A request body over the control plane's limit: `RequestEntityTooLargeException`, 413.
    RequestEntityTooLarge,
    /// A path no API serves: `UnknownOperationException`, 404.
    NoSuchPath,
    /// A method a path does not take: `UnknownOperationException`, 405.
    MethodNotAllowed,
    /// Application Auto Scaling: no such scalable target or policy (400).
    ObjectNotFoundException,
    /// Application Auto Scaling's tagging operations and CloudWatch Logs: no resource with that
    /// ARN, no such log group or log stream (400).
    ResourceNotFoundException,
    /// Application Auto Scaling: more than 50 tags on a resource (400).
    TooManyTagsException,
    /// CloudWatch: no alarm of that name (`ResourceNotFound`, 404).
    AlarmNotFound,
    /// CloudWatch: `StateReasonData` that is not JSON (`InvalidFormat`, 400).
    InvalidFormat,
    /// CloudWatch's tagging operations: no resource with that ARN (404).
    CloudWatchResourceNotFound,
    /// CloudWatch: the alarm quota is reached (`LimitExceededFault`, 400).
    AlarmLimitExceeded,
    /// CloudWatch: a parameter's value is invalid (400, query code `InvalidParameterValue`).
    InvalidParameterValueException,
    /// CloudWatch: a required parameter is missing (400, query code `MissingParameter`).
    MissingRequiredParameterException,
    /// CloudWatch: parameters that cannot go together (400, `InvalidParameterCombination`).
    InvalidParameterCombinationException,
    /// CloudWatch: a `NextToken` this server did not hand out (400).
    InvalidNextToken,
    /// CloudTrail: `LookupAttributes` is not one known key with a value (400).
    InvalidLookupAttributesException,
    /// CloudTrail: `StartTime` after `EndTime` (400).
    InvalidTimeRangeException,
    /// CloudTrail: `MaxResults` outside 1 to 50 (400).
    InvalidMaxResultsException,
    /// CloudTrail: a `NextToken` this server did not hand out, or with other parameters (400).
    InvalidNextTokenException,
    /// CloudTrail: an `EventCategory` other than `insight` (400).
    InvalidEventCategoryException,
    /// CloudTrail: the audit trail is off (`[audit] enabled = false`) (400).
    OperationNotPermittedException,
    /// CloudWatch Logs: a parameter is specified incorrectly (a bad token, a filter pattern
    /// spillway does not take, a value out of range, parameters that exclude each other) (400).
    InvalidParameterException,
    /// Runtime: bad input, unknown endpoint or variant, payload too large; IAM and STS: a
    /// member that breaks its constraint (400).
    ValidationError,
    /// Runtime: the model answered with an error status (424).
    ModelError,
    /// Runtime: no instance can take the request now (503).
    ServiceUnavailable,
    /// Runtime: every instance is at its concurrency limit (429).
    ThrottlingException,
    /// IAM: no such user, group, access key or policy (404).
    NoSuchEntity,
    /// IAM: a user or group of that name exists already (409).
    EntityAlreadyExists,
    /// IAM: a quota would be exceeded (access keys per user, policy size, …) (409).
    LimitExceeded,
    /// IAM: an entity that still has dependents cannot be deleted (409).
    DeleteConflict,
    /// IAM: a policy document that does not parse (400).
    MalformedPolicyDocument,
    /// IAM: an input value that is not valid, beyond its modelled constraints (400).
    InvalidInput,
    /// IAM and STS (awsQuery): an `Action` or `Version` that is not served (400).
    InvalidAction,
    /// awsJson APIs: no `Authorization` header (400, "Missing Authentication Token").
    MissingAuthenticationTokenException,
    /// The runtime: no `Authorization` header (`MissingAuthenticationTokenException`, 403).
    RuntimeMissingAuthenticationToken,
    /// awsQuery APIs (IAM, STS): no `Authorization` header (403).
    MissingAuthenticationToken,
    /// awsJson APIs: an access key spillway does not know, or an inactive one (400).
    UnrecognizedClientException,
    /// The runtime: an unknown or inactive access key (`UnrecognizedClientException`, 403).
    RuntimeUnrecognizedClient,
    /// awsQuery APIs: an unknown or inactive access key (403).
    InvalidClientTokenId,
    /// awsJson APIs: a signature that does not match, a time over 5 minutes off, a credential
    /// scoped to another region, service or day (400).
    InvalidSignatureException,
    /// The runtime: the same refusals (`InvalidSignatureException`, 403).
    RuntimeInvalidSignature,
    /// awsQuery APIs: the same refusals (403).
    SignatureDoesNotMatch,
    /// awsJson APIs: a malformed `Authorization` header or date (400).
    IncompleteSignatureException,
    /// The runtime: a malformed `Authorization` header (`IncompleteSignatureException`, 403).
    RuntimeIncompleteSignature,
    /// awsQuery APIs: a malformed `Authorization` header (400).
    IncompleteSignature,
}

impl ErrorCode {
    /// Every row of the table.
    pub const ALL: &'static [ErrorCode] = &[
        Self::ValidationException,
        Self::SerializationException,
        Self::UnknownOperationException,
        Self::InternalFailure,
        Self::AdminNotFound,
        Self::AccessDeniedException,
        Self::AccessDenied,
        Self::RequestEntityTooLarge,
        Self::NoSuchPath,
        Self::MethodNotAllowed,
        Self::ObjectNotFoundException,
        Self::ResourceNotFoundException,
        Self::TooManyTagsException,
        Self::AlarmNotFound,
        Self::InvalidFormat,
        Self::CloudWatchResourceNotFound,
        Self::AlarmLimitExceeded,
        Self::InvalidParameterValueException,
        Self::MissingRequiredParameterException,
        Self::InvalidParameterCombinationException,
        Self::InvalidNextToken,
        Self::InvalidLookupAttributesException,
        Self::InvalidTimeRangeException,
        Self::InvalidMaxResultsException,
        Self::InvalidNextTokenException,
        Self::InvalidEventCategoryException,
        Self::OperationNotPermittedException,
        Self::InvalidParameterException,
        Self::ValidationError,
        Self::ModelError,
        Self::ServiceUnavailable,
        Self::ThrottlingException,
        Self::NoSuchEntity,
        Self::EntityAlreadyExists,
        Self::LimitExceeded,
        Self::DeleteConflict,
        Self::MalformedPolicyDocument,
        Self::InvalidInput,
        Self::InvalidAction,
        Self::MissingAuthenticationTokenException,
        Self::RuntimeMissingAuthenticationToken,
        Self::MissingAuthenticationToken,
        Self::UnrecognizedClientException,
        Self::RuntimeUnrecognizedClient,
        Self::InvalidClientTokenId,
        Self::InvalidSignatureException,
        Self::RuntimeInvalidSignature,
        Self::SignatureDoesNotMatch,
        Self::IncompleteSignatureException,
        Self::RuntimeIncompleteSignature,
        Self::IncompleteSignature,
    ];

    /// The code on the wire (`__type`, `x-amzn-ErrorType`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationException | Self::AdminNotFound => "ValidationException",
            Self::SerializationException => "SerializationException",
            Self::UnknownOperationException | Self::NoSuchPath | Self::MethodNotAllowed => "UnknownOperationException",
            Self::RequestEntityTooLarge => "RequestEntityTooLargeException",
            Self::AccessDeniedException => "AccessDeniedException",
            Self::AccessDenied => "AccessDenied",
            Self::InternalFailure => "InternalFailure",
            Self::ObjectNotFoundException => "ObjectNotFoundException",
            Self::ResourceNotFoundException => "ResourceNotFoundException",
            Self::TooManyTagsException => "TooManyTagsException",
            Self::AlarmNotFound => "ResourceNotFound",
            Self::InvalidFormat => "InvalidFormatFault",
            Self::CloudWatchResourceNotFound => "ResourceNotFoundException",
            Self::AlarmLimitExceeded => "LimitExceededFault",
            Self::InvalidParameterValueException => "InvalidParameterValueException",
            Self::MissingRequiredParameterException => "MissingRequiredParameterException",
            Self::InvalidParameterCombinationException => "InvalidParameterCombinationException",
            Self::InvalidNextToken => "InvalidNextToken",
            Self::InvalidLookupAttributesException => "InvalidLookupAttributesException",
            Self::InvalidTimeRangeException => "InvalidTimeRangeException",
            Self::InvalidMaxResultsException => "InvalidMaxResultsException",
            Self::InvalidNextTokenException => "InvalidNextTokenException",
            Self::InvalidEventCategoryException => "InvalidEventCategoryException",
            Self::OperationNotPermittedException => "OperationNotPermittedException",
            Self::InvalidParameterException => "InvalidParameterException",
            Self::ValidationError => "ValidationError",
            Self::ModelError => "ModelError",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::ThrottlingException => "ThrottlingException",
            Self::NoSuchEntity => "NoSuchEntity",
            Self::EntityAlreadyExists => "EntityAlreadyExists",
            Self::LimitExceeded => "LimitExceeded",
            Self::DeleteConflict => "DeleteConflict",
            Self::MalformedPolicyDocument => "MalformedPolicyDocument",
            Self::InvalidInput => "InvalidInput",
            Self::InvalidAction => "InvalidAction",
            Self::MissingAuthenticationTokenException | Self::RuntimeMissingAuthenticationToken => {
                "MissingAuthenticationTokenException"
            }
            Self::MissingAuthenticationToken => "MissingAuthenticationToken",
            Self::UnrecognizedClientException | Self::RuntimeUnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidClientTokenId => "InvalidClientTokenId",
            Self::InvalidSignatureException | Self::RuntimeInvalidSignature => "InvalidSignatureException",
            Self::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            Self::IncompleteSignatureException | Self::RuntimeIncompleteSignature => "IncompleteSignatureException",
            Self::IncompleteSignature => "IncompleteSignature",
        }
    }

    /// The HTTP status it is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::AlarmNotFound | Self::CloudWatchResourceNotFound => StatusCode::NOT_FOUND,
            Self::InternalFailure => StatusCode::INTERNAL_SERVER_ERROR,
            Self::AdminNotFound | Self::NoSuchPath | Self::NoSuchEntity => StatusCode::NOT_FOUND,
            Self::EntityAlreadyExists | Self::LimitExceeded | Self::DeleteConflict => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AccessDeniedException
            | Self::AccessDenied
            | Self::RuntimeMissingAuthenticationToken
            | Self::MissingAuthenticationToken
            | Self::RuntimeUnrecognizedClient
            | Self::InvalidClientTokenId
            | Self::RuntimeInvalidSignature
            | Self::SignatureDoesNotMatch
            | Self::RuntimeIncompleteSignature => StatusCode::FORBIDDEN,
            Self::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelError => StatusCode::FAILED_DEPENDENCY,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::ThrottlingException => StatusCode::TOO_MANY_REQUESTS,
            Self::ValidationException
            | Self::SerializationException
            | Self::UnknownOperationException
            | Self::ObjectNotFoundException
            | Self::ResourceNotFoundException
            | Self::TooManyTagsException
            | Self::InvalidFormat
            | Self::AlarmLimitExceeded
            | Self::InvalidParameterValueException
            | Self::MissingRequiredParameterException
            | Self::InvalidParameterCombinationException
            | Self::InvalidNextToken
            | Self::InvalidLookupAttributesException
            | Self::InvalidTimeRangeException
            | Self::InvalidMaxResultsException
            | Self::InvalidNextTokenException
            | Self::InvalidEventCategoryException
            | Self::OperationNotPermittedException
            | Self::InvalidParameterException
            | Self::ValidationError
            | Self::MalformedPolicyDocument
            | Self::InvalidInput
            | Self::InvalidAction
            | Self::MissingAuthenticationTokenException
            | Self::UnrecognizedClientException
            | Self::InvalidSignatureException
            | Self::IncompleteSignatureException
            | Self::IncompleteSignature => StatusCode::BAD_REQUEST,
        }
    }
}

impl ErrorCode {
    /// The `x-amzn-query-error` header of a modelled CloudWatch error: its awsQuery code (which
    /// botocore maps to the modelled exception classes) and fault (`Sender` for the client's
    /// errors, `Receiver` for the server's).
    pub const fn query_error(self) -> Option<&'static str> {
        match self {
            // A broken constraint of the model: CloudWatch's `ValidationException` shape, whose
            // awsQuery code is `ValidationError`.
            Self::ValidationException => Some("ValidationError;Sender"),
            Self::InvalidParameterValueException => Some("InvalidParameterValue;Sender"),
            Self::MissingRequiredParameterException => Some("MissingParameter;Sender"),
            Self::InvalidParameterCombinationException => Some("InvalidParameterCombination;Sender"),
            Self::InvalidNextToken => Some("InvalidNextToken;Sender"),
            Self::AlarmNotFound => Some("ResourceNotFound;Sender"),
            Self::InvalidFormat => Some("InvalidFormat;Sender"),
            Self::CloudWatchResourceNotFound => Some("ResourceNotFoundException;Sender"),
            Self::AlarmLimitExceeded => Some("LimitExceeded;Sender"),
            _ => None,
        }
    }
}

/// The kinds of authentication refusal (`auth::sigv4::AuthError::failure` names one). The
/// error table is here; the verifier only says which kind and, where AWS's message depends on
/// the request (a signature mismatch, a malformed header), the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No `Authorization` header.
    MissingToken,
    /// An access key that is unknown or inactive.
    UnknownKey,
    /// A malformed `Authorization` header or date, or a form of SigV4 spillway refuses.
    Incomplete,
    /// A signature that does not match, a stale or future time, a wrong credential scope.
    BadSignature,
}

/// The protocol families whose authentication errors differ in code and status.
///
/// AWS's answers, as observed and documented: awsJson services (Coral) answer `…Exception`
/// codes with 400 (SageMaker's `InvalidSignatureException` for a wrong scope is a 400; so is
/// DynamoDB's and Cognito's `UnrecognizedClientException`); rest-json front ends answer the same
/// codes with 403 (sagemaker-runtime's `MissingAuthenticationTokenException`, Lambda's
/// `UnrecognizedClientException`, EKS's `InvalidSignatureException`); awsQuery services (IAM,
/// STS) answer the common errors `MissingAuthenticationToken` (403), `InvalidClientTokenId`
/// (403), `SignatureDoesNotMatch` (403, also for an expired signature) and `IncompleteSignature`
/// (400). AWS is silent on CloudWatch's query-compatible JSON; spillway answers it as awsJson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFamily {
    /// awsJson: the SageMaker control plane, Application Auto Scaling, CloudWatch's JSON
    /// protocol, CloudTrail, the admin API.
    AwsJson,
    /// rest-json: sagemaker-runtime.
    Runtime,
    /// awsQuery: IAM, STS.
    Query,
}

impl AuthFailure {
    /// The row of the table for this refusal in a family.
    pub const fn code(self, family: AuthFamily) -> ErrorCode {
        use AuthFamily::*;
        match (self, family) {
            (Self::MissingToken, AwsJson) => ErrorCode::MissingAuthenticationTokenException,
            (Self::MissingToken, Runtime) => ErrorCode::RuntimeMissingAuthenticationToken,
            (Self::MissingToken, Query) => ErrorCode::MissingAuthenticationToken,
            (Self::UnknownKey, AwsJson) => ErrorCode::UnrecognizedClientException,
            (Self::UnknownKey, Runtime) => ErrorCode::RuntimeUnrecognizedClient,
            (Self::UnknownKey, Query) => ErrorCode::InvalidClientTokenId,
            (Self::Incomplete, AwsJson) => ErrorCode::IncompleteSignatureException,
            (Self::Incomplete, Runtime) => ErrorCode::RuntimeIncompleteSignature,
            (Self::Incomplete, Query) => ErrorCode::IncompleteSignature,
            (Self::BadSignature, AwsJson) => ErrorCode::InvalidSignatureException,
            (Self::BadSignature, Runtime) => ErrorCode::RuntimeInvalidSignature,
            (Self::BadSignature, Query) => ErrorCode::SignatureDoesNotMatch,
        }
    }

    /// AWS's fixed message for this refusal in a family, where it does not depend on the
    /// request.
    pub const fn fixed_message(self, family: AuthFamily) -> Option<&'static str> {
        match (self, family) {
            (Self::MissingToken, AuthFamily::Query) => Some("Request is missing Authentication Token"),
            (Self::MissingToken, _) => Some("Missing Authentication Token"),
            (Self::UnknownKey, _) => Some("The security token included in the request is invalid."),
            (Self::Incomplete | Self::BadSignature, _) => None,
        }
    }
}

/// The wire protocol an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson1_1: the SageMaker control plane, Application Auto Scaling, the runtime's errors
    /// and the admin API.
    AwsJson11,
    /// awsJson1_0 with query-compatible errors: CloudWatch.
    CloudWatch,
    /// awsQuery (form-encoded requests, XML answers): IAM and STS.
    Query,
}

impl Protocol {
    /// The `Content-Type` of its answers.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::AwsJson11 => "application/x-amz-json-1.1",
            Self::CloudWatch => "application/x-amz-json-1.0",
            Self::Query => "text/xml",
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// Which error of the table.
    pub code: ErrorCode,
    /// Human-readable message naming the field and the rule.
    pub message: String,
    /// Further members of the error body (e.g. `ModelError`'s `OriginalStatusCode`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error of the table with its message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// `ValidationException` (400): bad input, not found, already exists, in progress.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationException, message)
    }

    /// `SerializationException` (400): malformed JSON or a member of the wrong type.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::SerializationException, message)
    }

    /// `UnknownOperationException` (400): an operation spillway does not implement.
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnknownOperationException, message)
    }

    /// `InternalFailure` (500): a bug or a broken store, never bad input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalFailure, message)
    }

    /// An authentication refusal in a protocol family: the family's code and status, AWS's
    /// fixed message where there is one, else `message` (the verifier's, e.g. the signature
    /// mismatch with its canonical-request hint, or "Signature expired: …").
    pub fn auth(failure: AuthFailure, family: AuthFamily, message: impl Into<String>) -> Self {
        match failure.fixed_message(family) {
            Some(m) => Self::new(failure.code(family), m),
            None => Self::new(failure.code(family), message),
        }
    }

    /// Adds a member to the error body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON error body: `__type`, `message` (and `Message`, which botocore's rest-json
    /// parser reads), then the extra members.
    pub fn body(&self) -> String {
        let mut body = json!({ "__type": self.code.as_str(), "message": self.message, "Message": self.message });
        if let Value::Object(b) = &mut body {
            b.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        body.to_string()
    }

    /// The headers of the error's answer in `protocol`, besides framing and `Date`: the content
    /// type, `x-amzn-ErrorType` and, for CloudWatch's modelled errors, `x-amzn-query-error`.
    /// Every HTTP writer (axum's here, and the data plane's `AnswerHead`, which hyper and the
    /// fast path share) writes exactly these.
    pub fn headers(&self, protocol: Protocol) -> impl Iterator<Item = (&'static str, &'static str)> {
        let query = match protocol {
            Protocol::CloudWatch => self.code.query_error(),
            Protocol::AwsJson11 | Protocol::Query => None,
        };
        // awsQuery services name the error in the XML body only.
        let error_type = (protocol != Protocol::Query).then(|| ("x-amzn-errortype", self.code.as_str()));
        [
            Some(("content-type", protocol.content_type())),
            error_type,
            query.map(|q| ("x-amzn-query-error", q)),
        ]
        .into_iter()
        .flatten()
    }

    /// The awsQuery error body (IAM, STS): `ErrorResponse` in the service's XML namespace, with
    /// the fault (`Sender` for the client's errors, `Receiver` for the server's), code and
    /// message, and the request id.
    pub fn query_body(&self, xmlns: &str, request_id: &str) -> String {
        let fault = if self.status().is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        format!(
            "<ErrorResponse xmlns=\"{}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            xml_escape(xmlns),
            self.code.as_str(),
            xml_escape(&self.message),
            xml_escape(request_id)
        )
    }

    /// The whole awsQuery answer of the error (IAM, STS).
    pub fn into_query_response(self, xmlns: &str, request_id: &str) -> Response {
        let mut resp = (self.status(), self.query_body(xmlns, request_id)).into_response();
        let h = resp.headers_mut();
        for (name, value) in self.headers(Protocol::Query) {
            h.insert(name, HeaderValue::from_static(value));
        }
        resp
    }

    /// The whole answer in `protocol` (awsQuery: in IAM's namespace with a fresh request id;
    /// the IAM and STS handlers use [`ApiError::into_query_response`] with theirs).
    pub fn into_response_for(self, protocol: Protocol) -> Response {
        if protocol == Protocol::Query {
            let id = uuid::Uuid::new_v4().to_string();
            return self.into_query_response("https://iam.amazonaws.com/doc/2010-05-08/", &id);
        }
        let mut resp = (self.status(), self.body()).into_response();
        let h = resp.headers_mut();
        for (name, value) in self.headers(protocol) {
            h.insert(name, HeaderValue::from_static(value));
        }
        resp
    }
}

/// Escapes text for an XML element or a double-quoted attribute. Characters XML 1.0 cannot
/// carry at all (control characters other than tab, newline and carriage return) become U+FFFD.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::validation(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(err = %e, "store failure");
        Self::internal(format!("spillway could not access its store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_for(Protocol::AwsJson11)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_codes_only_for_cloudwatch() {
        let e = ApiError::new(ErrorCode::InvalidNextToken, "bad");
        let names = |p| e.headers(p).map(|(n, _)| n).collect::<Vec<_>>();
        assert!(names(Protocol::CloudWatch).contains(&"x-amzn-query-error"));
        assert!(!names(Protocol::AwsJson11).contains(&"x-amzn-query-error"));
        let h: Vec<_> = e.headers(Protocol::CloudWatch).collect();
        assert!(h.contains(&("x-amzn-query-error", "InvalidNextToken;Sender")));
        assert!(h.contains(&("content-type", "application/x-amz-json-1.0")));
    }

    #[test]
    fn query_error_headers_name_botocores_codes_and_the_right_fault() {
        use ErrorCode::*;
        let modelled = [
            (InvalidParameterValueException, "InvalidParameterValue"),
            (MissingRequiredParameterException, "MissingParameter"),
            (InvalidParameterCombinationException, "InvalidParameterCombination"),
            (InvalidNextToken, "InvalidNextToken"),
            (AlarmNotFound, "ResourceNotFound"),
            (InvalidFormat, "InvalidFormat"),
            (CloudWatchResourceNotFound, "ResourceNotFoundException"),
            (AlarmLimitExceeded, "LimitExceeded"),
            (ValidationException, "ValidationError"),
        ];
        for &code in ErrorCode::ALL {
            let fault = if code.status().is_server_error() {
                "Receiver"
            } else {
                "Sender"
            };
            let want = modelled
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, q)| format!("{q};{fault}"));
            assert_eq!(code.query_error().map(String::from), want, "{code:?}");
        }
    }

    #[test]
    fn query_errors_are_xml_with_fault_code_message_and_request_id() {
        let e = ApiError::new(ErrorCode::NoSuchEntity, "The user with name <b> cannot be found.");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let body = e.query_body("https://iam.amazonaws.com/doc/2010-05-08/", "r-1");
        assert_eq!(
            body,
            "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type>\
             <Code>NoSuchEntity</Code><Message>The user with name &lt;b&gt; cannot be found.</Message></Error>\
             <RequestId>r-1</RequestId></ErrorResponse>"
        );
        let h: Vec<_> = e.headers(Protocol::Query).collect();
        assert_eq!(h, vec![("content-type", "text/xml")]);
        let internal = ApiError::internal("x").query_body("ns", "r");
        assert!(internal.contains("<Type>Receiver</Type>"), "{internal}");
        for (code, status) in [
            (ErrorCode::EntityAlreadyExists, 409),
            (ErrorCode::LimitExceeded, 409),
            (ErrorCode::DeleteConflict, 409),
            (ErrorCode::MalformedPolicyDocument, 400),
            (ErrorCode::InvalidInput, 400),
            (ErrorCode::ValidationError, 400),
            (ErrorCode::InvalidAction, 400),
        ] {
            assert_eq!(code.status().as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn xml_escape_leaves_nothing_that_breaks_a_document() {
        assert_eq!(
            xml_escape("a&b<c>\"'\u{1}\r\n"),
            "a&amp;b&lt;c&gt;&quot;&apos;\u{fffd}&#13;\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_has_no_markup(s in proptest::prelude::any::<String>()) {
            let e = xml_escape(&s);
            proptest::prop_assert!(!e.contains('<') && !e.contains('>') && !e.contains('"'));
            proptest::prop_assert!(e.chars().all(|c| c == '\t' || c == '\n' || (c as u32) >= 0x20));
            // Every & starts an entity this function writes.
            for (i, _) in e.match_indices('&') {
                let rest = &e[i..];
                proptest::prop_assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#13;"].iter().any(|x| rest.starts_with(x)));
            }
        }
    }

    #[test]
    fn auth_refusals_per_family() {
        use AuthFailure::*;
        let t = |f, fam, msg: &str| {
            let e = ApiError::auth(f, fam, msg);
            (e.code.as_str(), e.status().as_u16(), e.message)
        };
        let missing = "Missing Authentication Token".to_string();
        assert_eq!(
            t(MissingToken, AuthFamily::AwsJson, "x"),
            ("MissingAuthenticationTokenException", 400, missing.clone())
        );
        assert_eq!(
            t(MissingToken, AuthFamily::Runtime, "x"),
            ("MissingAuthenticationTokenException", 403, missing)
        );
        assert_eq!(
            t(MissingToken, AuthFamily::Query, "x"),
            (
                "MissingAuthenticationToken",
                403,
                "Request is missing Authentication Token".to_string()
            )
        );
        let invalid = "The security token included in the request is invalid.".to_string();
        assert_eq!(
            t(UnknownKey, AuthFamily::AwsJson, "x"),
            ("UnrecognizedClientException", 400, invalid.clone())
        );
        assert_eq!(
            t(UnknownKey, AuthFamily::Runtime, "x"),
            ("UnrecognizedClientException", 403, invalid.clone())
        );
        assert_eq!(
            t(UnknownKey, AuthFamily::Query, "x"),
            ("InvalidClientTokenId", 403, invalid)
        );
        assert_eq!(t(BadSignature, AuthFamily::AwsJson, "m").0, "InvalidSignatureException");
        assert_eq!(t(BadSignature, AuthFamily::AwsJson, "m").1, 400);
        assert_eq!(t(BadSignature, AuthFamily::Runtime, "m").1, 403);
        assert_eq!(
            t(BadSignature, AuthFamily::Query, "m"),
            ("SignatureDoesNotMatch", 403, "m".to_string())
        );
        assert_eq!(
            t(Incomplete, AuthFamily::AwsJson, "m"),
            ("IncompleteSignatureException", 400, "m".to_string())
        );
        assert_eq!(t(Incomplete, AuthFamily::Runtime, "m").1, 403);
        assert_eq!(
            t(Incomplete, AuthFamily::Query, "m"),
            ("IncompleteSignature", 400, "m".to_string())
        );
        // Every auth row is reachable from exactly one (failure, family).
        let fams = [AuthFamily::AwsJson, AuthFamily::Runtime, AuthFamily::Query];
        let rows: std::collections::HashSet<_> = [MissingToken, UnknownKey, Incomplete, BadSignature]
            .iter()
            .flat_map(|f| fams.iter().map(move |fam| f.code(*fam)))
            .collect();
        assert_eq!(rows.len(), 12);
    }

    #[test]
    fn admin_not_found_is_a_validation_exception_with_404() {
        let e = ApiError::new(ErrorCode::AdminNotFound, "x");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert!(e.body().contains("\"__type\":\"ValidationException\""));
    }
}
