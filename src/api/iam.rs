//! IAM and STS over the awsQuery protocol, on the same listener as everything else.
//!
//! A request is `POST /` with a form-encoded body (`Content-Type:
//! application/x-www-form-urlencoded`) and no `X-Amz-Target`: `Action=CreateUser&Version=
//! 2010-05-08&UserName=…`. `Version` picks the API (`2010-05-08` IAM, `2011-06-15` STS); lists
//! are `Tags.member.1.Key`, `TagKeys.member.1`. Each request is parsed once into a typed
//! operation ([`IamOp`], [`StsOp`]) naming its IAM action and resource; changes become
//! `control::identity::IamCommand`s. Answers are XML in the service's namespace, as IAM and STS
//! write them; errors are `ErrorResponse` documents from the one table in `error.rs`.
//!
//! The caller (for `GetCallerIdentity`, and `GetUser`/`*AccessKey*` without a `UserName`) comes
//! from the [`Caller`] request extension the authentication layer inserts. Without one
//! (authentication off), the caller is anonymous: `GetCallerIdentity` answers the account's root
//! identity (`arn:aws:iam::<account>:root`, user id = account id), and operations that need the
//! caller's user name answer IAM's `ValidationError` for non-user credentials.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Requester;
use super::ops::{Action, Arns, Operation, Resource};
use crate::auth::Caller;
use crate::control::app::App;
use crate::control::identity::{
    self, IamAccessKeyRow, IamCommand, IamError, IamGroupRow, IamOutcome, IamUserRow, Page,
};
use crate::core::model::Tag;
use crate::error::{ApiError, ErrorCode, xml_escape};

/// IAM's API version, and the `Version` that selects it.
pub const IAM_VERSION: &str = "2010-05-08";
/// STS's API version.
pub const STS_VERSION: &str = "2011-06-15";
/// IAM's XML namespace.
pub const IAM_XMLNS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// STS's XML namespace.
pub const STS_XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

impl From<IamError> for ApiError {
    fn from(e: IamError) -> Self {
        let code = match &e {
            IamError::NoSuchEntity(_) => ErrorCode::NoSuchEntity,
            IamError::EntityAlreadyExists(_) => ErrorCode::EntityAlreadyExists,
            IamError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            IamError::DeleteConflict(_) => ErrorCode::DeleteConflict,
            IamError::MalformedPolicyDocument(_) => ErrorCode::MalformedPolicyDocument,
            IamError::Validation(_) => ErrorCode::ValidationError,
            IamError::InvalidInput(_) => ErrorCode::InvalidInput,
            IamError::Store(_) | IamError::Random(_) => {
                tracing::error!(error = %e, "IAM command failed");
                ErrorCode::InternalFailure
            }
        };
        ApiError::new(code, e.to_string())
    }
}

// ------------------------------------------------------------------------------------------
// the form body
// ------------------------------------------------------------------------------------------

/// The parameters of an awsQuery request (a later duplicate replaces an earlier one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

fn validation(message: String) -> ApiError {
    ApiError::new(ErrorCode::ValidationError, message)
}

