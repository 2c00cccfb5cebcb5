//! Authentication and authorization: who calls (AWS Signature Version 4, `sigv4`, by a key of
//! the identities in `directory`), and whether they may (IAM policy evaluation,
//! `core::policy`, on the action and resource every typed operation names).
//!
//! Every request of every API goes through [`Auth`] in three steps, whichever server read it:
//! 1. [`Auth::begin`], from the head alone: the signature's form, scope and date, and the key;
//!    a refusal here costs no body read and tells nothing about resources.
//! 2. [`Auth::finish`], with the body's SHA-256 (or none for `UNSIGNED-PAYLOAD`): the signature.
//! 3. [`Auth::authorize`]: the caller's policies on the operation's action, resource and
//!    condition keys ([`Auth::context`]); default deny, an explicit deny wins.
//!
//! `[auth] mode = "none"` (loopback only) makes every caller the administrator
//! ([`Caller::Unauthenticated`]); actions in `[auth] anonymous_actions` may be called unsigned
//! ([`Caller::Anonymous`]).

pub mod directory;
pub mod sigv4;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::audit::UserIdentity;
use crate::config::{AuthMode, Config};
use crate::core::iam::{Action, Arns, Resource};
use crate::core::policy::{self, Context, Decision};
use directory::{Identities, Principal};
use sigv4::{AuthError, KeyCache, PayloadHash, Presented, RequestParts};

/// Writes an access key to `path` in the AWS shared-credentials format, under the profile
/// `spillway`, readable by its owner only (mode 0600, set when the file is created, so the key
/// is never readable by others even for a moment).
pub fn write_credentials(path: &std::path::Path, access_key_id: &str, secret_access_key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    write!(
        f,
        "# Written by spillway on its first start: the administrator's access key.\n\
         [spillway]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// How many derived signing keys are kept (one per key, day, region and service).
const SIGNING_KEYS: usize = 4096;

/// The address of the client that sent a request (`aws:SourceIp`, the audit trail's
/// `sourceIPAddress`), in the extensions of requests handed to the control plane's router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A request signed by this principal's key, signature verified.
    Principal(Arc<Principal>),
    /// Authentication is off (`[auth] mode = "none"`): every caller is the administrator.
    Unauthenticated,
    /// An unsigned request for an action of `[auth] anonymous_actions`.
    Anonymous,
}

impl Caller {
    /// The principal, when the request was signed.
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        match self {
            Caller::Principal(p) => Some(p),
            _ => None,
        }
    }

    /// The audit trail's `userIdentity` of this caller (`presented`: the access key id an
    /// unauthenticated request presented, if any).
    pub fn user_identity(&self, account_id: &str, presented: Option<&str>) -> UserIdentity {
        match self {
            Caller::Principal(p) => {
                UserIdentity::iam_user(&p.user_id, &p.arn, &p.account_id, &p.access_key_id, &p.user_name)
            }
            Caller::Unauthenticated => UserIdentity {
                identity_type: "Root".into(),
                principal_id: account_id.to_string(),
                arn: Some(self.arn(account_id)),
                account_id: account_id.to_string(),
                access_key_id: None,
                user_name: None,
            },
            Caller::Anonymous => UserIdentity::anonymous(presented),
        }
    }

    /// The caller's ARN as refusals and the audit trail name it.
    pub fn arn(&self, account_id: &str) -> String {
        match self {
            Caller::Principal(p) => p.arn.clone(),
            Caller::Unauthenticated => format!("arn:aws:iam::{account_id}:root"),
            Caller::Anonymous => "anonymous".into(),
        }
    }
}

/// A signature checked from the head; the payload hash is still to come.
#[derive(Debug)]
pub struct Pending<'a> {
    presented: Presented<'a>,
    principal: Arc<Principal>,
}

