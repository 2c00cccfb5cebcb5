//! What IAM policies are evaluated on: every operation names the **action** a caller needs
//! (`sagemaker:CreateEndpoint`) and the **resource** it acts on (an ARN, or `*`). The typed
//! operations of `api/` and the data plane's `RuntimeOp` implement [`Operation`].

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