impl Params {
    /// Parses a form-encoded body.
    pub fn parse(body: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// A parameter, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn opt(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }

    /// A required parameter; missing, it is IAM's "Member must not be null" naming `member`.
    fn req(&self, key: &str, member: &str) -> Result<String, ApiError> {
        self.opt(key).ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }

    /// An integer parameter.
    fn int(&self, key: &str, member: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    validation(format!(
                        "1 validation error detected: Value '{v}' at '{member}' failed to satisfy constraint: Member must be an integer"
                    ))
                })
            })
            .transpose()
    }

    /// The 1-based indices `n` of `<prefix>.member.<n>[<suffix>]` present, in order.
    fn indices(&self, prefix: &str) -> Vec<usize> {
        let head = format!("{prefix}.member.");
        let mut out: Vec<usize> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(&head))
            .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A list of strings: `<prefix>.member.1`, `.2`, …
    fn list(&self, prefix: &str) -> Vec<String> {
        self.indices(prefix)
            .into_iter()
            .filter_map(|n| self.opt(&format!("{prefix}.member.{n}")))
            .collect()
    }

    /// A list of tags: `<prefix>.member.N.Key` and `.Value` (a tag without a key is refused).
    fn tags(&self, prefix: &str, member: &str) -> Result<Vec<Tag>, ApiError> {
        self.indices(prefix)
            .into_iter()
            .map(|n| {
                let key = self.req(&format!("{prefix}.member.{n}.Key"), &format!("{member}.{n}.member.key"))?;
                let value = self.req(
                    &format!("{prefix}.member.{n}.Value"),
                    &format!("{member}.{n}.member.value"),
                )?;
                Ok(Tag { key, value })
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// the operations
// ------------------------------------------------------------------------------------------

/// `Marker` and `MaxItems` of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paging {
    /// `Marker`.
    pub marker: Option<String>,
    /// `MaxItems`.
    pub max_items: Option<i64>,
}

/// IAM's operations, each authorized as `iam:<Name>` on the user or group it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the members are the operations' request members, named as IAM names them
pub enum IamOp {
    CreateUser {
        user_name: String,
        path: Option<String>,
        tags: Vec<Tag>,
    },
    GetUser {
        user_name: Option<String>,
    },
    ListUsers {
        path_prefix: Option<String>,
        paging: Paging,
    },
    DeleteUser {
        user_name: String,
    },
    TagUser {
        user_name: String,
        tags: Vec<Tag>,
    },
    UntagUser {
        user_name: String,
        tag_keys: Vec<String>,
    },
    ListUserTags {
        user_name: String,
        paging: Paging,
    },
    CreateAccessKey {
        user_name: Option<String>,
    },
    ListAccessKeys {
        user_name: Option<String>,
        paging: Paging,
    },
    DeleteAccessKey {
        user_name: Option<String>,
        access_key_id: String,
    },
    UpdateAccessKey {
        user_name: Option<String>,
        access_key_id: String,
        status: String,
    },
    PutUserPolicy {
        user_name: String,
        policy_name: String,
        document: String,
    },
    GetUserPolicy {
        user_name: String,
        policy_name: String,
    },
    ListUserPolicies {
        user_name: String,
        paging: Paging,
    },
    DeleteUserPolicy {
        user_name: String,
        policy_name: String,
    },
    CreateGroup {
        group_name: String,
        path: Option<String>,
    },
    GetGroup {
        group_name: String,
        paging: Paging,
    },
    DeleteGroup {
        group_name: String,
    },
    AddUserToGroup {
        group_name: String,
        user_name: String,
    },
    RemoveUserFromGroup {
        group_name: String,
        user_name: String,
    },
    ListGroupsForUser {
        user_name: String,
        paging: Paging,
    },
    PutGroupPolicy {
        group_name: String,
        policy_name: String,
        document: String,
    },
    GetGroupPolicy {
        group_name: String,
        policy_name: String,
    },
    ListGroupPolicies {
        group_name: String,
        paging: Paging,
    },
    DeleteGroupPolicy {
        group_name: String,
        policy_name: String,
    },
    GetAccessKeyLastUsed {
        access_key_id: String,
    },
    /// A listing of credentials or attachments spillway never holds (see [`Unheld`]).
    ListUnheld {
        kind: Unheld,
        owner: Option<String>,
        paging: Paging,
    },
    /// `GetLoginProfile` (`delete: false`) or `DeleteLoginProfile`: spillway users have no
    /// console password, so both answer `NoSuchEntity` for a user that exists.
    LoginProfile {
        user_name: Option<String>,
        delete: bool,
    },
}

/// What an account holds in IAM that spillway never has: managed policies, SSH keys, MFA
/// devices, signing certificates, service-specific credentials, roles. Tools that clean a user up
/// before deleting it (Terraform's `force_destroy`, `aws iam delete-user` scripts) list them;
/// spillway answers each listing as IAM answers for an account that has none: the owner must
/// exist, and the list is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unheld {
    /// `ListAttachedUserPolicies` (a user's managed policies).
    AttachedUserPolicies,
    /// `ListAttachedGroupPolicies` (a group's managed policies).
    AttachedGroupPolicies,
    /// `ListSSHPublicKeys`.
    SshPublicKeys,
    /// `ListMFADevices`.
    MfaDevices,
    /// `ListVirtualMFADevices` (the account's).
    VirtualMfaDevices,
    /// `ListSigningCertificates`.
    SigningCertificates,
    /// `ListServiceSpecificCredentials`.
    ServiceSpecificCredentials,
    /// `ListRoles` (the account's).
    Roles,
}

impl Unheld {
    /// Every kind, with its operation name, the element its answer lists under, and what owns
    /// it (`"user"`, `"group"`, or `""` for the account).
    const ALL: &'static [(Self, &'static str, &'static str, &'static str)] = &[
        (
            Self::AttachedUserPolicies,
            "ListAttachedUserPolicies",
            "AttachedPolicies",
            "user",
        ),
        (
            Self::AttachedGroupPolicies,
            "ListAttachedGroupPolicies",
            "AttachedPolicies",
            "group",
        ),
        (Self::SshPublicKeys, "ListSSHPublicKeys", "SSHPublicKeys", "user"),
        (Self::MfaDevices, "ListMFADevices", "MFADevices", "user"),
        (
            Self::VirtualMfaDevices,
            "ListVirtualMFADevices",
            "VirtualMFADevices",
            "",
        ),
        (
            Self::SigningCertificates,
            "ListSigningCertificates",
            "Certificates",
            "user",
        ),
        (
            Self::ServiceSpecificCredentials,
            "ListServiceSpecificCredentials",
            "ServiceSpecificCredentials",
            "user",
        ),
        (Self::Roles, "ListRoles", "Roles", ""),
    ];

    fn row(self) -> &'static (Self, &'static str, &'static str, &'static str) {
        Self::ALL.iter().find(|r| r.0 == self).expect("every kind has a row")
    }

    fn named(action: &str) -> Option<Self> {
        Self::ALL.iter().find(|r| r.1 == action).map(|r| r.0)
    }

    /// The operation's wire name.
    pub fn operation(self) -> &'static str {
        self.row().1
    }

    /// The answer's list element.
    fn element(self) -> &'static str {
        self.row().2
    }

    /// `"user"`, `"group"` or `""` (the account).
    fn owner_kind(self) -> &'static str {
        self.row().3
    }

    /// Whether the request must name its owner (the user listings default to the caller).
    fn owner_required(self) -> bool {
        matches!(self, Self::AttachedUserPolicies | Self::AttachedGroupPolicies)
    }
}

