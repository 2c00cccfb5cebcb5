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

use std::fmt;

/// An IAM action: `<service prefix>:<operation>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    /// The IAM service prefix (`sagemaker`, `application-autoscaling`, `cloudwatch`, `spillway`).
    pub service: &'static str,
    /// The operation's name.
    pub name: &'static str,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.name)
    }
}

/// What an operation acts on, as an IAM policy's `Resource` matches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// One resource, by ARN.
    Arn(String),
    /// No particular resource (`List*`, CloudWatch reads, Application Auto Scaling): AWS
    /// authorizes these on `*`.
    Any,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Arn(a) => f.write_str(a),
            Resource::Any => f.write_str("*"),
        }
    }
}

/// Builds the ARNs of this server's resources (its region and account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arns {
    /// Region used in ARNs.
    pub region: String,
    /// Account id used in ARNs.
    pub account_id: String,
}

impl Arns {
    /// The ARN of a SageMaker resource (`kind` is `model`, `endpoint-config` or `endpoint`).
    /// AWS lower-cases the name in ARNs.
    pub fn sagemaker(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:sagemaker:{}:{}:{kind}/{}",
            self.region,
            self.account_id,
            name.to_ascii_lowercase()
        )
    }

    /// [`Resource::Arn`] of a SageMaker resource.
    pub fn resource(&self, kind: &str, name: &str) -> Resource {
        Resource::Arn(self.sagemaker(kind, name))
    }
}

/// What every typed operation tells about itself.
pub trait Operation {
    /// The operation's name on the wire (`CreateEndpoint`).
    fn name(&self) -> &'static str;
    /// The IAM action a caller needs.
    fn action(&self) -> Action;
    /// The resource the operation acts on.
    fn resource(&self, arns: &Arns) -> Resource;
}

/// Declares one API's operation enum from a table, one row per operation:
///
/// ```text
/// operations! {
///     /// doc
///     pub(crate) enum SageMakerOp: "sagemaker" {
///         CreateModel(CreateModelInput) => |i, arns| arns.resource("model", &i.model_name),
///         ListModels(ListInput) => any,
///     }
/// }
/// ```
///
/// It generates the enum (one variant per row, holding its parsed input), `NAMES`, a
/// `parse(name, body)` that deserializes the body into the row's input with
/// [`parse_json`](super::sagemaker::parse), and the [`Operation`] impl.
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
                    $( stringify!($op) => $crate::api::sagemaker::parse::<$input>(body).map($enum::$op), )*
                    _ => return None,
                })
            }
        }

        impl $crate::api::ops::Operation for $enum {
            fn name(&self) -> &'static str {
                match self {
                    $( $enum::$op(_) => stringify!($op), )*
                }
            }

            fn action(&self) -> $crate::api::ops::Action {
                $crate::api::ops::Action { service: $service, name: self.name() }
            }

            #[allow(unused_variables)]
            fn resource(&self, arns: &$crate::api::ops::Arns) -> $crate::api::ops::Resource {
                match self {
                    $( $enum::$op(input) => $crate::operations!(@resource input, arns, $res $( |$i, $a| $expr )?), )*
                }
            }
        }
    };
    (@resource $input:ident, $arns:ident, any) => { $crate::api::ops::Resource::Any };
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

    fn arns() -> Arns {
        Arns {
            region: "eu-west-1".into(),
            account_id: "111122223333".into(),
        }
    }

    #[test]
    fn every_operation_parses_from_its_name_and_names_its_action() {
        fn check<T: Operation>(names: &[&str], service: &str, body: &[u8], parse: impl Fn(&str, &[u8]) -> Option<T>) {
            for name in names {
                let op = parse(name, body).unwrap_or_else(|| panic!("{name} does not parse"));
                assert_eq!(op.name(), *name);
                assert_eq!(op.action().to_string(), format!("{service}:{name}"));
            }
            assert!(parse("NoSuchOperation", body).is_none());
        }
        // Inputs with required members fail validation on `{}`; these name an operation only.
        let lenient = |n: &str, b: &[u8]| SageMakerOp::parse(n, b).map(|r| r.ok());
        for name in SageMakerOp::NAMES {
            assert!(lenient(name, b"{}").is_some(), "{name}");
        }
        check(
            &["ListModels", "ListEndpointConfigs", "ListEndpoints"],
            "sagemaker",
            b"{}",
            |n, b| SageMakerOp::parse(n, b).and_then(Result::ok),
        );
        check(
            &[
                "DescribeScalableTargets",
                "DescribeScalingPolicies",
                "DescribeScalingActivities",
            ],
            "application-autoscaling",
            br#"{"ServiceNamespace": "sagemaker"}"#,
            |n, b| AutoScalingOp::parse(n, b).and_then(Result::ok),
        );
        check(CloudWatchOp::NAMES, "cloudwatch", b"{}", |n, b| {
            CloudWatchOp::parse(n, b).and_then(Result::ok)
        });
        assert_eq!(AdminOp::ListCapacity.action().to_string(), "spillway:ListCapacity");
    }

    #[test]
    fn resources_are_derived_from_the_input() {
        let op = SageMakerOp::parse(
            "CreateEndpoint",
            br#"{"EndpointName": "MyEndpoint", "EndpointConfigName": "c"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            op.resource(&arns()).to_string(),
            "arn:aws:sagemaker:eu-west-1:111122223333:endpoint/myendpoint"
        );
        let tag = "arn:aws:sagemaker:eu-west-1:111122223333:model/m";
        let op = SageMakerOp::parse("ListTags", format!(r#"{{"ResourceArn": "{tag}"}}"#).as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(op.resource(&arns()), Resource::Arn(tag.into()));
        let op = SageMakerOp::parse("ListEndpoints", b"{}").unwrap().unwrap();
        assert_eq!(op.resource(&arns()), Resource::Any);
        let op = SageMakerOp::parse("DeleteEndpointConfig", br#"{"EndpointConfigName": "C1"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            op.resource(&arns()).to_string(),
            "arn:aws:sagemaker:eu-west-1:111122223333:endpoint-config/c1"
        );
        let op = AdminOp::PutCapacity {
            instance_type: "ml.g5.xlarge".into(),
            body: vec![],
        };
        assert_eq!(op.resource(&arns()).to_string(), "*");
        let op = AdminOp::ListEvents { endpoint: "E".into() };
        assert_eq!(
            op.resource(&arns()).to_string(),
            "arn:aws:sagemaker:eu-west-1:111122223333:endpoint/e"
        );
    }
}
