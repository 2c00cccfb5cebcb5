//! Typed operations: every request spillway serves is parsed once, at the edge, into a value of
//! one enum per AWS API ([`SageMakerOp`](super::sagemaker::SageMakerOp),
//! [`AutoScalingOp`](super::autoscaling::AutoScalingOp),
//! [`CloudWatchOp`](super::cloudwatch::CloudWatchOp), [`AdminOp`](super::admin::AdminOp), and
//! the runtime's operation in the data plane), dispatched by an exhaustive `match`.
//!
//! Each operation names its **IAM action** (`sagemaker:CreateEndpoint`) and the **resource** it
//! acts on (an ARN derived from its input, or `*`): the two values an IAM policy is evaluated
//! on. The [`operations!`](crate::operations) macro declares an API's enum from one table whose
//! every row must give the wire name, the input type and the resource, so an operation cannot
//! be added without them.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use crate::core::iam::{Action, Arns, Operation, Resource};
use crate::core::validate::ValidationError;
use crate::core::validate::model::{self, Rules};
use crate::error::ApiError;

/// The condition keys an API's requests carry (`aws:RequestTag/<key>`, `aws:TagKeys`, ...),
/// for policy evaluation. Every enum of the [`operations!`](crate::operations) table implements
/// it, so a new API says which keys it has (or that it has none: the default).
pub trait Conditions {
    /// Adds the request's own condition keys to `ctx`.
    fn request_conditions(&self, ctx: &mut crate::core::policy::Context) {
        let _ = ctx;
    }

    /// Further resources the operation acts on ([`Operation::also_on`]).
    fn also_on(&self, arns: &Arns) -> Vec<Resource> {
        let _ = arns;
        vec![]
    }
}

/// Adds `aws:RequestTag/<key>` for every tag and `aws:TagKeys` (all keys) to `ctx`.
pub fn tag_conditions<'t>(ctx: &mut crate::core::policy::Context, tags: impl IntoIterator<Item = (&'t str, &'t str)>) {
    let mut keys = vec![];
    for (k, v) in tags {
        ctx.insert(&format!("aws:RequestTag/{k}"), [v]);
        keys.push(k);
    }
    ctx.insert("aws:TagKeys", keys);
}

/// Renders a serde path the way AWS names members: dotted, 1-based list indices.
fn aws_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        let part = match seg {
            Segment::Seq { index } => (index + 1).to_string(),
            Segment::Map { key } => key.clone(),
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => continue,
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&part);
    }
    out
}

/// What the model check of each API covers. CloudWatch answers wrong types, missing members and
/// values outside an enum with its own errors (`InvalidParameterValue`, `MissingParameter`,
/// worded as CloudWatch words them), which its handler gives; the model's lengths, patterns
/// and ranges are checked for it as for the others.
fn rules(service: &str) -> Rules {
    match service {
        "cloudwatch" => Rules {
            types: false,
            required: false,
            enums: false,
        },
        _ => Rules::ALL,
    }
}

/// Checks a request against its API's model ([`model::check`]): a member of the wrong type is a
/// `SerializationException`; every broken constraint together, a `ValidationException` in
/// AWS's words (CloudWatch's query code: `ValidationError`).
pub fn check_model(service: &str, operation: &str, value: &Value) -> Result<(), ApiError> {
    match model::check(service, operation, value, rules(service)) {
        Err(w) => Err(ApiError::serialization(format!(
            "Cannot deserialize '{}': expected {}",
            w.path, w.expected
        ))),
        Ok(violations) => match ValidationError::detected(&violations) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        },
    }
}

/// Parses the awsJson request body of `operation` of `service`: malformed JSON and wrong member
/// types are `SerializationException`, then the model's constraints are checked (every
/// violation in one `ValidationException`), then the body becomes the operation's input (a
/// member spillway needs that the model leaves optional is a `ValidationException` naming it).
pub fn parse_json<T: DeserializeOwned>(service: &str, operation: &str, body: &[u8]) -> Result<T, ApiError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::serialization(format!("The request body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::serialization("The request body must be a JSON object"));
    }
    check_model(service, operation, &value)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = aws_path(e.path());
        let inner = e.into_inner().to_string();
        if let Some(field) = inner.strip_prefix("missing field `").and_then(|s| s.split('`').next()) {
            let full = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            ApiError::from(ValidationError::missing(&full))
        } else {
            let at = if path.is_empty() {
                "the request".to_string()
            } else {
                format!("'{path}'")
            };
            ApiError::serialization(format!("Cannot deserialize {at}: {inner}"))
        }
    })
}