impl IamOp {
    /// Every operation's wire name.
    pub const NAMES: &'static [&'static str] = &[
        "CreateUser",
        "GetUser",
        "ListUsers",
        "DeleteUser",
        "TagUser",
        "UntagUser",
        "ListUserTags",
        "CreateAccessKey",
        "ListAccessKeys",
        "DeleteAccessKey",
        "UpdateAccessKey",
        "PutUserPolicy",
        "GetUserPolicy",
        "ListUserPolicies",
        "DeleteUserPolicy",
        "CreateGroup",
        "GetGroup",
        "DeleteGroup",
        "AddUserToGroup",
        "RemoveUserFromGroup",
        "ListGroupsForUser",
        "PutGroupPolicy",
        "GetGroupPolicy",
        "ListGroupPolicies",
        "DeleteGroupPolicy",
        "GetAccessKeyLastUsed",
        "ListAttachedUserPolicies",
        "ListAttachedGroupPolicies",
        "ListSSHPublicKeys",
        "ListMFADevices",
        "ListVirtualMFADevices",
        "ListSigningCertificates",
        "ListServiceSpecificCredentials",
        "ListRoles",
        "GetLoginProfile",
        "DeleteLoginProfile",
    ];

    /// Parses the operation `action` from its parameters; `None` for an action IAM lacks here.
    pub fn parse(action: &str, p: &Params) -> Option<Result<Self, ApiError>> {
        let user = || p.req("UserName", "userName");
        let group = || p.req("GroupName", "groupName");
        let policy = || p.req("PolicyName", "policyName");
        let paging = || -> Result<Paging, ApiError> {
            Ok(Paging {
                marker: p.opt("Marker"),
                max_items: p.int("MaxItems", "maxItems")?,
            })
        };
        let op = || -> Result<Self, ApiError> {
            Ok(match action {
                "CreateUser" => Self::CreateUser {
                    user_name: user()?,
                    path: p.opt("Path"),
                    tags: p.tags("Tags", "tags")?,
                },
                "GetUser" => Self::GetUser {
                    user_name: p.opt("UserName"),
                },
                "ListUsers" => Self::ListUsers {
                    path_prefix: p.opt("PathPrefix"),
                    paging: paging()?,
                },
                "DeleteUser" => Self::DeleteUser { user_name: user()? },
                "TagUser" => Self::TagUser {
                    user_name: user()?,
                    tags: p.tags("Tags", "tags")?,
                },
                "UntagUser" => Self::UntagUser {
                    user_name: user()?,
                    tag_keys: p.list("TagKeys"),
                },
                "ListUserTags" => Self::ListUserTags {
                    user_name: user()?,
                    paging: paging()?,
                },
                "CreateAccessKey" => Self::CreateAccessKey {
                    user_name: p.opt("UserName"),
                },
                "ListAccessKeys" => Self::ListAccessKeys {
                    user_name: p.opt("UserName"),
                    paging: paging()?,
                },
                "DeleteAccessKey" => Self::DeleteAccessKey {
                    user_name: p.opt("UserName"),
                    access_key_id: p.req("AccessKeyId", "accessKeyId")?,
                },
                "UpdateAccessKey" => Self::UpdateAccessKey {
                    user_name: p.opt("UserName"),
                    access_key_id: p.req("AccessKeyId", "accessKeyId")?,
                    status: p.req("Status", "status")?,
                },
                "PutUserPolicy" => Self::PutUserPolicy {
                    user_name: user()?,
                    policy_name: policy()?,
                    document: p.req("PolicyDocument", "policyDocument")?,
                },
                "GetUserPolicy" => Self::GetUserPolicy {
                    user_name: user()?,
                    policy_name: policy()?,
                },
                "ListUserPolicies" => Self::ListUserPolicies {
                    user_name: user()?,
                    paging: paging()?,
                },
                "DeleteUserPolicy" => Self::DeleteUserPolicy {
                    user_name: user()?,
                    policy_name: policy()?,
                },
                "CreateGroup" => Self::CreateGroup {
                    group_name: group()?,
                    path: p.opt("Path"),
                },
                "GetGroup" => Self::GetGroup {
                    group_name: group()?,
                    paging: paging()?,
                },
                "DeleteGroup" => Self::DeleteGroup { group_name: group()? },
                "AddUserToGroup" => Self::AddUserToGroup {
                    group_name: group()?,
                    user_name: user()?,
                },
                "RemoveUserFromGroup" => Self::RemoveUserFromGroup {
                    group_name: group()?,
                    user_name: user()?,
                },
                "ListGroupsForUser" => Self::ListGroupsForUser {
                    user_name: user()?,
                    paging: paging()?,
                },
                "PutGroupPolicy" => Self::PutGroupPolicy {
                    group_name: group()?,
                    policy_name: policy()?,
                    document: p.req("PolicyDocument", "policyDocument")?,
                },
                "GetGroupPolicy" => Self::GetGroupPolicy {
                    group_name: group()?,
                    policy_name: policy()?,
                },
                "ListGroupPolicies" => Self::ListGroupPolicies {
                    group_name: group()?,
                    paging: paging()?,
                },
                "DeleteGroupPolicy" => Self::DeleteGroupPolicy {
                    group_name: group()?,
                    policy_name: policy()?,
                },
                "GetAccessKeyLastUsed" => Self::GetAccessKeyLastUsed {
                    access_key_id: p.req("AccessKeyId", "accessKeyId")?,
                },
                "GetLoginProfile" | "DeleteLoginProfile" => Self::LoginProfile {
                    user_name: p.opt("UserName"),
                    delete: action == "DeleteLoginProfile",
                },
                other => {
                    let kind = Unheld::named(other).expect("checked against NAMES");
                    let owner = match kind.owner_kind() {
                        "user" if kind.owner_required() => Some(user()?),
                        "group" => Some(group()?),
                        "user" => p.opt("UserName"),
                        _ => None,
                    };
                    Self::ListUnheld {
                        kind,
                        owner,
                        paging: paging()?,
                    }
                }
            })
        };
        Self::NAMES.contains(&action).then(op)
    }

    /// Fills in the caller's user name where the request names none (`GetUser`,
    /// `CreateAccessKey`, `ListAccessKeys`, `DeleteAccessKey`, `UpdateAccessKey` act on the
    /// caller then, as in IAM). An anonymous caller has no user name: IAM's `ValidationError`.
    pub fn resolve_caller(&mut self, caller: &Caller) -> Result<(), ApiError> {
        let slot = match self {
            Self::GetUser { user_name }
            | Self::CreateAccessKey { user_name }
            | Self::ListAccessKeys { user_name, .. }
            | Self::DeleteAccessKey { user_name, .. }
            | Self::UpdateAccessKey { user_name, .. }
            | Self::LoginProfile { user_name, .. } => user_name,
            Self::ListUnheld { kind, owner, .. } if kind.owner_kind() == "user" => owner,
            _ => return Ok(()),
        };
        if slot.is_none() {
            match caller.principal() {
                Some(p) => *slot = Some(p.user_name.clone()),
                None => {
                    return Err(validation(
                        "Must specify userName when calling with non-User credentials".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `arn:aws:iam::<account>:<kind>/<name>` as a [`Resource`]. IAM evaluates the resource with
/// the entity's path; the request names only the entity, so a path other than `/` is not in
/// this ARN (except on `CreateUser` and `CreateGroup`, whose requests carry it).
fn iam_resource(arns: &Arns, kind: &str, path: Option<&str>, name: &str) -> Resource {
    Resource::Arn(format!(
        "arn:aws:iam::{}:{kind}{}{name}",
        arns.account_id,
        path.unwrap_or("/")
    ))
}

impl IamOp {
    /// The user (`"user"`) or group (`"group"`) the operation acts on, as the request names it.
    fn target(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::ListUsers { .. }
            | Self::CreateUser { .. }
            | Self::CreateGroup { .. }
            | Self::GetAccessKeyLastUsed { .. } => None,
            Self::ListUnheld { kind, owner, .. } => match kind.owner_kind() {
                "" => None,
                k => owner.as_deref().map(|n| (k, n)),
            },
            Self::LoginProfile { user_name, .. } => user_name.as_deref().map(|n| ("user", n)),
            Self::GetUser { user_name }
            | Self::CreateAccessKey { user_name }
            | Self::ListAccessKeys { user_name, .. }
            | Self::DeleteAccessKey { user_name, .. }
            | Self::UpdateAccessKey { user_name, .. } => user_name.as_deref().map(|n| ("user", n)),
            Self::DeleteUser { user_name }
            | Self::TagUser { user_name, .. }
            | Self::UntagUser { user_name, .. }
            | Self::ListUserTags { user_name, .. }
            | Self::PutUserPolicy { user_name, .. }
            | Self::GetUserPolicy { user_name, .. }
            | Self::ListUserPolicies { user_name, .. }
            | Self::DeleteUserPolicy { user_name, .. }
            | Self::ListGroupsForUser { user_name, .. } => Some(("user", user_name)),
            Self::GetGroup { group_name, .. }
            | Self::DeleteGroup { group_name }
            | Self::AddUserToGroup { group_name, .. }
            | Self::RemoveUserFromGroup { group_name, .. }
            | Self::PutGroupPolicy { group_name, .. }
            | Self::GetGroupPolicy { group_name, .. }
            | Self::ListGroupPolicies { group_name, .. }
            | Self::DeleteGroupPolicy { group_name, .. } => Some(("group", group_name)),
        }
    }

    /// The resource a policy is evaluated on: the stored ARN of the user or group the request
    /// names (IAM names are case-insensitive and carry a path, so `ADMINS` is the group
    /// `arn:…:group/ops/admins`), or, for one that does not exist, the ARN as the request
    /// spells it.
    pub fn stored_resource(&self, app: &App) -> Resource {
        if let Self::GetAccessKeyLastUsed { access_key_id } = self {
            // Authorized on the user the key belongs to, as IAM does.
            return identity::access_key_owner(app, access_key_id).map_or(Resource::Any, |(u, _)| Resource::Arn(u.arn));
        }
        let stored = match self.target() {
            Some(("user", name)) => identity::user(app, name).ok().map(|u| u.arn),
            Some((_, name)) => identity::group(app, name).ok().map(|(g, _)| g.arn),
            None => None,
        };
        stored.map_or_else(|| self.resource(&app.arns()), Resource::Arn)
    }
}

impl Operation for IamOp {
    fn name(&self) -> &'static str {
        match self {
            Self::CreateUser { .. } => "CreateUser",
            Self::GetUser { .. } => "GetUser",
            Self::ListUsers { .. } => "ListUsers",
            Self::DeleteUser { .. } => "DeleteUser",
            Self::TagUser { .. } => "TagUser",
            Self::UntagUser { .. } => "UntagUser",
            Self::ListUserTags { .. } => "ListUserTags",
            Self::CreateAccessKey { .. } => "CreateAccessKey",
            Self::ListAccessKeys { .. } => "ListAccessKeys",
            Self::DeleteAccessKey { .. } => "DeleteAccessKey",
            Self::UpdateAccessKey { .. } => "UpdateAccessKey",
            Self::PutUserPolicy { .. } => "PutUserPolicy",
            Self::GetUserPolicy { .. } => "GetUserPolicy",
            Self::ListUserPolicies { .. } => "ListUserPolicies",
            Self::DeleteUserPolicy { .. } => "DeleteUserPolicy",
            Self::CreateGroup { .. } => "CreateGroup",
            Self::GetGroup { .. } => "GetGroup",
            Self::DeleteGroup { .. } => "DeleteGroup",
            Self::AddUserToGroup { .. } => "AddUserToGroup",
            Self::RemoveUserFromGroup { .. } => "RemoveUserFromGroup",
            Self::ListGroupsForUser { .. } => "ListGroupsForUser",
            Self::PutGroupPolicy { .. } => "PutGroupPolicy",
            Self::GetGroupPolicy { .. } => "GetGroupPolicy",
            Self::ListGroupPolicies { .. } => "ListGroupPolicies",
            Self::DeleteGroupPolicy { .. } => "DeleteGroupPolicy",
            Self::GetAccessKeyLastUsed { .. } => "GetAccessKeyLastUsed",
            Self::ListUnheld { kind, .. } => kind.operation(),
            Self::LoginProfile { delete: false, .. } => "GetLoginProfile",
            Self::LoginProfile { delete: true, .. } => "DeleteLoginProfile",
        }
    }

    fn action(&self) -> Action {
        Action {
            service: "iam",
            name: self.name(),
        }
    }

    /// As IAM's authorization reference lists them: user operations on the user (group
    /// membership changes and `ListGroupsForUser` too: `AddUserToGroup` and
    /// `RemoveUserFromGroup` are on the group), group operations on the group, `ListUsers` on
    /// `*`. An operation on the caller's own user (no `UserName`) is on that user once
    /// [`IamOp::resolve_caller`] has run, and on `*` before.
    fn resource(&self, arns: &Arns) -> Resource {
        let user = |name: &str| iam_resource(arns, "user", None, name);
        let group = |name: &str| iam_resource(arns, "group", None, name);
        match self {
            Self::ListUsers { .. } | Self::GetAccessKeyLastUsed { .. } => Resource::Any,
            Self::ListUnheld { kind, owner, .. } => match (kind.owner_kind(), owner) {
                ("user", Some(n)) => user(n),
                ("group", Some(n)) => group(n),
                _ => Resource::Any,
            },
            Self::LoginProfile { user_name, .. } => user_name.as_deref().map_or(Resource::Any, user),
            Self::CreateUser { user_name, path, .. } => iam_resource(arns, "user", path.as_deref(), user_name),
            Self::GetUser { user_name }
            | Self::CreateAccessKey { user_name }
            | Self::ListAccessKeys { user_name, .. }
            | Self::DeleteAccessKey { user_name, .. }
            | Self::UpdateAccessKey { user_name, .. } => user_name.as_deref().map_or(Resource::Any, user),
            Self::DeleteUser { user_name }
            | Self::TagUser { user_name, .. }
            | Self::UntagUser { user_name, .. }
            | Self::ListUserTags { user_name, .. }
            | Self::PutUserPolicy { user_name, .. }
            | Self::GetUserPolicy { user_name, .. }
            | Self::ListUserPolicies { user_name, .. }
            | Self::DeleteUserPolicy { user_name, .. }
            | Self::ListGroupsForUser { user_name, .. } => user(user_name),
            Self::CreateGroup { group_name, path } => iam_resource(arns, "group", path.as_deref(), group_name),
            Self::GetGroup { group_name, .. }
            | Self::DeleteGroup { group_name }
            | Self::AddUserToGroup { group_name, .. }
            | Self::RemoveUserFromGroup { group_name, .. }
            | Self::PutGroupPolicy { group_name, .. }
            | Self::GetGroupPolicy { group_name, .. }
            | Self::ListGroupPolicies { group_name, .. }
            | Self::DeleteGroupPolicy { group_name, .. } => group(group_name),
        }
    }
}

/// STS's operations (`sts:<Name>` on `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsOp {
    /// `GetCallerIdentity`: who signed the request.
    GetCallerIdentity,
}

impl StsOp {
    /// Every operation's wire name.
    pub const NAMES: &'static [&'static str] = &["GetCallerIdentity"];

    /// Parses the operation `action`; `None` for an action STS lacks here.
    pub fn parse(action: &str, _p: &Params) -> Option<Result<Self, ApiError>> {
        match action {
            "GetCallerIdentity" => Some(Ok(Self::GetCallerIdentity)),
            _ => None,
        }
    }
}

impl Operation for StsOp {
    fn name(&self) -> &'static str {
        match self {
            Self::GetCallerIdentity => "GetCallerIdentity",
        }
    }

    fn action(&self) -> Action {
        Action {
            service: "sts",
            name: self.name(),
        }
    }

    fn resource(&self, _arns: &Arns) -> Resource {
        Resource::Any
    }
}

/// An operation of one of the awsQuery APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryOp {
    /// `Version=2010-05-08`.
    Iam(IamOp),
    /// `Version=2011-06-15`.
    Sts(StsOp),
}