impl Pending<'_> {
    /// The SigV4 service the credential scope names.
    pub fn service(&self) -> &str {
        self.presented.service
    }

    /// Whether the signature covers the body, so the body must be read (and held) before the
    /// request may go anywhere. `UNSIGNED-PAYLOAD` does not.
    pub fn needs_body(&self) -> bool {
        !matches!(self.presented.payload(), PayloadHash::Unsigned)
    }
}

/// What [`Auth::begin`] found.
#[derive(Debug)]
// Returned once per request and matched at once: boxing the signature would add an allocation
// to every signed request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Begun<'a> {
    /// The caller is known already (authentication off, or an anonymous action).
    Known(Caller),
    /// A signature to finish with the body's hash ([`Auth::finish`]).
    Signed(Pending<'a>),
}

/// A refusal by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The caller's ARN.
    pub caller: String,
    /// The action refused.
    pub action: String,
    /// The resource it was refused on.
    pub resource: String,
    /// An explicit deny (`true`) or no allow (`false`).
    pub explicit: bool,
}

impl std::fmt::Display for Denied {
    /// AWS's wording of an identity-based refusal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Denied {
            caller,
            action,
            resource,
            explicit,
        } = self;
        if *explicit {
            write!(
                f,
                "User: {caller} is not authorized to perform: {action} on resource: {resource} with an explicit deny in an identity-based policy"
            )
        } else {
            write!(
                f,
                "User: {caller} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action"
            )
        }
    }
}

/// Tags of resources, by ARN, for `aws:ResourceTag/<key>` on paths that do not read the store
/// (invocations). The control plane publishes an endpoint's tags whenever they change.
#[derive(Debug, Default)]
pub struct ResourceTags(RwLock<HashMap<String, Tags>>);

/// One resource's tags, as (key, value) pairs.
pub type Tags = Arc<Vec<(String, String)>>;

impl ResourceTags {
    /// Replaces the tags of `arn` (none: forgets it).
    pub fn set(&self, arn: &str, tags: Vec<(String, String)>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if tags.is_empty() {
            map.remove(arn);
        } else {
            map.insert(arn.to_string(), Arc::new(tags));
        }
    }

    /// The tags of `arn`.
    pub fn get(&self, arn: &str) -> Option<Tags> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(arn).cloned()
    }
}

/// How many refused requests per source address and second are written to the audit trail;
/// beyond it they are counted, not written, so that unauthenticated traffic cannot fill the
/// disk through the trail (whose full disk would then refuse every change).
pub const REFUSALS_RECORDED_PER_SECOND: u32 = 10;

/// Per-source budget of recorded refusals ([`REFUSALS_RECORDED_PER_SECOND`]).
#[derive(Debug, Default)]
pub struct RefusalBudget(std::sync::Mutex<HashMap<IpAddr, (u64, u32, u64)>>);

impl RefusalBudget {
    /// Whether a refusal from `source` at `now` (epoch seconds) is recorded; `Err(n)` when it
    /// is not, `n` being how many from that source were not recorded in this second so far.
    pub fn take(&self, source: Option<IpAddr>, now: u64) -> Result<(), u64> {
        let ip = source.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 65_536 {
            map.retain(|_, (second, _, _)| *second == now);
        }
        let (second, used, dropped) = map.entry(ip).or_insert((now, 0, 0));
        if *second != now {
            (*second, *used, *dropped) = (now, 0, 0);
        }
        if *used < REFUSALS_RECORDED_PER_SECOND {
            *used += 1;
            Ok(())
        } else {
            *dropped += 1;
            Err(*dropped)
        }
    }
}

/// Authentication and authorization for every API.
#[derive(Debug)]
pub struct Auth {
    mode: AuthMode,
    region: String,
    account_id: String,
    arns: Arns,
    anonymous: Vec<String>,
    /// The identities keys resolve to, published by the control plane.
    pub identities: Arc<Identities>,
    /// Endpoint tags for invocations' `aws:ResourceTag/<key>`, published by the control plane.
    pub tags: ResourceTags,
    /// Refusals recorded per source.
    pub refusals: RefusalBudget,
    keys: KeyCache,
}

