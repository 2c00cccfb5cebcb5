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

    /// The ARN of a CloudWatch Logs log group, as IAM authorizes actions on it
    /// (`arn:aws:logs:<region>:<account>:log-group:<name>`; names keep their case).
    pub fn log_group(&self, name: &str) -> String {
        format!("arn:aws:logs:{}:{}:log-group:{name}", self.region, self.account_id)
    }

    /// The ARN of a log stream
    /// (`arn:aws:logs:<region>:<account>:log-group:<group>:log-stream:<stream>`).
    pub fn log_stream(&self, group: &str, stream: &str) -> String {
        format!("{}:log-stream:{stream}", self.log_group(group))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes (also none) and `?`
/// exactly one: IAM's wildcards, also used for `[models] allowed_images`. Linear in the
/// lengths (the classic two-pointer walk with one back-track point), so no input can make it slow.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// What every typed operation tells about itself.
pub trait Operation {
    /// The operation's name on the wire (`CreateEndpoint`).
    fn name(&self) -> &'static str;
    /// The IAM action a caller needs.
    fn action(&self) -> Action;
    /// The resource the operation acts on.
    fn resource(&self, arns: &Arns) -> Resource;
    /// Further resources the operation acts on, each of which the caller must also be allowed
    /// (`CreateEndpoint` and `UpdateEndpoint` on the endpoint configuration they deploy, as
    /// AWS authorizes them).
    fn also_on(&self, arns: &Arns) -> Vec<Resource> {
        let _ = arns;
        vec![]
    }
    /// Adds the condition keys the request itself carries (`aws:RequestTag/<key>`,
    /// `aws:TagKeys`, `sagemaker:InstanceTypes`, ...) to a policy evaluation's context.
    fn conditions(&self, ctx: &mut super::policy::Context) {
        let _ = ctx;
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;
    use proptest::prelude::*;

    /// The obvious exponential definition, for comparison.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some((&c, rest)) => t
                .split_first()
                .is_some_and(|(&d, tr)| (c == b'?' || c == d) && reference(rest, tr)),
        }
    }

    #[test]
    fn wildcards() {
        assert!(glob_match(b"builtin:*", b"builtin:echo"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(!glob_match(b"builtin:*", b"python3 builtin:x"));
        assert!(glob_match(
            b"python3 /opt/models/*.py *",
            b"python3 /opt/models/a.py --port 1"
        ));
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
            prop_assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), reference(p.as_bytes(), t.as_bytes()));
        }
    }
}