impl QueryOp {
    /// Parses a form body into its API's operation. An unknown `Version` or `Action` is
    /// `InvalidAction` in AWS's words ("Could not find operation X for version Y").
    pub fn parse(p: &Params) -> Result<Self, ApiError> {
        let action = p.get("Action").unwrap_or("");
        let version = p.get("Version").unwrap_or("");
        let parsed = match version {
            IAM_VERSION => IamOp::parse(action, p).map(|r| r.map(QueryOp::Iam)),
            STS_VERSION => StsOp::parse(action, p).map(|r| r.map(QueryOp::Sts)),
            _ => None,
        };
        parsed.unwrap_or_else(|| {
            Err(ApiError::new(
                ErrorCode::InvalidAction,
                format!("Could not find operation {action} for version {version}"),
            ))
        })
    }

    /// The XML namespace of its API.
    pub fn xmlns(&self) -> &'static str {
        match self {
            Self::Iam(_) => IAM_XMLNS,
            Self::Sts(_) => STS_XMLNS,
        }
    }
}

impl Operation for QueryOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Iam(op) => op.name(),
            Self::Sts(op) => op.name(),
        }
    }

    fn action(&self) -> Action {
        match self {
            Self::Iam(op) => op.action(),
            Self::Sts(op) => op.action(),
        }
    }

    fn resource(&self, arns: &Arns) -> Resource {
        match self {
            Self::Iam(op) => op.resource(arns),
            Self::Sts(op) => op.resource(arns),
        }
    }
}