impl Auth {
    /// Authentication as `cfg` configures it, resolving keys through `identities`.
    pub fn new(cfg: &Config, identities: Arc<Identities>) -> Self {
        Self {
            mode: cfg.auth.mode,
            region: cfg.region.clone(),
            account_id: cfg.account_id.clone(),
            arns: Arns {
                region: cfg.region.clone(),
                account_id: cfg.account_id.clone(),
            },
            anonymous: cfg.auth.anonymous_actions.clone(),
            identities,
            tags: ResourceTags::default(),
            refusals: RefusalBudget::default(),
            keys: KeyCache::new(SIGNING_KEYS),
        }
    }

    /// `[auth] mode`.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The ARNs of this server's resources.
    pub fn arns(&self) -> &Arns {
        &self.arns
    }

    /// Whether `action` (`spillway:GetHealth`) may be called unsigned.
    pub fn is_anonymous(&self, action: &str) -> bool {
        self.anonymous.iter().any(|a| a.eq_ignore_ascii_case(action))
    }

    /// Step 1, from the request head: who claims to call. `services` are the SigV4 service
    /// names the API accepts in the credential scope; `action` is the action as far as the head
    /// tells it (for `anonymous_actions`).
    /// `unsigned_payload`: whether `UNSIGNED-PAYLOAD` is accepted (the runtime streams bodies;
    /// every other API's body is small and must be signed).
    pub fn begin<'a>(
        &self,
        parts: &RequestParts<'a>,
        services: &[&str],
        action: Option<&str>,
        unsigned_payload: bool,
        now: SystemTime,
    ) -> Result<Begun<'a>, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(Begun::Known(Caller::Unauthenticated));
        }
        let signed = parts
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            || parts.query.contains("X-Amz-Signature=");
        if !signed && action.is_some_and(|a| self.is_anonymous(a)) {
            return Ok(Begun::Known(Caller::Anonymous));
        }
        // SigV4 signs the path with `.`, `..` and empty segments removed, and the routers do
        // not route on that form: such a path would run something the signature did not name.
        if sigv4::path_has_dot_or_empty_segments(parts.path) {
            return Err(AuthError::Incomplete(format!(
                "The request path {:?} has empty, '.' or '..' segments, which spillway does not accept in signed requests",
                parts.path
            )));
        }
        let presented = sigv4::authenticate(parts, &self.region, services, now)?;
        // What routes a request or changes its meaning must be signed, or a captured request
        // could be re-aimed (`X-Amz-Target: SageMaker.DeleteModel`): every `x-amz-*` and
        // `x-amzn-*` header (but the trace id, which no SDK signs), and on `POST /` the
        // `Content-Type` that tells awsJson from awsQuery (the SDKs sign both; `curl
        // --aws-sigv4` signs a Content-Type given with -H).
        let signed = presented.signed_headers();
        for (name, _) in parts.headers {
            let starts =
                |p: &str| name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
            let must = (starts("x-amz-")
                || starts("x-amzn-")
                || (name.eq_ignore_ascii_case("content-type") && parts.path == "/"))
                && !name.eq_ignore_ascii_case("x-amzn-trace-id");
            if must && !signed.split(';').any(|s| s.eq_ignore_ascii_case(name)) {
                let n = name.to_ascii_lowercase();
                return Err(AuthError::Incomplete(format!(
                    "The header {n} is not signed: spillway requires every x-amz-* header (and Content-Type on POST /) in SignedHeaders."
                )));
            }
        }
        if !unsigned_payload && matches!(presented.payload(), PayloadHash::Unsigned) {
            return Err(AuthError::Incomplete(
                "UNSIGNED-PAYLOAD is accepted by the runtime only: sign this API's request body.".into(),
            ));
        }
        let principal = self
            .identities
            .current()
            .principal(presented.access_key_id)
            .filter(|p| p.active)
            .ok_or(AuthError::UnknownKey)?;
        // spillway issues no temporary credentials: a session token cannot be one of its own.
        if presented.session_token.is_some() {
            return Err(AuthError::UnknownKey);
        }
        Ok(Begun::Signed(Pending { presented, principal }))
    }

    /// Step 2: the signature, with the body when it covers it ([`Pending::needs_body`]).
    pub fn finish(&self, pending: Pending<'_>, body: Option<&[u8]>) -> Result<Caller, AuthError> {
        let hash = match pending.presented.payload() {
            PayloadHash::Unsigned => "UNSIGNED-PAYLOAD".to_string(),
            // A declared hash is checked by signing what the body really hashes to: a body that
            // is not the one declared (and signed) fails as a signature mismatch.
            PayloadHash::Declared(_) | PayloadHash::Compute => sigv4::sha256_hex(body.unwrap_or_default()),
        };
        pending
            .presented
            .verify(&pending.principal.secret_access_key, &hash, &self.keys)?;
        Ok(Caller::Principal(pending.principal))
    }

    /// The condition keys every request carries: the caller's (`aws:username`, `aws:userid`,
    /// `aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:PrincipalTag/<key>`), the request's
    /// (`aws:CurrentTime`, `aws:EpochTime`, `aws:SourceIp`, `aws:SecureTransport`,
    /// `aws:RequestedRegion`) and the resource's tags (`aws:ResourceTag/<key>`, from `tags`).
    pub fn context(
        &self,
        caller: &Caller,
        action: Action,
        resource: &Resource,
        tags: &[(String, String)],
        source_ip: Option<IpAddr>,
        now: SystemTime,
    ) -> Context {
        let mut ctx = Context::new(action.to_string(), resource.to_string());
        let epoch = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        ctx.insert("aws:CurrentTime", [crate::core::time::iso8601(epoch as i64)]);
        ctx.insert("aws:EpochTime", [epoch.to_string()]);
        ctx.insert("aws:SecureTransport", ["false"]);
        ctx.insert("aws:RequestedRegion", [self.region.clone()]);
        if let Some(ip) = source_ip {
            ctx.insert("aws:SourceIp", [ip.to_string()]);
        }
        if let Caller::Principal(p) = caller {
            ctx.insert("aws:username", [p.user_name.clone()]);
            ctx.insert("aws:userid", [p.user_id.clone()]);
            ctx.insert("aws:PrincipalArn", [p.arn.clone()]);
            ctx.insert("aws:PrincipalAccount", [p.account_id.clone()]);
            ctx.insert("aws:PrincipalType", ["User"]);
            for (k, v) in &p.tags {
                ctx.insert(&format!("aws:PrincipalTag/{k}"), [v.clone()]);
            }
        }
        for (k, v) in tags {
            ctx.insert(&format!("aws:ResourceTag/{k}"), [v.clone()]);
        }
        ctx
    }

    /// Whether `caller`'s policies can depend on more than the action and resource (see
    /// [`Policy::needs_context`](crate::core::policy::Policy::needs_context)); when not, callers
    /// skip building the condition keys (and reading the resource's tags).
    pub fn needs_context(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Principal(p) => p.policies.iter().any(|p| p.needs_context()),
            _ => false,
        }
    }

    /// Step 3: whether `caller` may do what `ctx` describes.
    pub fn authorize(&self, caller: &Caller, ctx: &Context) -> Result<(), Denied> {
        let decision = match caller {
            Caller::Unauthenticated => return Ok(()),
            Caller::Anonymous if self.is_anonymous(ctx.action()) => return Ok(()),
            Caller::Anonymous => Decision::ImplicitDeny,
            Caller::Principal(p) => policy::evaluate(p.policies.iter().map(|p| &**p), ctx),
        };
        match decision {
            Decision::Allow => Ok(()),
            d => Err(Denied {
                caller: caller.arn(&self.account_id),
                action: ctx.action().to_string(),
                resource: ctx.resource().to_string(),
                explicit: d == Decision::ExplicitDeny,
            }),
        }
    }
}