/// Declares one API's operation enum from a table, one row per operation:
///
/// ```text
/// operations! {
///     /// doc
///     pub(crate) enum SageMakerOp: "sagemaker" {
///         CreateModel(CreateModelInput) => arn |i, arns| arns.resource("model", &i.model_name),
///         ListModels(ListInput) => any,
///     }
/// }
/// ```
///
/// It generates the enum (one variant per row, holding its parsed input), `NAMES`, a
/// `parse(name, body)` that checks the body against the service's model and deserializes it
/// into the row's input with [`parse_json`], and the [`Operation`] impl. A row's resource is `any` (`*`) or `arn` with a
/// closure from the input and the server's [`Arns`] to a [`Resource`].
#[macro_export]
macro_rules! operations {
    (
        $(#[$meta:meta])*
        $vis:vis enum $enum:ident : $service:literal {
            $( $op:ident ( $input:ty ) => $res:tt $( |$i:ident, $a:ident| $expr:expr )? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $enum {
            $( $op($input), )*
        }

        impl $enum {
            /// Every operation's wire name, in table order.
            pub const NAMES: &'static [&'static str] = &[$( stringify!($op) ),*];

            /// Parses the operation `name` with its JSON `body`; `None` for an operation this
            /// API does not have.
            pub fn parse(name: &str, body: &[u8]) -> Option<Result<Self, $crate::error::ApiError>> {
                Some(match name {
                    $( stringify!($op) => $crate::api::ops::parse_json::<$input>($service, stringify!($op), body).map($enum::$op), )*
                    _ => return None,
                })
            }
        }

        impl $crate::core::iam::Operation for $enum {
            fn name(&self) -> &'static str {
                match self {
                    $( $enum::$op(_) => stringify!($op), )*
                }
            }

            fn action(&self) -> $crate::core::iam::Action {
                $crate::core::iam::Action { service: $service, name: self.name() }
            }

            fn conditions(&self, ctx: &mut $crate::core::policy::Context) {
                <$enum as $crate::api::ops::Conditions>::request_conditions(self, ctx)
            }

            fn also_on(&self, arns: &$crate::core::iam::Arns) -> Vec<$crate::core::iam::Resource> {
                <$enum as $crate::api::ops::Conditions>::also_on(self, arns)
            }

            #[allow(unused_variables)]
            fn resource(&self, arns: &$crate::core::iam::Arns) -> $crate::core::iam::Resource {
                match self {
                    $( $enum::$op(input) => $crate::operations!(@resource input, arns, $res $( |$i, $a| $expr )?), )*
                }
            }
        }
    };
    (@resource $input:ident, $arns:ident, any) => { $crate::core::iam::Resource::Any };
    (@resource $input:ident, $arns:ident, arn |$i:ident, $a:ident| $expr:expr) => {{
        let $i = $input;
        let $a = $arns;
        $expr
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::admin::AdminOp;
    use crate::api::autoscaling::AutoScalingOp;
    use crate::api::cloudwatch::CloudWatchOp;
    use crate::api::sagemaker::SageMakerOp;

    const ARN: &str = "arn:aws:sagemaker:eu-west-1:111122223333:";
    const TAGGED: &str = "arn:aws:sagemaker:eu-west-1:111122223333:model/Tagged";

    fn arns() -> Arns {
        Arns {
            region: "eu-west-1".into(),
            account_id: "111122223333".into(),
        }
    }

    /// Checks one API against a hand-written table (independent of the `operations!` rows):
    /// every operation in order, parsed from its name and a body, names `service:Name` and the
    /// expected resource (`*`, a path under this server's ARN prefix, or a whole ARN), and is
    /// listed in docs/api-compat.md.
    fn check<T: Operation>(
        service: &str,
        names: &[&str],
        rows: &[(&str, Value, &str)],
        parse: impl Fn(&str, &[u8]) -> Option<Result<T, ApiError>>,
    ) {
        let docs = include_str!("../../docs/api-compat.md");
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            names,
            "{service}: the table's rows"
        );
        for (name, body, resource) in rows {
            let op = match parse(name, body.to_string().as_bytes()) {
                Some(Ok(op)) => op,
                Some(Err(e)) => panic!("{name}: {e}"),
                None => panic!("{name} is not an operation"),
            };
            assert_eq!(op.name(), *name);
            assert_eq!(op.action().to_string(), format!("{service}:{name}"));
            let want = match *resource {
                "*" => "*".to_string(),
                r if r.starts_with("arn:") => r.to_string(),
                r => format!("{ARN}{r}"),
            };
            assert_eq!(op.resource(&arns()).to_string(), want, "{name}");
            assert!(docs.contains(name), "{name} is not in docs/api-compat.md");
        }
        assert!(parse("NoSuchOperation", b"{}").is_none());
    }

    #[test]
    fn sagemaker_operations_name_their_action_and_resource() {
        let m = json!({"ModelName": "M"});
        let c = json!({"EndpointConfigName": "C"});
        let e = json!({"EndpointName": "E"});
        let ec = json!({"EndpointName": "E", "EndpointConfigName": "C"});
        let ic = json!({"InferenceComponentName": "I"});
        check(
            "sagemaker",
            SageMakerOp::NAMES,
            &[
                ("CreateModel", m.clone(), "model/m"),
                ("DescribeModel", m.clone(), "model/m"),
                ("DeleteModel", m, "model/m"),
                ("ListModels", json!({}), "*"),
                (
                    "CreateEndpointConfig",
                    json!({"EndpointConfigName": "C", "ProductionVariants": [{"VariantName": "V"}]}),
                    "endpoint-config/c",
                ),
                ("DescribeEndpointConfig", c.clone(), "endpoint-config/c"),
                ("DeleteEndpointConfig", c, "endpoint-config/c"),
                ("ListEndpointConfigs", json!({}), "*"),
                ("CreateEndpoint", ec.clone(), "endpoint/e"),
                ("DescribeEndpoint", e.clone(), "endpoint/e"),
                ("UpdateEndpoint", ec, "endpoint/e"),
                ("DeleteEndpoint", e, "endpoint/e"),
                ("ListEndpoints", json!({}), "*"),
                (
                    "UpdateEndpointWeightsAndCapacities",
                    json!({"EndpointName": "E", "DesiredWeightsAndCapacities": [{"VariantName": "V"}]}),
                    "endpoint/e",
                ),
                ("AddTags", json!({"ResourceArn": TAGGED, "Tags": []}), TAGGED),
                ("ListTags", json!({"ResourceArn": TAGGED}), TAGGED),
                ("DeleteTags", json!({"ResourceArn": TAGGED, "TagKeys": ["k"]}), TAGGED),
                (
                    "CreateInferenceComponent",
                    json!({"InferenceComponentName": "I", "EndpointName": "E"}),
                    "inference-component/i",
                ),
                ("DescribeInferenceComponent", ic.clone(), "inference-component/i"),
                ("ListInferenceComponents", json!({}), "*"),
                ("UpdateInferenceComponent", ic.clone(), "inference-component/i"),
                (
                    "UpdateInferenceComponentRuntimeConfig",
                    json!({"InferenceComponentName": "I", "DesiredRuntimeConfig": {"CopyCount": 1}}),
                    "inference-component/i",
                ),
                ("DeleteInferenceComponent", ic, "inference-component/i"),
            ],
            SageMakerOp::parse,
        );
    }

    const SCALABLE_TARGET: &str =
        "arn:aws:application-autoscaling:us-east-1:123456789012:scalable-target/0123456789abcdef0123456789abcdef";

    #[test]
    fn autoscaling_and_cloudwatch_operations_act_on_any_resource_but_tagging() {
        let target = json!({
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/e/variant/v",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "PolicyName": "p",
        });
        let rows: Vec<(&str, Value, &str)> = [
            "RegisterScalableTarget",
            "DescribeScalableTargets",
            "DeregisterScalableTarget",
            "PutScalingPolicy",
            "DescribeScalingPolicies",
            "DeleteScalingPolicy",
            "DescribeScalingActivities",
        ]
        .into_iter()
        .map(|n| (n, target.clone(), "*"))
        .chain(
            ["TagResource", "UntagResource", "ListTagsForResource"]
                .into_iter()
                .map(|n| {
                    (
                        n,
                        json!({"ResourceARN": SCALABLE_TARGET, "Tags": {}, "TagKeys": []}),
                        SCALABLE_TARGET,
                    )
                }),
        )
        .collect();
        check(
            "application-autoscaling",
            AutoScalingOp::NAMES,
            &rows,
            AutoScalingOp::parse,
        );
        const ALARM: &str = "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:a";
        let rows: Vec<(&str, Value, &str)> = [
            ("GetMetricStatistics", "*"),
            ("GetMetricData", "*"),
            ("ListMetrics", "*"),
            ("PutMetricAlarm", ALARM),
            ("DescribeAlarms", "*"),
            ("DescribeAlarmsForMetric", "*"),
            ("DeleteAlarms", "*"),
            ("SetAlarmState", ALARM),
            ("DescribeAlarmHistory", "*"),
            ("EnableAlarmActions", "*"),
            ("DisableAlarmActions", "*"),
            ("TagResource", ALARM),
            ("UntagResource", ALARM),
            ("ListTagsForResource", ALARM),
        ]
        .into_iter()
        .map(|(n, r)| (n, json!({"AlarmName": "a", "ResourceARN": ALARM}), r))
        .collect();
        check("cloudwatch", CloudWatchOp::NAMES, &rows, CloudWatchOp::parse);
    }

    #[test]
    fn logs_operations_act_on_the_group_or_stream() {
        let g = "/aws/sagemaker/Endpoints/e";
        let group = format!("arn:aws:logs:eu-west-1:111122223333:log-group:{g}");
        let stream = format!("{group}:log-stream:AllTraffic/i-1");
        check(
            "logs",
            crate::api::logs::LogsOp::NAMES,
            &[
                (
                    "DescribeLogGroups",
                    json!({}),
                    "arn:aws:logs:eu-west-1:111122223333:log-group::log-stream:",
                ),
                ("DescribeLogStreams", json!({"logGroupName": g}), &group),
                (
                    "GetLogEvents",
                    json!({"logGroupName": g, "logStreamName": "AllTraffic/i-1"}),
                    &stream,
                ),
                ("FilterLogEvents", json!({"logGroupName": g}), &group),
            ],
            crate::api::logs::LogsOp::parse,
        );
    }

    #[test]
    fn admin_operations_name_their_resource() {
        let events = AdminOp::ListEvents { endpoint: "E".into() };
        assert_eq!(events.action().to_string(), "spillway:ListEvents");
        assert_eq!(events.resource(&arns()).to_string(), format!("{ARN}endpoint/e"));
        let pin = AdminOp::PutCapacity {
            instance_type: "ml.g5.xlarge".into(),
            body: vec![],
        };
        assert_eq!(pin.action().to_string(), "spillway:PutCapacity");
        assert_eq!(pin.resource(&arns()), Resource::Any);
    }

    #[test]
    fn bodies_are_checked_before_any_handler_runs() {
        let err = |body: &[u8]| match SageMakerOp::parse("DescribeEndpoint", body) {
            Some(Err(e)) => (e.code.as_str(), e.message),
            _ => panic!("{body:?} parsed"),
        };
        assert_eq!(
            err(b"{}"),
            (
                "ValidationException",
                "1 validation error detected: Value null at 'endpointName' failed to satisfy constraint: Member must not be null".into()
            )
        );
        assert_eq!(err(b"[1]").0, "SerializationException");
        assert_eq!(err(b"{").0, "SerializationException");
        assert_eq!(err(br#"{"EndpointName": 5}"#).0, "SerializationException");
        assert_eq!(
            err(br#"{"EndpointName": "a_b"}"#).1,
            "1 validation error detected: Value 'a_b' at 'endpointName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
        );
    }

    /// The model (`src/core/validate/botocore.json`) has exactly the operations each API's
    /// table implements, so every input is checked.
    #[test]
    fn every_operation_is_in_the_model() {
        let apis: [(&str, &[&str]); 3] = [
            ("sagemaker", SageMakerOp::NAMES),
            ("application-autoscaling", AutoScalingOp::NAMES),
            ("cloudwatch", CloudWatchOp::NAMES),
        ];
        for (service, names) in apis {
            let mut names = names.to_vec();
            names.sort_unstable();
            assert_eq!(model::operations(service).unwrap(), names, "{service}");
        }
    }
}