// ------------------------------------------------------------------------------------------
// XML
// ------------------------------------------------------------------------------------------

/// A tiny XML writer: elements and escaped text.
#[derive(Debug, Default)]
struct Xml(String);

impl Xml {
    fn open(&mut self, tag: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    fn close(&mut self, tag: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    fn leaf(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        self.0.push_str(&xml_escape(text));
        self.close(tag)
    }

    fn paged_end<T>(&mut self, page: &Page<T>) -> &mut Self {
        self.leaf("IsTruncated", if page.marker.is_some() { "true" } else { "false" });
        if let Some(m) = &page.marker {
            self.leaf("Marker", m);
        }
        self
    }

    fn tags(&mut self, tag: &str, tags: &[Tag]) -> &mut Self {
        self.open(tag);
        for t in tags {
            self.open("member")
                .leaf("Key", &t.key)
                .leaf("Value", &t.value)
                .close("member");
        }
        self.close(tag)
    }

    /// A user; `tags` writes its tags too (`GetUser`, `CreateUser`; listings leave them out,
    /// as IAM does).
    fn user(&mut self, tag: &str, u: &IamUserRow, tags: bool) -> &mut Self {
        self.open(tag)
            .leaf("Path", &u.path)
            .leaf("UserName", &u.name)
            .leaf("UserId", &u.user_id)
            .leaf("Arn", &u.arn)
            .leaf("CreateDate", &iso8601(u.created));
        if tags && !u.tags.is_empty() {
            self.tags("Tags", &u.tags);
        }
        self.close(tag)
    }

    fn group(&mut self, tag: &str, g: &IamGroupRow) -> &mut Self {
        self.open(tag)
            .leaf("Path", &g.path)
            .leaf("GroupName", &g.name)
            .leaf("GroupId", &g.group_id)
            .leaf("Arn", &g.arn)
            .leaf("CreateDate", &iso8601(g.created))
            .close(tag)
    }

    fn key_metadata(&mut self, k: &IamAccessKeyRow) -> &mut Self {
        self.open("member")
            .leaf("UserName", &k.user_name)
            .leaf("AccessKeyId", &k.id)
            .leaf("Status", &k.status)
            .leaf("CreateDate", &iso8601(k.created))
            .close("member")
    }

    fn names(&mut self, tag: &str, names: &[String]) -> &mut Self {
        self.open(tag);
        for n in names {
            self.leaf("member", n);
        }
        self.close(tag)
    }
}

/// Epoch seconds as IAM writes timestamps: `2026-11-30T07:20:27Z` (whole seconds, UTC).
pub fn iso8601(t: f64) -> String {
    crate::core::time::iso8601(t.floor() as i64)
}

/// Percent-encodes a policy document as IAM returns it (RFC 3986: everything but unreserved
/// characters; botocore decodes it with `unquote` and parses the JSON).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// dispatch
// ------------------------------------------------------------------------------------------

fn command(app: &App, cmd: IamCommand) -> Result<IamOutcome, ApiError> {
    Ok(identity::apply(app, cmd)?)
}

fn caller_user(name: Option<String>) -> Result<String, ApiError> {
    // `resolve_caller` has run: only a request naming no user from an anonymous caller is left,
    // and it was refused there.
    name.ok_or_else(|| validation("Must specify userName when calling with non-User credentials".into()))
}

/// Runs an IAM operation; the inner XML of its `<Name>Result>`, or `None` for operations that
/// answer only `ResponseMetadata`.
fn dispatch_iam(app: &App, op: IamOp) -> Result<Option<String>, ApiError> {
    let mut x = Xml::default();
    match op {
        IamOp::CreateUser { user_name, path, tags } => {
            let IamOutcome::User(u) = command(app, IamCommand::CreateUser { user_name, path, tags })? else {
                return Err(ApiError::internal("CreateUser answered no user"));
            };
            x.user("User", &u, true);
        }
        IamOp::GetUser { user_name } => {
            let u = identity::user(app, &caller_user(user_name)?)?;
            x.user("User", &u, true);
        }
        IamOp::ListUsers { path_prefix, paging } => {
            let users = identity::users(app, path_prefix.as_deref())?;
            let page = identity::page(users, paging.marker.as_deref(), paging.max_items)?;
            x.open("Users");
            for u in &page.items {
                x.user("member", u, false);
            }
            x.close("Users").paged_end(&page);
        }
        IamOp::DeleteUser { user_name } => {
            command(app, IamCommand::DeleteUser { user_name })?;
            return Ok(None);
        }
        IamOp::TagUser { user_name, tags } => {
            command(app, IamCommand::TagUser { user_name, tags })?;
            return Ok(None);
        }
        IamOp::UntagUser { user_name, tag_keys } => {
            command(app, IamCommand::UntagUser { user_name, tag_keys })?;
            return Ok(None);
        }
        IamOp::ListUserTags { user_name, paging } => {
            let u = identity::user(app, &user_name)?;
            let page = identity::page(u.tags, paging.marker.as_deref(), paging.max_items)?;
            x.tags("Tags", &page.items).paged_end(&page);
        }
        IamOp::CreateAccessKey { user_name } => {
            let user_name = caller_user(user_name)?;
            let IamOutcome::AccessKey(k) = command(app, IamCommand::CreateAccessKey { user_name })? else {
                return Err(ApiError::internal("CreateAccessKey answered no key"));
            };
            x.open("AccessKey")
                .leaf("UserName", &k.user_name)
                .leaf("AccessKeyId", &k.id)
                .leaf("Status", &k.status)
                .leaf("SecretAccessKey", &k.secret)
                .leaf("CreateDate", &iso8601(k.created))
                .close("AccessKey");
        }
        IamOp::ListAccessKeys { user_name, paging } => {
            let keys = identity::access_keys(app, &caller_user(user_name)?)?;
            let page = identity::page(keys, paging.marker.as_deref(), paging.max_items)?;
            x.open("AccessKeyMetadata");
            for k in &page.items {
                x.key_metadata(k);
            }
            x.close("AccessKeyMetadata").paged_end(&page);
        }
        IamOp::DeleteAccessKey {
            user_name,
            access_key_id,
        } => {
            let user_name = caller_user(user_name)?;
            command(
                app,
                IamCommand::DeleteAccessKey {
                    user_name,
                    access_key_id,
                },
            )?;
            return Ok(None);
        }
        IamOp::UpdateAccessKey {
            user_name,
            access_key_id,
            status,
        } => {
            let user_name = caller_user(user_name)?;
            command(
                app,
                IamCommand::UpdateAccessKey {
                    user_name,
                    access_key_id,
                    status,
                },
            )?;
            return Ok(None);
        }
        IamOp::PutUserPolicy {
            user_name,
            policy_name,
            document,
        } => {
            command(
                app,
                IamCommand::PutUserPolicy {
                    user_name,
                    policy_name,
                    document,
                },
            )?;
            return Ok(None);
        }
        IamOp::GetUserPolicy { user_name, policy_name } => {
            let p = identity::user_policy(app, &user_name, &policy_name)?;
            x.leaf("UserName", &p.owner)
                .leaf("PolicyName", &p.name)
                .leaf("PolicyDocument", &url_encode(&p.document));
        }
        IamOp::ListUserPolicies { user_name, paging } => {
            let names = identity::user_policies(app, &user_name)?;
            let page = identity::page(names, paging.marker.as_deref(), paging.max_items)?;
            x.names("PolicyNames", &page.items).paged_end(&page);
        }
        IamOp::DeleteUserPolicy { user_name, policy_name } => {
            command(app, IamCommand::DeleteUserPolicy { user_name, policy_name })?;
            return Ok(None);
        }
        IamOp::CreateGroup { group_name, path } => {
            let IamOutcome::Group(g) = command(app, IamCommand::CreateGroup { group_name, path })? else {
                return Err(ApiError::internal("CreateGroup answered no group"));
            };
            x.group("Group", &g);
        }
        IamOp::GetGroup { group_name, paging } => {
            let (g, users) = identity::group(app, &group_name)?;
            let page = identity::page(users, paging.marker.as_deref(), paging.max_items)?;
            x.group("Group", &g).open("Users");
            for u in &page.items {
                x.user("member", u, false);
            }
            x.close("Users").paged_end(&page);
        }
        IamOp::DeleteGroup { group_name } => {
            command(app, IamCommand::DeleteGroup { group_name })?;
            return Ok(None);
        }
        IamOp::AddUserToGroup { group_name, user_name } => {
            command(app, IamCommand::AddUserToGroup { group_name, user_name })?;
            return Ok(None);
        }
        IamOp::RemoveUserFromGroup { group_name, user_name } => {
            command(app, IamCommand::RemoveUserFromGroup { group_name, user_name })?;
            return Ok(None);
        }
        IamOp::ListGroupsForUser { user_name, paging } => {
            let groups = identity::groups_for_user(app, &user_name)?;
            let page = identity::page(groups, paging.marker.as_deref(), paging.max_items)?;
            x.open("Groups");
            for g in &page.items {
                x.group("member", g);
            }
            x.close("Groups").paged_end(&page);
        }
        IamOp::PutGroupPolicy {
            group_name,
            policy_name,
            document,
        } => {
            command(
                app,
                IamCommand::PutGroupPolicy {
                    group_name,
                    policy_name,
                    document,
                },
            )?;
            return Ok(None);
        }
        IamOp::GetGroupPolicy {
            group_name,
            policy_name,
        } => {
            let p = identity::group_policy(app, &group_name, &policy_name)?;
            x.leaf("GroupName", &p.owner)
                .leaf("PolicyName", &p.name)
                .leaf("PolicyDocument", &url_encode(&p.document));
        }
        IamOp::ListGroupPolicies { group_name, paging } => {
            let names = identity::group_policies(app, &group_name)?;
            let page = identity::page(names, paging.marker.as_deref(), paging.max_items)?;
            x.names("PolicyNames", &page.items).paged_end(&page);
        }
        IamOp::DeleteGroupPolicy {
            group_name,
            policy_name,
        } => {
            command(
                app,
                IamCommand::DeleteGroupPolicy {
                    group_name,
                    policy_name,
                },
            )?;
            return Ok(None);
        }
        IamOp::GetAccessKeyLastUsed { access_key_id } => {
            let (user, _) = identity::access_key_owner(app, &access_key_id)?;
            x.leaf("UserName", &user.name).open("AccessKeyLastUsed");
            match last_use(app, &access_key_id) {
                Some((time, service, region)) => {
                    x.leaf("LastUsedDate", &iso8601(time))
                        .leaf("ServiceName", &service)
                        .leaf("Region", &region);
                }
                // IAM's answer for a key never used.
                None => {
                    x.leaf("ServiceName", "N/A").leaf("Region", "N/A");
                }
            }
            x.close("AccessKeyLastUsed");
        }
        IamOp::ListUnheld { kind, owner, paging } => {
            match (kind.owner_kind(), &owner) {
                ("user", Some(n)) => drop(identity::user(app, n)?),
                ("group", Some(n)) => drop(identity::group(app, n)?),
                _ => {}
            }
            let page = identity::page(Vec::<String>::new(), paging.marker.as_deref(), paging.max_items)?;
            x.open(kind.element()).close(kind.element()).paged_end(&page);
        }
        IamOp::LoginProfile { user_name, .. } => {
            let user = identity::user(app, &caller_user(user_name)?)?;
            return Err(
                IamError::NoSuchEntity(format!("Login Profile for User {} cannot be found.", user.name)).into(),
            );
        }
    }
    Ok(Some(x.0))
}

/// When and where an access key was last used, from the audit trail: the newest record signed
/// with it (`None` when it has none, or the trail is off or has pruned them).
fn last_use(app: &App, access_key_id: &str) -> Option<(f64, String, String)> {
    let audit = app.dataplane.audit.as_ref()?;
    let page = audit
        .lookup(&crate::audit::Lookup {
            attributes: vec![crate::audit::LookupAttribute {
                key: "AccessKeyId".into(),
                value: access_key_id.into(),
            }],
            max_results: Some(1),
            ..Default::default()
        })
        .ok()?;
    let event = page.events.first()?;
    let record: serde_json::Value = serde_json::from_str(&event.cloud_trail_event).ok()?;
    let service = event.event_source.trim_end_matches(".amazonaws.com").to_string();
    let region = record
        .get("awsRegion")
        .and_then(|r| r.as_str())
        .unwrap_or("N/A")
        .to_string();
    Some((event.event_time as f64, service, region))
}

/// Runs an STS operation.
fn dispatch_sts(app: &App, op: StsOp, caller: &Caller) -> Result<Option<String>, ApiError> {
    match op {
        StsOp::GetCallerIdentity => {
            let account = &app.cfg.account_id;
            let (arn, user_id, account) = match caller.principal() {
                Some(p) => (p.arn.clone(), p.user_id.clone(), p.account_id.clone()),
                // Anonymous (authentication off): the account's root identity.
                None => (format!("arn:aws:iam::{account}:root"), account.clone(), account.clone()),
            };
            let mut x = Xml::default();
            x.leaf("UserId", &user_id).leaf("Account", &account).leaf("Arn", &arn);
            Ok(Some(x.0))
        }
    }
}

/// Runs a parsed query operation for `caller`.
pub fn dispatch(app: &App, op: QueryOp, caller: &Caller) -> Result<Option<String>, ApiError> {
    match op {
        QueryOp::Iam(op) => dispatch_iam(app, op),
        QueryOp::Sts(op) => dispatch_sts(app, op, caller),
    }
}

/// The whole XML answer of a successful operation.
pub fn success_body(name: &str, xmlns: &str, result: Option<&str>, request_id: &str) -> String {
    let mut out = format!("<{name}Response xmlns=\"{}\">", xml_escape(xmlns));
    if let Some(r) = result {
        out.push_str(&format!("<{name}Result>{r}</{name}Result>"));
    }
    out.push_str(&format!(
        "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{name}Response>",
        xml_escape(request_id)
    ));
    out
}

/// Whether a request is an awsQuery call: a form-encoded body and no `X-Amz-Target`.
pub fn is_query(headers: &axum::http::HeaderMap) -> bool {
    headers.get("x-amz-target").is_none()
        && headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
            })
}

/// `POST /` with a form body: parses, runs and answers one IAM or STS call, and records it in
/// the per-operation metrics.
pub async fn handle(
    app: Arc<App>,
    requester: &Requester,
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, ApiError>,
) -> Response {
    let started = app.clock.instant();
    let request_id = uuid::Uuid::new_v4().to_string();
    let caller = &requester.caller;
    let params = body.map(|b| Params::parse(&b));
    // What the audit record keeps of the request: its parameters but the action and version.
    let request = params.as_ref().map_or(serde_json::Value::Null, |p| {
        serde_json::Value::Object(
            p.0.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "Action" | "Version"))
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    });
    // Errors before the API is known are answered in IAM's namespace.
    let op = params.and_then(|p| QueryOp::parse(&p));
    let (xmlns, operation, service) = match &op {
        Ok(op) => (op.xmlns(), op.name(), op.action().service),
        Err(_) => (IAM_XMLNS, "unknown", "iam"),
    };
    let call = super::Call {
        service,
        name: operation,
        request,
        request_id: &request_id,
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
        read_only: crate::audit::is_read_only(operation),
    };
    // The XML answer goes to the client only: the audit record of an IAM call keeps no
    // `responseElements` (CreateAccessKey's answer holds a secret).
    let mut answer = None;
    // An operation on the caller's own user names it once resolved; the policy and the audit
    // record see the stored user or group.
    let op = op.and_then(|mut op| {
        if let QueryOp::Iam(iam) = &mut op {
            iam.resolve_caller(caller)?;
        }
        Ok(op)
    });
    let resource = op.as_ref().ok().map(|op| match op {
        QueryOp::Iam(iam) => iam.stored_resource(&app),
        QueryOp::Sts(sts) => sts.resource(&app.arns()),
    });
    let result = super::audited(&app, requester, call, resource.clone(), async {
        let op = op?;
        // IAM and STS share the form protocol; the credential scope must name the one called.
        if let Some(service) = requester.signed_for.as_deref()
            && service != op.action().service
        {
            return Err(crate::auth::sigv4::AuthError::WrongScope(format!(
                "Credential should be scoped to correct service: '{}'. ",
                op.action().service
            ))
            .to_api(crate::error::AuthFamily::Query));
        }
        let resource = resource.unwrap_or(Resource::Any);
        tracing::debug!(action = %op.action(), %resource, "request");
        // IAM and STS word a policy's refusal `AccessDenied`. `GetCallerIdentity` needs no
        // permission (as in AWS, where even an explicit deny cannot refuse it).
        if !matches!(op, QueryOp::Sts(StsOp::GetCallerIdentity)) {
            super::authorize_on(&app, requester, &op, resource).map_err(|e| ApiError {
                code: ErrorCode::AccessDenied,
                ..e
            })?;
        }
        answer = dispatch(&app, op, caller)?;
        Ok(serde_json::Value::Null)
    })
    .await
    .map(|_| answer);
    let code = result.as_ref().map_or_else(|e| e.code.as_str(), |_| "ok");
    app.metrics
        .prometheus
        .record_api(operation, code, app.clock.since(started).as_secs_f64());
    let mut resp = match result {
        Ok(inner) => (
            StatusCode::OK,
            [("content-type", "text/xml")],
            success_body(operation, xmlns, inner.as_deref(), &request_id),
        )
            .into_response(),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(operation, error = %e, "request failed");
            } else {
                tracing::debug!(operation, error = %e, "request rejected");
            }
            e.into_query_response(xmlns, &request_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arns() -> Arns {
        Arns {
            region: "us-east-1".into(),
            account_id: "111122223333".into(),
        }
    }

    fn parse(body: &str) -> Result<QueryOp, ApiError> {
        QueryOp::parse(&Params::parse(body.as_bytes()))
    }

    #[test]
    fn every_iam_operation_parses_and_names_its_action_and_resource() {
        let user = "arn:aws:iam::111122223333:user/bob";
        let group = "arn:aws:iam::111122223333:group/devs";
        let rows: &[(&str, &str, &str)] = &[
            (
                "CreateUser",
                "UserName=bob&Path=%2Fteam%2F",
                "arn:aws:iam::111122223333:user/team/bob",
            ),
            ("GetUser", "UserName=bob", user),
            ("ListUsers", "", "*"),
            ("DeleteUser", "UserName=bob", user),
            (
                "TagUser",
                "UserName=bob&Tags.member.1.Key=k&Tags.member.1.Value=v",
                user,
            ),
            ("UntagUser", "UserName=bob&TagKeys.member.1=k", user),
            ("ListUserTags", "UserName=bob", user),
            ("CreateAccessKey", "UserName=bob", user),
            ("ListAccessKeys", "UserName=bob", user),
            ("DeleteAccessKey", "UserName=bob&AccessKeyId=AKIAAAAAAAAAAAAAAAAA", user),
            (
                "UpdateAccessKey",
                "UserName=bob&AccessKeyId=AKIAAAAAAAAAAAAAAAAA&Status=Inactive",
                user,
            ),
            ("PutUserPolicy", "UserName=bob&PolicyName=p&PolicyDocument=%7B%7D", user),
            ("GetUserPolicy", "UserName=bob&PolicyName=p", user),
            ("ListUserPolicies", "UserName=bob", user),
            ("DeleteUserPolicy", "UserName=bob&PolicyName=p", user),
            ("CreateGroup", "GroupName=devs", group),
            ("GetGroup", "GroupName=devs", group),
            ("DeleteGroup", "GroupName=devs", group),
            ("AddUserToGroup", "GroupName=devs&UserName=bob", group),
            ("RemoveUserFromGroup", "GroupName=devs&UserName=bob", group),
            ("ListGroupsForUser", "UserName=bob", user),
            (
                "PutGroupPolicy",
                "GroupName=devs&PolicyName=p&PolicyDocument=%7B%7D",
                group,
            ),
            ("GetGroupPolicy", "GroupName=devs&PolicyName=p", group),
            ("ListGroupPolicies", "GroupName=devs", group),
            ("DeleteGroupPolicy", "GroupName=devs&PolicyName=p", group),
            // on the key's user once known (`stored_resource`); `*` as parsed
            ("GetAccessKeyLastUsed", "AccessKeyId=AKIAAAAAAAAAAAAAAAAA", "*"),
            ("ListAttachedUserPolicies", "UserName=bob", user),
            ("ListAttachedGroupPolicies", "GroupName=devs", group),
            ("ListSSHPublicKeys", "UserName=bob", user),
            ("ListMFADevices", "UserName=bob", user),
            ("ListVirtualMFADevices", "", "*"),
            ("ListSigningCertificates", "UserName=bob", user),
            ("ListServiceSpecificCredentials", "UserName=bob", user),
            ("ListRoles", "", "*"),
            ("GetLoginProfile", "UserName=bob", user),
            ("DeleteLoginProfile", "UserName=bob", user),
        ];
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), IamOp::NAMES);
        for (name, params, resource) in rows {
            let op = parse(&format!("Action={name}&Version=2010-05-08&{params}")).unwrap();
            assert_eq!(op.name(), *name);
            assert_eq!(op.action().to_string(), format!("iam:{name}"));
            assert_eq!(op.resource(&arns()).to_string(), *resource, "{name}");
            assert_eq!(op.xmlns(), IAM_XMLNS);
        }
        let sts = parse("Action=GetCallerIdentity&Version=2011-06-15").unwrap();
        assert_eq!(sts.action().to_string(), "sts:GetCallerIdentity");
        assert_eq!(sts.resource(&arns()), Resource::Any);
        assert_eq!(sts.xmlns(), STS_XMLNS);
    }

    #[test]
    fn unknown_actions_and_versions_are_invalid_action() {
        for body in [
            "Action=CreateUser&Version=2011-06-15",
            "Action=GetCallerIdentity&Version=2010-05-08",
            "Action=CreateRole&Version=2010-05-08",
            "Action=CreateUser",
            "Version=2010-05-08",
            "",
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAction, "{body}");
            assert!(e.message.starts_with("Could not find operation"), "{}", e.message);
        }
    }

    #[test]
    fn missing_members_are_validation_errors_naming_them() {
        let e = parse("Action=CreateUser&Version=2010-05-08").unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'userName' failed to satisfy constraint: Member must not be null"
        );
        let e = parse("Action=TagUser&Version=2010-05-08&UserName=u&Tags.member.1.Value=v").unwrap_err();
        assert!(e.message.contains("'tags.1.member.key'"), "{}", e.message);
        let e = parse("Action=ListUsers&Version=2010-05-08&MaxItems=ten").unwrap_err();
        assert!(e.message.contains("'maxItems'"), "{}", e.message);
    }

    #[test]
    fn lists_are_read_in_index_order() {
        let p = Params::parse(b"TagKeys.member.2=b&TagKeys.member.10=c&TagKeys.member.1=a");
        assert_eq!(p.list("TagKeys"), vec!["a", "b", "c"]);
        let p =
            Params::parse(b"Tags.member.2.Key=k2&Tags.member.2.Value=&Tags.member.1.Key=k1&Tags.member.1.Value=v%201");
        let tags = p.tags("Tags", "tags").unwrap();
        assert_eq!(tags[0].key, "k1");
        assert_eq!(tags[0].value, "v 1");
        assert_eq!(tags[1].value, "");
    }

    #[test]
    fn the_caller_fills_in_a_missing_user_name_and_anonymous_callers_are_refused() {
        let QueryOp::Iam(mut op) = parse("Action=GetUser&Version=2010-05-08").unwrap() else {
            panic!()
        };
        assert_eq!(op.resource(&arns()), Resource::Any);
        let e = op.clone().resolve_caller(&Caller::Unauthenticated).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
        let principal = crate::auth::directory::Principal {
            user_name: "carol".into(),
            user_id: "AIDAXXXXXXXXXXXXXXXX".into(),
            arn: "arn:aws:iam::111122223333:user/carol".into(),
            account_id: "111122223333".into(),
            access_key_id: "AKIAXXXXXXXXXXXXXXXX".into(),
            secret_access_key: "s".into(),
            active: true,
            policies: vec![],
            tags: vec![],
        };
        op.resolve_caller(&Caller::Principal(Arc::new(principal))).unwrap();
        assert_eq!(
            op,
            IamOp::GetUser {
                user_name: Some("carol".into())
            }
        );
        assert_eq!(op.resource(&arns()).to_string(), "arn:aws:iam::111122223333:user/carol");
    }

    #[test]
    fn timestamps_are_iso8601_utc() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_709_208_000.9), "2024-02-29T12:00:00Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00Z");
    }

    proptest::proptest! {
        #[test]
        fn url_encoding_round_trips_through_form_decoding(s in proptest::prelude::any::<String>()) {
            let e = url_encode(&s);
            proptest::prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
            let decoded: String = form_urlencoded::parse(format!("x={e}").as_bytes()).next().unwrap().1.into_owned();
            proptest::prop_assert_eq!(decoded, s);
        }

        #[test]
        fn any_form_body_parses_or_is_refused_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = QueryOp::parse(&Params::parse(&body));
        }

        #[test]
        fn iso8601_agrees_with_httpdate(t in 0u64..4_102_444_800) {
            let http = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
            let ours = iso8601(t as f64);
            // "Sun, 06 Nov 1994 08:49:37 GMT" against "1994-11-06T08:49:37Z".
            let parts: Vec<&str> = http.split(' ').collect();
            let month = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"]
                .iter().position(|m| *m == parts[2]).unwrap() + 1;
            proptest::prop_assert_eq!(ours, format!("{}-{:02}-{}T{}Z", parts[3], month, parts[1], parts[4]));
        }
    }
}
