//! The IAM policy language: parsing identity-based policy documents and evaluating them as AWS does.
//!
//! Pure: no IO, no clock (a request's time arrives as the `aws:CurrentTime` condition key).
//!
//! # Documents
//!
//! [`Policy::parse`] takes the JSON text of an identity-based policy (what `PutUserPolicy` and
//! `PutGroupPolicy` carry): `Version`, `Id`, `Statement` (one object or an array); per statement
//! `Sid`, `Effect`, exactly one of `Action`/`NotAction`, exactly one of `Resource`/`NotResource`,
//! and an optional `Condition`. Anything else is refused, and every refusal names the line and
//! column of the member at fault, with IAM's `MalformedPolicyDocument` wording first:
//!
//! | fault | message (IAM's) |
//! | --- | --- |
//! | not JSON, a duplicate member, an unknown member, a wrong type, both `Action` and `NotAction`, a missing or unknown `Effect`, an unknown `Version`, an empty `Statement`, an unknown condition operator | `Syntax errors in policy.` |
//! | `Principal` / `NotPrincipal` | `Policy document should not specify a principal.` |
//! | `Effect` spelt in another case (`allow`), a `Date…` value that is not a date, a resource with `::` and fewer than six fields | `The policy failed legacy parsing` |
//! | a `Sid` that is not `[0-9A-Za-z]*` | `Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*` |
//! | two statements with one `Sid` | `Statement IDs (SID) in a single policy must be unique.` |
//! | no `Action` (or an empty list) | `Policy statement must contain actions.` |
//! | no `Resource` (or an empty list) | `Policy statement must contain resources.` |
//! | a resource that is not `*` and has no colon / does not start `arn:` | `Resource X must be in ARN format or "*".` |
//! | a resource whose partition is unknown | `Partition "p" is not valid for resource "arn:p:…".` |
//! | a resource whose service is empty or has a wildcard | `Resource vendor must be fully qualified and cannot contain regexes.` |
//! | an action or condition key with no `vendor:` | `Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.` |
//! | an action with two colons | `Actions/Condition can contain only one colon.` |
//! | an action vendor outside `[A-Za-z0-9.-]` | `Vendor X is not valid` |
//!
//! IAM checks in phases (syntax, then legacy parsing, then SIDs, actions, resources, action
//! vendors), and so does this parser: the error reported is the first of the earliest phase.
//! The message is IAM's sentence, then (for most) a short explanation of spillway's naming the
//! member and the rule, then `(line L, column C)` of the member or value at fault.
//!
//! Where AWS is silent or lenient and spillway chose:
//! - `Version` may be absent (IAM then reads the document as `2008-10-17`, in which policy
//!   variables are plain text). [`Policy::version`] lets a caller insist on `2012-10-17`, as
//!   IAM does for managed policies (`Policy document must be version 2012-10-17 or greater.`,
//!   as moto models `CreatePolicy`).
//! - `Effect` is recognised in any case at the syntax stage, then only as `Allow`/`Deny` (moto's
//!   model of IAM's "legacy parsing").
//! - Resources: IAM's checks that spillway does not need (IAM ARNs naming a region, S3 ARNs
//!   naming a region, IAM resource paths) are left out.
//! - Duplicate JSON members are refused (JSON allows them; a second `Action` hiding the first is
//!   a trap).
//! - Condition values may be strings, or JSON numbers and booleans (read as their text).
//! - `Numeric…` values must be numbers, `IpAddress` values CIDR blocks or addresses, `Null`
//!   values `true`/`false`: otherwise `Syntax errors in policy.` (AWS accepts some of these and
//!   then never matches them).
//! - A `${…}` with no closing brace, or an empty one, is refused.
//! - Service prefixes are not checked against a catalogue: spillway has prefixes of its own
//!   (`spillway:`), and IAM's list changes.
//! - IAM's size limits are on all of an entity's inline policies together (whitespace not
//!   counted): the API layer sums [`policy_size`] and compares with [`USER_POLICY_MAX_CHARS`]
//!   and its siblings, answering `LimitExceeded` with [`size_exceeded_message`].
//!
//! # Matching
//!
//! - `Action`: `service:Name` patterns with `*` (any run, empty included) and `?` (exactly one
//!   character), matched case-insensitively against the whole action name.
//! - `Resource`: ARN patterns with `*` and `?`, case-sensitive. AWS documents wildcards within
//!   segments, and a trailing `*` of a segment crossing colons; spillway matches the whole ARN
//!   as one glob (so `arn:aws:sagemaker:*` covers every SageMaker ARN, as in AWS). `*` alone
//!   matches every resource, `*` (no particular resource) included.
//! - Policy variables (2012-10-17 only) in `Resource`/`NotResource` and in the values of
//!   `String…`, `Arn…` and `Bool` conditions: `${key}` is the request's value of that condition
//!   key (case-insensitive name), `${key, 'default'}` falls back to `default` (`''` is a quote),
//!   `${*}`, `${?}` and `${$}` are the literal characters. A substituted value is literal text
//!   (a user name `a*` is not a wildcard). AWS: "If AWS cannot resolve a variable this might
//!   cause the entire statement to be invalid": here a variable whose key is absent or has more
//!   than one value, with no default, makes its **statement not apply** — neither its Allow nor
//!   its Deny (so a Deny that relies on a variable is lifted when the variable is missing: AWS
//!   advises `…IfExists`, and policy authors should pair such a Deny with a `Null` check).
//!   `Numeric…`, `Date…`, `IpAddress` and `BinaryEquals` values take no variables (AWS: "not
//!   supported"), so `${…}` there is plain text and refused where it is not a number/date/block.
//!
//! # Conditions
//!
//! All of a statement's operators must hold, and within one operator all of its keys (AND);
//! the values listed for one key are alternatives (OR). For a negated operator (`StringNotEquals`,
//! `StringNotEqualsIgnoreCase`, `StringNotLike`, `NumericNotEquals`, `DateNotEquals`,
//! `NotIpAddress`, `ArnNotEquals`, `ArnNotLike`) the result is the negation of the positive
//! operator over all the values: true when the request's value matches **none** of them (NOR).
//!
//! A key absent from the request (or given no values): a positive operator is false, a negated
//! one true (AWS: "If the policy condition requires that the key is not matched, such as
//! StringNotLike or ArnNotLike, and the right key is not present, the condition is true"); with
//! `…IfExists` any operator is true. `Null` tests presence: `"true"` holds when the key is
//! absent, `"false"` when it is present.
//!
//! Multi-valued keys (`aws:TagKeys`, `sagemaker:InstanceTypes`):
//! - `ForAllValues:op` holds when every request value satisfies `op` (for a negated `op`: matches
//!   none of the policy's values), and when the key is absent or empty (AWS documents this).
//! - `ForAnyValue:op` holds when at least one request value satisfies `op`; false when the key
//!   is absent or empty (true with `IfExists`).
//! - With no qualifier (AWS leaves this undocumented), a positive operator holds when any request
//!   value matches any policy value and a negated one is its negation; for single-valued keys all
//!   three readings agree.
//!
//! Condition key names are case-insensitive (tag keys in `aws:RequestTag/<k>` included); values
//! are case-sensitive except under `StringEqualsIgnoreCase`/`StringNotEqualsIgnoreCase` and
//! `Bool`. `Date…` reads ISO 8601 (`2026-11-30`, `2026-11-30T07:00:00Z`, fractions, offsets; no
//! offset means UTC) and epoch seconds. `Numeric…` reads decimal numbers. `IpAddress` reads IPv4
//! and IPv6 CIDR blocks (a bare address is a /32 or /128); an IPv4 address never matches an
//! IPv6 block, and an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is read as IPv4. `ArnEquals` and `ArnLike`
//! are the same (AWS: both compare each of the six colon-separated fields, wildcards allowed);
//! a policy value of fewer fields matches its last field against the rest of the ARN.
//! `BinaryEquals` compares the base-64 text. A request value that does not read as the
//! operator's type matches nothing (so under a negated operator it matches none: true).
//!
//! # Evaluation
//!
//! [`evaluate`] is AWS's logic for identity-based policies: a matching `Deny` anywhere →
//! [`Decision::ExplicitDeny`]; else a matching `Allow` → [`Decision::Allow`]; else
//! [`Decision::ImplicitDeny`]. [`Decision::reason`] and [`access_denied_message`] give AWS's
//! `AccessDenied` wording.

use super::time::days_from_civil;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// IAM's limit on all of a user's inline policies together, in characters other than whitespace.
pub const USER_POLICY_MAX_CHARS: usize = 2048;
/// IAM's limit on all of a group's inline policies together, in characters other than whitespace.
pub const GROUP_POLICY_MAX_CHARS: usize = 5120;
/// IAM's limit on all of a role's inline policies together, in characters other than whitespace.
pub const ROLE_POLICY_MAX_CHARS: usize = 10240;

/// The size IAM counts for a policy document: its characters, whitespace not counted.
pub fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// IAM's `LimitExceeded` message for inline policies over their limit, e.g.
/// `Maximum policy size of 2048 bytes exceeded for user alice` (`entity`: `user`, `group`, `role`).
pub fn size_exceeded_message(max_chars: usize, entity: &str, name: &str) -> String {
    format!("Maximum policy size of {max_chars} bytes exceeded for {entity} {name}")
}

/// A parsed identity-based policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    version: Option<Version>,
    id: Option<String>,
    statements: Vec<Statement>,
}

/// The policy language version a document declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `2008-10-17`: no policy variables (also how IAM reads a document with no `Version`).
    V2008_10_17,
    /// `2012-10-17`: the current language, with policy variables.
    V2012_10_17,
}

/// Why a policy document was refused: IAM's `MalformedPolicyDocument` message and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in characters) of the fault.
    pub column: usize,
    /// IAM's wording, an explanation where IAM has none, then `(line L, column C)`.
    pub message: String,
}

/// What a request is evaluated on: its action, its resource, and its condition keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    action: String,
    resource: String,
    keys: HashMap<String, Vec<String>>,
}

impl Context {
    /// A request for `action` (`sagemaker:CreateEndpoint`) on `resource` (an ARN, or `*`).
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Context {
            action: action.into(),
            resource: resource.into(),
            keys: HashMap::new(),
        }
    }

    /// Adds values for a condition key (e.g. `aws:RequestTag/owner`, `aws:TagKeys`,
    /// `aws:CurrentTime` as ISO 8601, `aws:SourceIp`, `aws:SecureTransport` as `true`/`false`).
    /// Key names are case-insensitive; values add to those already there; no values add nothing.
    pub fn with(mut self, key: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.insert(key, values);
        self
    }

    /// Adds values for a condition key, as [`Context::with`].
    pub fn insert(&mut self, key: &str, values: impl IntoIterator<Item = impl Into<String>>) {
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        if values.is_empty() {
            return;
        }
        self.keys.entry(key.to_ascii_lowercase()).or_default().extend(values);
    }

    /// The request's action.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The request's resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    fn get(&self, lower_key: &str) -> Option<&[String]> {
        self.keys.get(lower_key).map(Vec::as_slice).filter(|v| !v.is_empty())
    }
}

/// The outcome of evaluating a request against identity-based policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows the request and none denies it.
    Allow,
    /// A statement denies the request.
    ExplicitDeny,
    /// No statement allows the request.
    ImplicitDeny,
}

impl Decision {
    /// AWS's reason clause of an `AccessDenied` message: `because no identity-based policy allows
    /// the sagemaker:CreateEndpoint action` or `with an explicit deny in an identity-based
    /// policy`; `None` for [`Decision::Allow`].
    pub fn reason(&self, action: &str) -> Option<String> {
        match self {
            Decision::Allow => None,
            Decision::ExplicitDeny => Some("with an explicit deny in an identity-based policy".to_owned()),
            Decision::ImplicitDeny => Some(format!("because no identity-based policy allows the {action} action")),
        }
    }
}

/// AWS's whole `AccessDenied` message: `User: <arn> is not authorized to perform: <action> on
/// resource: <resource> because no identity-based policy allows the <action> action` (or `with
/// an explicit deny in an identity-based policy`); `None` for [`Decision::Allow`].
pub fn access_denied_message(principal_arn: &str, action: &str, resource: &str, decision: Decision) -> Option<String> {
    let reason = decision.reason(action)?;
    Some(format!(
        "User: {principal_arn} is not authorized to perform: {action} on resource: {resource} {reason}"
    ))
}

/// AWS's identity-based evaluation: any matching Deny → ExplicitDeny; else any matching Allow →
/// Allow; else ImplicitDeny.
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, ctx: &Context) -> Decision {
    let action = ctx.action.to_lowercase();
    let action: Vec<char> = action.chars().collect();
    let resource: Vec<char> = ctx.resource.chars().collect();
    let mut allowed = false;
    for policy in policies {
        for st in &policy.statements {
            if st.applies(&action, &resource, ctx) {
                match st.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

impl Policy {
    /// Whether evaluating it can depend on anything but the action and the resource: a
    /// `Condition`, or a policy variable in a `Resource`. A caller whose policies need no context
    /// is evaluated without building one (the invocation path's common case).
    pub fn needs_context(&self) -> bool {
        self.statements.iter().any(|st| {
            !st.conditions.is_empty()
                || st
                    .resources
                    .iter()
                    .any(|t| t.0.iter().any(|part| matches!(part, Part::Var { .. })))
        })
    }

    /// Parses an IAM JSON policy document. Errors carry 1-based line (and column) of the fault.
    pub fn parse(document: &str) -> Result<Policy, PolicyError> {
        let root = json::parse(document).map_err(|e| {
            Pending {
                phase: P_SYNTAX,
                pos: e.pos,
                text: format!("{MSG_SYNTAX} Not JSON: {}.", e.msg),
            }
            .into_error(document)
        })?;
        let mut p = Parser {
            err: None,
            sids: HashMap::new(),
        };
        let policy = p.policy(&root);
        match (policy, p.err) {
            (Some(policy), None) => Ok(policy),
            (_, Some(e)) => Err(e.into_error(document)),
            (None, None) => Err(Pending {
                phase: P_SYNTAX,
                pos: 0,
                text: MSG_SYNTAX.to_owned(),
            }
            .into_error(document)),
        }
    }

    /// The `Version` the document declares (`None`: absent, read as 2008-10-17).
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The document's `Id`, if any.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// How many statements the document has.
    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V2008_10_17 => "2008-10-17",
            Version::V2012_10_17 => "2012-10-17",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The parsed form
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// One character of a pattern: literal, `*` (any run) or `?` (one character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Ch(char),
    Star,
    One,
}

/// A pattern or value that may hold policy variables.
#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Toks(Vec<Tok>),
    /// `${key}` (lower-cased) or `${key, 'default'}`.
    Var {
        key: String,
        default: Option<String>,
    },
}

impl Template {
    /// The tokens with every variable substituted as literal text; `None` when a variable has
    /// no single value and no default.
    fn resolve(&self, ctx: &Context) -> Option<std::borrow::Cow<'_, [Tok]>> {
        if let [Part::Toks(t)] = self.0.as_slice() {
            return Some(std::borrow::Cow::Borrowed(t));
        }
        let mut out = Vec::new();
        for part in &self.0 {
            match part {
                Part::Toks(t) => out.extend_from_slice(t),
                Part::Var { key, default } => match (ctx.get(key), default) {
                    (Some([v]), _) => out.extend(v.chars().map(Tok::Ch)),
                    (_, Some(d)) => out.extend(d.chars().map(Tok::Ch)),
                    _ => return None,
                },
            }
        }
        Some(std::borrow::Cow::Owned(out))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    effect: Effect,
    not_action: bool,
    /// Lower-cased action patterns.
    actions: Vec<Vec<Tok>>,
    not_resource: bool,
    resources: Vec<Template>,
    conditions: Vec<Cond>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        matches!(
            (self, o),
            (Cmp::Eq, Equal)
                | (Cmp::Lt, Less)
                | (Cmp::Le, Less | Equal)
                | (Cmp::Gt, Greater)
                | (Cmp::Ge, Greater | Equal)
        )
    }
}

/// A condition operator's family (its negation is kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StrEq,
    StrEqIc,
    StrLike,
    Num(Cmp),
    Date(Cmp),
    Bool,
    Binary,
    Ip,
    Arn,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qual {
    None,
    ForAll,
    ForAny,
}

#[derive(Debug, Clone, PartialEq)]
enum Values {
    Templates(Vec<Template>),
    Nums(Vec<f64>),
    /// Nanoseconds since the epoch.
    Dates(Vec<i128>),
    Cidrs(Vec<Cidr>),
    /// `true`: the key must be absent.
    Null(Vec<bool>),
}

#[derive(Debug, Clone, PartialEq)]
struct Cond {
    op: Op,
    negated: bool,
    qual: Qual,
    if_exists: bool,
    /// Lower-cased key name.
    key: String,
    values: Values,
}

impl Statement {
    fn applies(&self, action: &[char], resource: &[char], ctx: &Context) -> bool {
        let any_action = self.actions.iter().any(|p| glob(p, action));
        if any_action == self.not_action {
            return false;
        }
        let mut any_resource = false;
        for r in &self.resources {
            match r.resolve(ctx) {
                None => return false,
                Some(t) => any_resource |= glob(&t, resource),
            }
        }
        if any_resource == self.not_resource {
            return false;
        }
        self.conditions.iter().all(|c| c.eval(ctx) == Some(true))
    }
}

impl Cond {
    /// `None`: a policy variable in its values could not be resolved.
    fn eval(&self, ctx: &Context) -> Option<bool> {
        let request = ctx.get(&self.key);
        let resolved: Vec<std::borrow::Cow<'_, [Tok]>> = match &self.values {
            Values::Null(wants) => {
                return Some(wants.iter().any(|&absent| absent == request.is_none()));
            }
            Values::Templates(ts) => ts.iter().map(|t| t.resolve(ctx)).collect::<Option<_>>()?,
            _ => Vec::new(),
        };
        let Some(request) = request else {
            return Some(match self.qual {
                _ if self.if_exists => true,
                Qual::ForAll => true,
                Qual::ForAny => false,
                Qual::None => self.negated,
            });
        };
        let matches = |r: &str| self.matches_any(r, &resolved);
        Some(match self.qual {
            Qual::None => request.iter().any(|r| matches(r)) != self.negated,
            Qual::ForAll => request.iter().all(|r| matches(r) != self.negated),
            Qual::ForAny => request.iter().any(|r| matches(r) != self.negated),
        })
    }

    /// The positive operator: does request value `r` match any of the policy's values?
    fn matches_any(&self, r: &str, resolved: &[std::borrow::Cow<'_, [Tok]>]) -> bool {
        match (&self.op, &self.values) {
            (Op::Num(cmp), Values::Nums(ps)) => {
                parse_number(r).is_some_and(|x| ps.iter().any(|p| x.partial_cmp(p).is_some_and(|o| cmp.holds(o))))
            }
            (Op::Date(cmp), Values::Dates(ps)) => parse_date(r).is_some_and(|x| ps.iter().any(|p| cmp.holds(x.cmp(p)))),
            (Op::Ip, Values::Cidrs(ps)) => r.parse::<IpAddr>().is_ok_and(|ip| ps.iter().any(|c| c.contains(ip))),
            (Op::StrEq | Op::Binary, _) => resolved.iter().any(|p| toks_str(p) == r),
            (Op::StrEqIc, _) => {
                let r = r.to_lowercase();
                resolved.iter().any(|p| toks_str(p).to_lowercase() == r)
            }
            (Op::Bool, _) => resolved.iter().any(|p| toks_str(p).eq_ignore_ascii_case(r)),
            (Op::StrLike, _) => {
                let r: Vec<char> = r.chars().collect();
                resolved.iter().any(|p| glob(p, &r))
            }
            (Op::Arn, _) => {
                let r: Vec<char> = r.chars().collect();
                resolved.iter().any(|p| arn_match(p, &r))
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

fn toks(s: &str, wild: bool) -> Vec<Tok> {
    s.chars()
        .map(|c| match c {
            '*' if wild => Tok::Star,
            '?' if wild => Tok::One,
            c => Tok::Ch(c),
        })
        .collect()
}

fn toks_str(t: &[Tok]) -> String {
    t.iter()
        .map(|t| match t {
            Tok::Ch(c) => *c,
            Tok::Star => '*',
            Tok::One => '?',
        })
        .collect()
}

/// Whole-string glob: `*` any run (empty included), `?` exactly one character.
fn glob(p: &[Tok], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(Tok::Star) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(Tok::One) => {
                pi += 1;
                si += 1;
            }
            Some(Tok::Ch(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| *t == Tok::Star)
}

/// `ArnLike`/`ArnEquals`: the six colon-separated fields compared one by one (the last takes
/// the rest, colons included); a pattern of fewer fields matches its last against the rest.
fn arn_match(p: &[Tok], s: &[char]) -> bool {
    let p_fields = split_fields(p, |t| *t == Tok::Ch(':'));
    let s_fields = split_fields(s, |c| *c == ':');
    if s_fields.len() < 6 {
        return false;
    }
    let last = p_fields.len() - 1;
    for i in 0..last {
        let (a, b) = p_fields[i];
        let (c, d) = s_fields[i];
        if !glob(&p[a..b], &s[c..d]) {
            return false;
        }
    }
    let (a, b) = p_fields[last];
    glob(&p[a..b], &s[s_fields[last].0..])
}

/// Start and end of up to six fields; the sixth runs to the end.
fn split_fields<T>(v: &[T], is_colon: impl Fn(&T) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(6);
    let mut start = 0;
    for (i, x) in v.iter().enumerate() {
        if out.len() == 5 {
            break;
        }
        if is_colon(x) {
            out.push((start, i));
            start = i + 1;
        }
    }
    out.push((start, v.len()));
    out
}

fn parse_number(s: &str) -> Option<f64> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// ISO 8601 (`YYYY-MM-DD`, optionally `Thh:mm[:ss[.f]]` and `Z`/`±hh[:mm]`; no offset is UTC)
/// or epoch seconds, as nanoseconds since the epoch.
fn parse_date(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
        return s.parse::<i64>().ok().map(|v| i128::from(v) * 1_000_000_000);
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let d = b.get(from..from + len)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let mut i = 10;
    let mut secs = 0i64;
    let mut nanos = 0i64;
    let mut offset = 0i64;
    if i < b.len() {
        if !matches!(b[i], b'T' | b't') {
            return None;
        }
        let (hh, mm) = (num(i + 1, 2)?, num(i + 4, 2)?);
        if b.get(i + 3) != Some(&b':') || hh > 23 || mm > 59 {
            return None;
        }
        secs = hh * 3600 + mm * 60;
        i += 6;
        if b.get(i) == Some(&b':') {
            let ss = num(i + 1, 2)?;
            if ss > 59 {
                return None;
            }
            secs += ss;
            i += 3;
            if b.get(i) == Some(&b'.') {
                i += 1;
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let digits = i - start;
                if digits == 0 || digits > 9 {
                    return None;
                }
                nanos = num(start, digits)? * 10i64.pow(9 - digits as u32);
            }
        }
        match b.get(i) {
            None => {}
            Some(b'Z' | b'z') => i += 1,
            Some(&sign @ (b'+' | b'-')) => {
                let oh = num(i + 1, 2)?;
                i += 3;
                let om = match b.get(i) {
                    Some(b':') => {
                        i += 3;
                        num(i - 2, 2)?
                    }
                    Some(c) if c.is_ascii_digit() => {
                        i += 2;
                        num(i - 2, 2)?
                    }
                    _ => 0,
                };
                if oh > 23 || om > 59 {
                    return None;
                }
                offset = (oh * 3600 + om * 60) * if sign == b'-' { -1 } else { 1 };
            }
            Some(_) => return None,
        }
        if i != b.len() {
            return None;
        }
    }
    let total = days_from_civil(y, m, d) * 86_400 + secs - offset;
    Some(i128::from(total) * 1_000_000_000 + i128::from(nanos))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An IPv4 or IPv6 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u32,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|v| *v <= max)?
            }
            Some(_) => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is read as its IPv4 address.
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing the document
// ---------------------------------------------------------------------------------------------

/// IAM's checking phases, earliest first: the error reported is the first of the earliest.
const P_SYNTAX: u8 = 0;
const P_PRINCIPAL: u8 = 1;
const P_LEGACY: u8 = 2;
const P_SID: u8 = 3;
const P_ACTIONS: u8 = 4;
const P_RESOURCES: u8 = 5;
const P_RESOURCE_FORMAT: u8 = 6;
const P_VENDOR: u8 = 7;

const MSG_SYNTAX: &str = "Syntax errors in policy.";
const MSG_PRINCIPAL: &str = "Policy document should not specify a principal.";
const MSG_LEGACY: &str = "The policy failed legacy parsing";
const MSG_SID_ALNUM: &str =
    "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*";
const MSG_SID_UNIQUE: &str = "Statement IDs (SID) in a single policy must be unique.";
const MSG_ACTIONS: &str = "Policy statement must contain actions.";
const MSG_RESOURCES: &str = "Policy statement must contain resources.";
const MSG_VENDOR: &str = "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.";
const MSG_ONE_COLON: &str = "Actions/Condition can contain only one colon.";
const MSG_RESOURCE_VENDOR: &str = "Resource vendor must be fully qualified and cannot contain regexes.";

/// Partitions a resource ARN may name.
const PARTITIONS: &[&str] = &[
    "aws",
    "aws-cn",
    "aws-us-gov",
    "aws-iso",
    "aws-iso-b",
    "aws-iso-e",
    "aws-iso-f",
    "aws-eusc",
];

struct Pending {
    phase: u8,
    pos: usize,
    text: String,
}

impl Pending {
    fn into_error(self, doc: &str) -> PolicyError {
        let (line, column) = line_col(doc, self.pos);
        PolicyError {
            line,
            column,
            message: format!("{} (line {line}, column {column})", self.text),
        }
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
fn line_col(doc: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(doc.len());
    while !doc.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &doc[..pos];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Parser {
    err: Option<Pending>,
    sids: HashMap<String, usize>,
}

impl Parser {
    fn record(&mut self, phase: u8, pos: usize, text: String) {
        if self.err.as_ref().is_none_or(|e| (phase, pos) < (e.phase, e.pos)) {
            self.err = Some(Pending { phase, pos, text });
        }
    }

    fn syntax(&mut self, pos: usize, detail: impl fmt::Display) {
        self.record(P_SYNTAX, pos, format!("{MSG_SYNTAX} {detail}."));
    }

    fn policy(&mut self, root: &json::Node) -> Option<Policy> {
        let json::Val::Obj(members) = &root.val else {
            self.syntax(root.pos, "The policy must be a JSON object");
            return None;
        };
        let mut version = None;
        let mut id = None;
        let mut statement = None;
        for m in members {
            match m.key.as_str() {
                "Version" => match &m.val.val {
                    json::Val::Str(s) if s == "2012-10-17" => version = Some(Version::V2012_10_17),
                    json::Val::Str(s) if s == "2008-10-17" => version = Some(Version::V2008_10_17),
                    _ => self.syntax(m.val.pos, "Version must be \"2012-10-17\" or \"2008-10-17\""),
                },
                "Id" => match &m.val.val {
                    json::Val::Str(s) => id = Some(s.clone()),
                    _ => self.syntax(m.val.pos, "Id must be a string"),
                },
                "Statement" => statement = Some(&m.val),
                "Principal" | "NotPrincipal" => self.syntax(
                    m.pos,
                    format_args!("{} belongs in a statement, and not in an identity-based policy", m.key),
                ),
                other => self.syntax(
                    m.pos,
                    format_args!("Unknown member {other:?} (a policy has Version, Id and Statement)"),
                ),
            }
        }
        let vars = version == Some(Version::V2012_10_17);
        let nodes: Vec<&json::Node> = match statement {
            None => {
                // Named only when nothing else is wrong: a misspelt "Statment" says more.
                if self.err.is_none() {
                    self.syntax(root.pos, "The policy has no Statement");
                }
                Vec::new()
            }
            Some(n) => match &n.val {
                json::Val::Obj(_) => vec![n],
                json::Val::Arr(items) if items.is_empty() => {
                    self.syntax(n.pos, "Statement is an empty list");
                    Vec::new()
                }
                json::Val::Arr(items) => items.iter().collect(),
                _ => {
                    self.syntax(n.pos, "Statement must be an object or a list of objects");
                    Vec::new()
                }
            },
        };
        let mut statements = Vec::with_capacity(nodes.len());
        for n in nodes {
            if let Some(s) = self.statement(n, vars) {
                statements.push(s);
            }
        }
        if self.err.is_some() {
            return None;
        }
        Some(Policy {
            version,
            id,
            statements,
        })
    }

    fn statement(&mut self, n: &json::Node, vars: bool) -> Option<Statement> {
        let json::Val::Obj(members) = &n.val else {
            self.syntax(n.pos, "A statement must be a JSON object");
            return None;
        };
        let mut effect = None;
        let mut action: Option<(bool, &json::Node)> = None;
        let mut resource: Option<(bool, &json::Node)> = None;
        let mut condition = None;
        for m in members {
            match m.key.as_str() {
                "Sid" => match &m.val.val {
                    json::Val::Str(s) if !s.chars().all(|c| c.is_ascii_alphanumeric()) => {
                        self.record(P_SID, m.val.pos, MSG_SID_ALNUM.to_owned());
                    }
                    json::Val::Str(s) => {
                        if !s.is_empty() && self.sids.insert(s.clone(), m.val.pos).is_some() {
                            self.record(P_SID, m.val.pos, format!("{MSG_SID_UNIQUE} Sid {s:?} is used twice."));
                        }
                    }
                    _ => self.syntax(m.val.pos, "Sid must be a string"),
                },
                "Effect" => effect = Some(&m.val),
                "Action" | "NotAction" => {
                    if action.is_some() {
                        self.syntax(m.pos, "A statement has both Action and NotAction");
                    }
                    action = Some((m.key == "NotAction", &m.val));
                }
                "Resource" | "NotResource" => {
                    if resource.is_some() {
                        self.syntax(m.pos, "A statement has both Resource and NotResource");
                    }
                    resource = Some((m.key == "NotResource", &m.val));
                }
                "Condition" => condition = Some(&m.val),
                "Principal" | "NotPrincipal" => self.record(P_PRINCIPAL, m.pos, MSG_PRINCIPAL.to_owned()),
                other => self.syntax(
                    m.pos,
                    format_args!(
                        "Unknown member {other:?} in a statement (a statement has Sid, Effect, \
                         Action or NotAction, Resource or NotResource, and Condition)"
                    ),
                ),
            }
        }
        let effect = match effect.map(|e| (e.pos, &e.val)) {
            None => {
                self.syntax(n.pos, "A statement has no Effect");
                None
            }
            Some((_, json::Val::Str(s))) if s == "Allow" => Some(Effect::Allow),
            Some((_, json::Val::Str(s))) if s == "Deny" => Some(Effect::Deny),
            Some((pos, json::Val::Str(s))) if s.eq_ignore_ascii_case("allow") || s.eq_ignore_ascii_case("deny") => {
                self.record(
                    P_LEGACY,
                    pos,
                    format!("{MSG_LEGACY}: Effect must be \"Allow\" or \"Deny\", not {s:?}"),
                );
                None
            }
            Some((pos, _)) => {
                self.syntax(pos, "Effect must be \"Allow\" or \"Deny\"");
                None
            }
        };

        let mut actions = Vec::new();
        let not_action = action.is_some_and(|a| a.0);
        match action {
            None => self.record(P_ACTIONS, n.pos, MSG_ACTIONS.to_owned()),
            Some((_, node)) => {
                let list = self.strings(node, "Action");
                if list.as_ref().is_some_and(Vec::is_empty) {
                    self.record(P_ACTIONS, node.pos, MSG_ACTIONS.to_owned());
                }
                for (a, pos) in list.unwrap_or_default() {
                    self.check_action(a, pos);
                    actions.push(toks(&a.to_lowercase(), true));
                }
            }
        }

        let mut resources = Vec::new();
        let not_resource = resource.is_some_and(|r| r.0);
        match resource {
            None => self.record(P_RESOURCES, n.pos, MSG_RESOURCES.to_owned()),
            Some((_, node)) => {
                let list = self.strings(node, "Resource");
                if list.as_ref().is_some_and(Vec::is_empty) {
                    self.record(P_RESOURCES, node.pos, MSG_RESOURCES.to_owned());
                }
                for (r, pos) in list.unwrap_or_default() {
                    self.check_resource(r, pos);
                    resources.push(self.template(r, pos, true, vars));
                }
            }
        }

        let conditions = match condition {
            None => Vec::new(),
            Some(c) => self.conditions(c, vars),
        };
        Some(Statement {
            effect: effect?,
            not_action,
            actions,
            not_resource,
            resources,
            conditions,
        })
    }

    /// A string or a list of strings, with the position of each.
    fn strings<'n>(&mut self, node: &'n json::Node, what: &str) -> Option<Vec<(&'n str, usize)>> {
        match &node.val {
            json::Val::Str(s) => Some(vec![(s.as_str(), node.pos)]),
            json::Val::Arr(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match &item.val {
                        json::Val::Str(s) => out.push((s.as_str(), item.pos)),
                        _ => {
                            self.syntax(item.pos, format_args!("{what} must list strings"));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            _ => {
                self.syntax(node.pos, format_args!("{what} must be a string or a list of strings"));
                None
            }
        }
    }

    fn check_action(&mut self, a: &str, pos: usize) {
        if a == "*" {
            return;
        }
        let mut parts = a.split(':');
        let vendor = parts.next().unwrap_or_default();
        match (parts.next(), parts.next()) {
            (None, _) => self.record(P_VENDOR, pos, MSG_VENDOR.to_owned()),
            (Some(_), Some(_)) => self.record(P_VENDOR, pos, MSG_ONE_COLON.to_owned()),
            (Some(_), None) if vendor.is_empty() => self.record(P_VENDOR, pos, MSG_VENDOR.to_owned()),
            (Some(_), None) => {
                if vendor != "*"
                    && !vendor
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    self.record(P_VENDOR, pos, format!("Vendor {vendor} is not valid"));
                }
            }
        }
    }

    fn check_resource(&mut self, r: &str, pos: usize) {
        if r == "*" {
            return;
        }
        let fields: Vec<&str> = r.split(':').collect();
        if fields.len() < 2 || fields[0] != "arn" {
            self.record(
                P_RESOURCE_FORMAT,
                pos,
                format!("Resource {r} must be in ARN format or \"*\"."),
            );
            return;
        }
        let partition = fields[1];
        if !PARTITIONS.contains(&partition) {
            let rest = &fields[2..];
            let field = |i: usize| match rest.get(i) {
                Some(f) if !f.is_empty() || rest.len() > 1 => (*f).to_owned(),
                _ => "*".to_owned(),
            };
            let tail = if rest.len() > 3 {
                rest[3..].join(":")
            } else {
                "*".to_owned()
            };
            self.record(
                P_RESOURCE_FORMAT,
                pos,
                format!(
                    "Partition \"{partition}\" is not valid for resource \"arn:{partition}:{}:{}:{}:{tail}\".",
                    field(0),
                    field(1),
                    field(2)
                ),
            );
            return;
        }
        match fields.get(2) {
            Some(s) if !s.is_empty() && !s.contains(['*', '?']) => {}
            _ => {
                self.record(P_RESOURCE_FORMAT, pos, MSG_RESOURCE_VENDOR.to_owned());
                return;
            }
        }
        if fields.len() < 6 && r.contains("::") {
            self.record(
                P_LEGACY,
                pos,
                format!("{MSG_LEGACY}: resource {r:?} has an empty field and fewer than six"),
            );
        }
    }

    /// A pattern or value: `*`/`?` are wildcards when `wild`; `${…}` are variables when `vars`.
    fn template(&mut self, s: &str, pos: usize, wild: bool, vars: bool) -> Template {
        if !vars {
            return Template(vec![Part::Toks(toks(s, wild))]);
        }
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            lit.extend(toks(&rest[..i], wild));
            let after = &rest[i + 2..];
            let Some(end) = variable_end(after) else {
                self.syntax(pos, format_args!("The policy variable in {s:?} has no closing brace"));
                return Template(parts);
            };
            let inner = after[..end].trim();
            rest = &after[end + 1..];
            match inner {
                "*" => lit.push(Tok::Ch('*')),
                "?" => lit.push(Tok::Ch('?')),
                "$" => lit.push(Tok::Ch('$')),
                _ => match parse_variable(inner) {
                    Some((key, default)) => {
                        if !lit.is_empty() {
                            parts.push(Part::Toks(std::mem::take(&mut lit)));
                        }
                        parts.push(Part::Var { key, default });
                    }
                    None => {
                        self.syntax(
                            pos,
                            format_args!(
                                "The policy variable ${{{inner}}} in {s:?} is not a key name, \
                                 optionally followed by , 'default'"
                            ),
                        );
                        return Template(parts);
                    }
                },
            }
        }
        lit.extend(toks(rest, wild));
        if !lit.is_empty() || parts.is_empty() {
            parts.push(Part::Toks(lit));
        }
        Template(parts)
    }

    fn conditions(&mut self, node: &json::Node, vars: bool) -> Vec<Cond> {
        let json::Val::Obj(ops) = &node.val else {
            self.syntax(node.pos, "Condition must be an object of condition operators");
            return Vec::new();
        };
        let mut out = Vec::new();
        for op_m in ops {
            let name = op_m.key.as_str();
            let Some((op, negated, qual, if_exists)) = parse_operator(name) else {
                self.syntax(op_m.pos, format_args!("Unknown condition operator {name:?}"));
                continue;
            };
            if op == Op::Null && if_exists {
                self.syntax(op_m.pos, "IfExists cannot be added to Null");
                continue;
            }
            let json::Val::Obj(keys) = &op_m.val.val else {
                self.syntax(op_m.val.pos, format_args!("{name} must be an object of condition keys"));
                continue;
            };
            for k in keys {
                if k.key.split_once(':').is_none_or(|(v, _)| v.is_empty()) {
                    self.record(P_VENDOR, k.pos, MSG_VENDOR.to_owned());
                }
                let items: Vec<&json::Node> = match &k.val.val {
                    json::Val::Arr(items) => items.iter().collect(),
                    _ => vec![&k.val],
                };
                let mut texts = Vec::with_capacity(items.len());
                for item in items {
                    match &item.val {
                        json::Val::Str(s) => texts.push((s.clone(), item.pos)),
                        json::Val::Num(s) => texts.push((s.clone(), item.pos)),
                        json::Val::Bool(b) => texts.push((b.to_string(), item.pos)),
                        _ => self.syntax(
                            item.pos,
                            "Condition values must be strings, numbers or booleans, or lists of them",
                        ),
                    }
                }
                let values = self.values(op, name, &texts, vars);
                out.push(Cond {
                    op,
                    negated,
                    qual,
                    if_exists,
                    key: k.key.to_ascii_lowercase(),
                    values,
                });
            }
        }
        out
    }

    fn values(&mut self, op: Op, name: &str, texts: &[(String, usize)], vars: bool) -> Values {
        match op {
            Op::StrEq | Op::StrEqIc | Op::Bool => Values::Templates(
                texts
                    .iter()
                    .map(|(s, pos)| self.template(s, *pos, false, vars))
                    .collect(),
            ),
            Op::Binary => Values::Templates(
                texts
                    .iter()
                    .map(|(s, pos)| self.template(s, *pos, false, false))
                    .collect(),
            ),
            Op::StrLike | Op::Arn => Values::Templates(
                texts
                    .iter()
                    .map(|(s, pos)| self.template(s, *pos, true, vars))
                    .collect(),
            ),
            Op::Num(_) => Values::Nums(
                texts
                    .iter()
                    .filter_map(|(s, pos)| {
                        let v = parse_number(s);
                        if v.is_none() {
                            self.syntax(*pos, format_args!("{name} needs numbers, and {s:?} is not one"));
                        }
                        v
                    })
                    .collect(),
            ),
            Op::Date(_) => Values::Dates(
                texts
                    .iter()
                    .filter_map(|(s, pos)| {
                        let v = parse_date(s);
                        if v.is_none() {
                            self.record(
                                P_LEGACY,
                                *pos,
                                format!(
                                    "{MSG_LEGACY}: {name} needs ISO 8601 dates or epoch seconds, \
                                     and {s:?} is neither"
                                ),
                            );
                        }
                        v
                    })
                    .collect(),
            ),
            Op::Ip => Values::Cidrs(
                texts
                    .iter()
                    .filter_map(|(s, pos)| {
                        let v = Cidr::parse(s);
                        if v.is_none() {
                            self.syntax(
                                *pos,
                                format_args!("{name} needs IP addresses or CIDR blocks, and {s:?} is neither"),
                            );
                        }
                        v
                    })
                    .collect(),
            ),
            Op::Null => Values::Null(
                texts
                    .iter()
                    .filter_map(|(s, pos)| {
                        if s.eq_ignore_ascii_case("true") {
                            Some(true)
                        } else if s.eq_ignore_ascii_case("false") {
                            Some(false)
                        } else {
                            self.syntax(*pos, format_args!("Null needs \"true\" or \"false\", not {s:?}"));
                            None
                        }
                    })
                    .collect(),
            ),
        }
    }
}

/// Where a policy variable's closing brace is (a `}` inside a quoted default does not close it).
fn variable_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `key` or `key, 'default'` (`''` a quote inside the default) → lower-cased key and default.
fn parse_variable(inner: &str) -> Option<(String, Option<String>)> {
    let (key, default) = match inner.split_once(',') {
        Some((k, d)) => (k.trim(), Some(d.trim())),
        None => (inner.trim(), None),
    };
    if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '\'') {
        return None;
    }
    let default = match default {
        None => None,
        Some(d) => {
            let body = d.strip_prefix('\'')?.strip_suffix('\'')?;
            let mut out = String::with_capacity(body.len());
            let mut chars = body.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\'' && chars.next() != Some('\'') {
                    return None;
                }
                out.push(c);
            }
            Some(out)
        }
    };
    Some((key.to_ascii_lowercase(), default))
}

/// `[ForAllValues:|ForAnyValue:]Operator[IfExists]` → (family, negated, qualifier, if-exists).
fn parse_operator(name: &str) -> Option<(Op, bool, Qual, bool)> {
    let (qual, rest) = if let Some(r) = name.strip_prefix("ForAllValues:") {
        (Qual::ForAll, r)
    } else if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (Qual::ForAny, r)
    } else {
        (Qual::None, name)
    };
    let (rest, if_exists) = match rest.strip_suffix("IfExists") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (op, negated) = match rest {
        "StringEquals" => (Op::StrEq, false),
        "StringNotEquals" => (Op::StrEq, true),
        "StringEqualsIgnoreCase" => (Op::StrEqIc, false),
        "StringNotEqualsIgnoreCase" => (Op::StrEqIc, true),
        "StringLike" => (Op::StrLike, false),
        "StringNotLike" => (Op::StrLike, true),
        "NumericEquals" => (Op::Num(Cmp::Eq), false),
        "NumericNotEquals" => (Op::Num(Cmp::Eq), true),
        "NumericLessThan" => (Op::Num(Cmp::Lt), false),
        "NumericLessThanEquals" => (Op::Num(Cmp::Le), false),
        "NumericGreaterThan" => (Op::Num(Cmp::Gt), false),
        "NumericGreaterThanEquals" => (Op::Num(Cmp::Ge), false),
        "DateEquals" => (Op::Date(Cmp::Eq), false),
        "DateNotEquals" => (Op::Date(Cmp::Eq), true),
        "DateLessThan" => (Op::Date(Cmp::Lt), false),
        "DateLessThanEquals" => (Op::Date(Cmp::Le), false),
        "DateGreaterThan" => (Op::Date(Cmp::Gt), false),
        "DateGreaterThanEquals" => (Op::Date(Cmp::Ge), false),
        "Bool" => (Op::Bool, false),
        "BinaryEquals" => (Op::Binary, false),
        "IpAddress" => (Op::Ip, false),
        "NotIpAddress" => (Op::Ip, true),
        "ArnEquals" | "ArnLike" => (Op::Arn, false),
        "ArnNotEquals" | "ArnNotLike" => (Op::Arn, true),
        "Null" => (Op::Null, false),
        _ => return None,
    };
    Some((op, negated, qual, if_exists))
}

// ---------------------------------------------------------------------------------------------
// JSON with positions
// ---------------------------------------------------------------------------------------------

/// A small JSON (RFC 8259) reader that keeps each value's byte offset, so that a policy's
/// semantic errors can name their line and column. Duplicate member names are refused.
mod json {
    /// How deep arrays and objects may nest (a policy needs 6).
    const MAX_DEPTH: usize = 64;

    /// A value and the byte offset where it starts.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) struct Node {
        pub pos: usize,
        pub val: Val,
    }

    /// A JSON value; numbers keep their text.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Val {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<Node>),
        Obj(Vec<Member>),
    }

    /// An object member: its name, the offset of the name, and its value.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) struct Member {
        pub key: String,
        pub pos: usize,
        pub val: Node,
    }

    /// Where and why the text is not JSON.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) struct SyntaxError {
        pub pos: usize,
        pub msg: &'static str,
    }

    pub(super) fn parse(s: &str) -> Result<Node, SyntaxError> {
        let mut p = P {
            b: s.as_bytes(),
            s,
            i: 0,
        };
        p.ws();
        let v = p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return Err(p.err("text after the end of the document"));
        }
        Ok(v)
    }

    struct P<'a> {
        b: &'a [u8],
        s: &'a str,
        i: usize,
    }

    impl P<'_> {
        fn err(&self, msg: &'static str) -> SyntaxError {
            SyntaxError { pos: self.i, msg }
        }

        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }

        fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
            if depth > MAX_DEPTH {
                return Err(self.err("nested too deeply"));
            }
            let pos = self.i;
            let val = match self.peek() {
                None => return Err(self.err("the document ends too early")),
                Some(b'{') => {
                    self.i += 1;
                    self.ws();
                    let mut members: Vec<Member> = Vec::new();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        loop {
                            self.ws();
                            let kpos = self.i;
                            if self.peek() != Some(b'"') {
                                return Err(self.err("expected a member name in double quotes"));
                            }
                            let key = self.string()?;
                            if members.iter().any(|m| m.key == key) {
                                return Err(SyntaxError {
                                    pos: kpos,
                                    msg: "a member name appears twice",
                                });
                            }
                            self.ws();
                            if self.peek() != Some(b':') {
                                return Err(self.err("expected ':'"));
                            }
                            self.i += 1;
                            self.ws();
                            let val = self.value(depth + 1)?;
                            members.push(Member { key, pos: kpos, val });
                            self.ws();
                            match self.peek() {
                                Some(b',') => self.i += 1,
                                Some(b'}') => {
                                    self.i += 1;
                                    break;
                                }
                                _ => return Err(self.err("expected ',' or '}'")),
                            }
                        }
                    }
                    Val::Obj(members)
                }
                Some(b'[') => {
                    self.i += 1;
                    self.ws();
                    let mut items = Vec::new();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        loop {
                            self.ws();
                            items.push(self.value(depth + 1)?);
                            self.ws();
                            match self.peek() {
                                Some(b',') => self.i += 1,
                                Some(b']') => {
                                    self.i += 1;
                                    break;
                                }
                                _ => return Err(self.err("expected ',' or ']'")),
                            }
                        }
                    }
                    Val::Arr(items)
                }
                Some(b'"') => Val::Str(self.string()?),
                Some(b't') => self.word("true", Val::Bool(true))?,
                Some(b'f') => self.word("false", Val::Bool(false))?,
                Some(b'n') => self.word("null", Val::Null)?,
                Some(b'-' | b'0'..=b'9') => Val::Num(self.number()?),
                Some(_) => return Err(self.err("unexpected character")),
            };
            Ok(Node { pos, val })
        }

        fn word(&mut self, w: &'static str, v: Val) -> Result<Val, SyntaxError> {
            if self.b[self.i..].starts_with(w.as_bytes()) {
                self.i += w.len();
                Ok(v)
            } else {
                Err(self.err("unexpected word"))
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            self.i - start
        }

        fn number(&mut self) -> Result<String, SyntaxError> {
            let start = self.i;
            if self.peek() == Some(b'-') {
                self.i += 1;
            }
            match self.peek() {
                Some(b'0') => self.i += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return Err(self.err("a number needs digits")),
            }
            if self.peek() == Some(b'.') {
                self.i += 1;
                if self.digits() == 0 {
                    return Err(self.err("a number needs digits after '.'"));
                }
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if self.digits() == 0 {
                    return Err(self.err("a number needs digits in its exponent"));
                }
            }
            let text = &self.s[start..self.i];
            // As serde_json: a number beyond f64's range is an error, not infinity.
            if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(SyntaxError {
                    pos: start,
                    msg: "a number out of range",
                });
            }
            Ok(text.to_owned())
        }

        fn hex4(&mut self) -> Result<u32, SyntaxError> {
            let h = self
                .b
                .get(self.i..self.i + 4)
                .ok_or_else(|| self.err("a \\u escape needs 4 hex digits"))?;
            let mut v = 0;
            for &c in h {
                let d = (c as char)
                    .to_digit(16)
                    .ok_or_else(|| self.err("a \\u escape needs 4 hex digits"))?;
                v = v * 16 + d;
            }
            self.i += 4;
            Ok(v)
        }

        fn string(&mut self) -> Result<String, SyntaxError> {
            self.i += 1; // the opening quote
            let mut out = String::new();
            loop {
                let start = self.i;
                while self.peek().is_some_and(|c| c != b'"' && c != b'\\' && c >= 0x20) {
                    self.i += 1;
                }
                // Stops only at ASCII bytes or the end, so both ends are character boundaries.
                out.push_str(&self.s[start..self.i]);
                match self.peek() {
                    None => return Err(self.err("a string has no closing quote")),
                    Some(b'"') => {
                        self.i += 1;
                        return Ok(out);
                    }
                    Some(b'\\') => {
                        self.i += 1;
                        let c = match self.peek() {
                            Some(b'"') => '"',
                            Some(b'\\') => '\\',
                            Some(b'/') => '/',
                            Some(b'b') => '\u{8}',
                            Some(b'f') => '\u{c}',
                            Some(b'n') => '\n',
                            Some(b'r') => '\r',
                            Some(b't') => '\t',
                            Some(b'u') => {
                                self.i += 1;
                                let hi = self.hex4()?;
                                let code = if (0xD800..0xDC00).contains(&hi) {
                                    if !self.b[self.i..].starts_with(b"\\u") {
                                        return Err(self.err("a lone surrogate in a \\u escape"));
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return Err(self.err("a lone surrogate in a \\u escape"));
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    hi
                                };
                                let c =
                                    char::from_u32(code).ok_or_else(|| self.err("a lone surrogate in a \\u escape"))?;
                                out.push(c);
                                continue;
                            }
                            _ => return Err(self.err("an unknown escape in a string")),
                        };
                        out.push(c);
                        self.i += 1;
                    }
                    Some(_) => return Err(self.err("a control character in a string")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EP_A: &str = "arn:aws:sagemaker:us-east-1:111122223333:endpoint/a";

    fn policy(statements: serde_json::Value) -> Policy {
        let doc = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
        Policy::parse(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"))
    }

    fn ctx(keys: &[(&str, &[&str])]) -> Context {
        let mut c = Context::new("sagemaker:CreateEndpoint", EP_A);
        for (k, v) in keys {
            c.insert(k, v.iter().copied());
        }
        c
    }

    /// Does a statement allowing everything under this one condition allow the request?
    fn holds(op: &str, key: &str, values: serde_json::Value, keys: &[(&str, &[&str])]) -> bool {
        let p = policy(json!({"Effect": "Allow", "Action": "*", "Resource": "*",
                              "Condition": {op: {key: values}}}));
        evaluate([&p], &ctx(keys)) == Decision::Allow
    }

    fn err(doc: &str) -> PolicyError {
        match Policy::parse(doc) {
            Ok(_) => panic!("accepted: {doc}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn refused(doc: &str, message_start: &str, line: usize) {
        let e = err(doc);
        assert!(
            e.message.starts_with(message_start),
            "{doc}\n: message {:?} does not start {message_start:?}",
            e.message
        );
        assert_eq!(e.line, line, "{doc}\n: {}", e.message);
        assert!(
            e.message.ends_with(&format!("(line {}, column {})", e.line, e.column)),
            "{}",
            e.message
        );
    }

    // ---- documents ------------------------------------------------------------------------

    #[test]
    fn statement_may_be_an_object_or_a_list_and_members_strings_or_lists() {
        let one = Policy::parse(
            r#"{"Version":"2012-10-17","Id":"x","Statement":{"Sid":"S1","Effect":"Allow","Action":"sagemaker:CreateEndpoint","Resource":"*"}}"#,
        )
        .unwrap();
        assert_eq!(one.statement_count(), 1);
        assert_eq!(one.id(), Some("x"));
        assert_eq!(one.version(), Some(Version::V2012_10_17));
        let list = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":["sagemaker:CreateEndpoint"],"Resource":["*"]},
                             {"Effect":"Deny","NotAction":"iam:*","NotResource":"arn:aws:iam::1:user/x"}]}"#,
        )
        .unwrap();
        assert_eq!(list.statement_count(), 2);
        assert_eq!(list.version(), None);
        assert_eq!(
            Policy::parse(r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#)
                .unwrap()
                .version(),
            Some(Version::V2008_10_17)
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_iams_words_and_the_line() {
        refused(
            "{\"Version\":\"2012-10-17\",\n\"Statement\":[",
            "Syntax errors in policy.",
            2,
        );
        refused("[]", "Syntax errors in policy.", 1);
        refused(
            "{\"Version\":\"2012-10-17\",\n\"Statment\":[]}",
            "Syntax errors in policy. Unknown member \"Statment\"",
            2,
        );
        refused(
            "{\"Version\":\"2020-01-01\",\n\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}}",
            "Syntax errors in policy. Version",
            1,
        );
        refused(
            "{\"Version\":\"2012-10-17\"}",
            "Syntax errors in policy. The policy has no Statement",
            1,
        );
        refused(
            "{\"Version\":\"2012-10-17\",\n\"Statement\":[]}",
            "Syntax errors in policy. Statement is an empty list",
            2,
        );
        refused("{\"Statement\":\n\"x\"}", "Syntax errors in policy.", 2);
        let with = |stmt: &str| format!("{{\n\"Version\": \"2012-10-17\",\n\"Statement\": [\n{stmt}\n]\n}}");
        // Statement text starts on line 4; its members are on their own lines below.
        refused(
            &with("{\"Effect\":\"Allow\",\n\"Action\":\"*\",\n\"Resource\":\"*\",\n\"Foo\":1}"),
            "Syntax errors in policy. Unknown member \"Foo\"",
            7,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\n\"Principal\":\"*\",\n\"Action\":\"*\",\"Resource\":\"*\"}"),
            "Policy document should not specify a principal.",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\n\"NotPrincipal\":{\"AWS\":\"x\"},\n\"Action\":\"*\",\"Resource\":\"*\"}"),
            "Policy document should not specify a principal.",
            5,
        );
        refused(
            &with("{\"Action\":\"*\",\n\"Resource\":\"*\"}"),
            "Syntax errors in policy. A statement has no Effect",
            4,
        );
        refused(
            &with("{\"Action\":\"*\",\n\"Resource\":\"*\",\n\"Effect\":\"allow\"}"),
            "The policy failed legacy parsing",
            6,
        );
        refused(
            &with("{\"Action\":\"*\",\n\"Resource\":\"*\",\n\"Effect\":\"Permit\"}"),
            "Syntax errors in policy. Effect",
            6,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"NotAction\":\"*\",\"Resource\":\"*\"}"),
            "Syntax errors in policy. A statement has both Action and NotAction",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"NotResource\":\"*\",\"Resource\":\"*\"}"),
            "Syntax errors in policy. A statement has both Resource and NotResource",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\n\"Resource\":\"*\"}"),
            "Policy statement must contain actions.",
            4,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\n\"Action\":[],\n\"Resource\":\"*\"}"),
            "Policy statement must contain actions.",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\n\"Action\":\"*\"}"),
            "Policy statement must contain resources.",
            4,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"NotResource\":[]}"),
            "Policy statement must contain resources.",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":5}"),
            "Syntax errors in policy. Resource must be a string",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Resource\":\"*\",\n\"Action\":[\"*\",\n7]}"),
            "Syntax errors in policy. Action must list strings",
            6,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":\"my-bucket\"}"),
            "Resource my-bucket must be in ARN format or \"*\".",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":\"arn:foo:s3:::b\"}"),
            "Partition \"foo\" is not valid for resource \"arn:foo:s3:::b\".",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":\"arn:aws:*:us-east-1:1:x\"}"),
            "Resource vendor must be fully qualified and cannot contain regexes.",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":\"arn:aws:s3::b\"}"),
            "The policy failed legacy parsing",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Resource\":\"*\",\n\"Action\":\"CreateEndpoint\"}"),
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Resource\":\"*\",\n\"Action\":\":CreateEndpoint\"}"),
            "Actions/Conditions must be prefaced by a vendor",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Resource\":\"*\",\n\"Action\":\"sagemaker:a:b\"}"),
            "Actions/Condition can contain only one colon.",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Resource\":\"*\",\n\"Action\":\"sage maker:X\"}"),
            "Vendor sage maker is not valid",
            5,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\"StringEquals\":\n{\"owner\":\"a\"}}}",
            ),
            "Actions/Conditions must be prefaced by a vendor",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\n\"StringEqualz\":{\"aws:username\":\"a\"}}}",
            ),
            "Syntax errors in policy. Unknown condition operator \"StringEqualz\"",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\n\"NullIfExists\":{\"aws:username\":\"true\"}}}",
            ),
            "Syntax errors in policy. IfExists",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\"NumericLessThan\":{\"sagemaker:x\":\n\"ten\"}}}",
            ),
            "Syntax errors in policy. NumericLessThan needs numbers",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\"DateLessThan\":{\"aws:CurrentTime\":\n\"tomorrow\"}}}",
            ),
            "The policy failed legacy parsing",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\"IpAddress\":{\"aws:SourceIp\":[\"10.0.0.0/8\",\n\"300.1.1.1/8\"]}}}",
            ),
            "Syntax errors in policy. IpAddress needs",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\"Null\":{\"aws:username\":\n\"maybe\"}}}",
            ),
            "Syntax errors in policy. Null needs",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\"StringEquals\":{\"aws:username\":\n{\"a\":1}}}}",
            ),
            "Syntax errors in policy. Condition values",
            6,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":\n[]}"),
            "Syntax errors in policy. Condition must be an object",
            6,
        );
        refused(
            &with(
                "{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\n\"Condition\":{\"StringEquals\":\n\"x\"}}",
            ),
            "Syntax errors in policy. StringEquals must be an object",
            6,
        );
        refused(
            &with("{\"Sid\":\n\"my-sid\",\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}"),
            "Statement IDs (SID) must be alpha-numeric.",
            5,
        );
        refused(
            &with(
                "{\"Sid\":\"A\",\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"},\n{\"Sid\":\"A\",\"Effect\":\"Deny\",\"Action\":\"*\",\"Resource\":\"*\"}",
            ),
            "Statement IDs (SID) in a single policy must be unique.",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Action\":\"*\",\"Resource\":\"*\"}"),
            "Syntax errors in policy. Not JSON: a member name appears twice",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":\"arn:aws:s3:::${aws:username\"}"),
            "Syntax errors in policy. The policy variable",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":\"arn:aws:s3:::${}\"}"),
            "Syntax errors in policy. The policy variable",
            5,
        );
        refused(
            &with("{\"Effect\":\"Allow\",\"Action\":\"*\",\n\"Resource\":\"arn:aws:s3:::${a, 'x}\"}"),
            "Syntax errors in policy.",
            5,
        );
        refused(
            &with("\"x\""),
            "Syntax errors in policy. A statement must be a JSON object",
            4,
        );
    }

    #[test]
    fn the_earliest_phase_wins_then_the_earliest_position() {
        // A vendor error (phase 7) on line 4 and a missing resource (phase 5) on line 5.
        let doc = "{\"Version\":\"2012-10-17\",\"Statement\":[\n\
                   {\"Effect\":\"Allow\",\"Resource\":\"*\",\n\
                   \"Action\":\"nocolon\"},\n\
                   {\"Effect\":\"Allow\",\"Action\":\"*\"}]}";
        let e = err(doc);
        assert!(
            e.message.starts_with("Policy statement must contain resources."),
            "{}",
            e.message
        );
        assert_eq!(e.line, 4);
        // Two syntax errors: the first in the text is named.
        let doc = "{\"Version\":\"2012-10-17\",\"Statement\":[\n{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"A\":1},\n{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\",\"B\":1}]}";
        assert_eq!(err(doc).line, 2);
        // Columns count characters, not bytes.
        let doc = "{\"Id\":\"é\",  \"X\":1, \"Statement\":{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}}";
        assert_eq!(err(doc).column, 13);
    }

    #[test]
    fn sizes_are_counted_without_whitespace() {
        assert_eq!(policy_size("{ \"a\" :\n\t\"b c\" }"), 10);
        assert_eq!(USER_POLICY_MAX_CHARS, 2048);
        assert_eq!(GROUP_POLICY_MAX_CHARS, 5120);
        assert_eq!(ROLE_POLICY_MAX_CHARS, 10240);
        assert_eq!(
            size_exceeded_message(2048, "user", "alice"),
            "Maximum policy size of 2048 bytes exceeded for user alice"
        );
    }

    // ---- actions, resources, evaluation -----------------------------------------------------

    fn decide(statements: serde_json::Value, action: &str, resource: &str) -> Decision {
        evaluate([&policy(statements)], &Context::new(action, resource))
    }

    #[test]
    fn actions_match_case_insensitively_with_wildcards() {
        let st = |a: &str| json!({"Effect": "Allow", "Action": a, "Resource": "*"});
        for (pattern, action, want) in [
            ("sagemaker:CreateEndpoint", "sagemaker:CreateEndpoint", true),
            ("SageMaker:createendpoint", "sagemaker:CreateEndpoint", true),
            ("sagemaker:Describe*", "sagemaker:DescribeEndpointConfig", true),
            ("sagemaker:Describe*", "sagemaker:CreateEndpoint", false),
            ("sagemaker:?nvokeEndpoint", "sagemaker:InvokeEndpoint", true),
            ("sagemaker:?InvokeEndpoint", "sagemaker:InvokeEndpoint", false),
            ("sagemaker:*", "sagemaker:InvokeEndpoint", true),
            ("sagemaker:*", "iam:GetUser", false),
            ("*", "iam:GetUser", true),
            ("sagemaker:*Endpoint", "sagemaker:CreateEndpoint", true),
            ("sagemaker:Create", "sagemaker:CreateEndpoint", false),
        ] {
            let want = if want { Decision::Allow } else { Decision::ImplicitDeny };
            assert_eq!(decide(st(pattern), action, EP_A), want, "{pattern} vs {action}");
        }
        let not = json!({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"});
        assert_eq!(decide(not.clone(), "sagemaker:CreateEndpoint", EP_A), Decision::Allow);
        assert_eq!(decide(not, "IAM:CreateUser", EP_A), Decision::ImplicitDeny);
    }

    #[test]
    fn resources_match_case_sensitively_with_wildcards() {
        let st = |r: &str| json!({"Effect": "Allow", "Action": "*", "Resource": r});
        for (pattern, resource, want) in [
            ("*", EP_A, true),
            ("*", "*", true),
            ("arn:aws:sagemaker:*", EP_A, true),
            ("arn:aws:sagemaker:*", "*", false),
            ("arn:aws:sagemaker:us-east-1:111122223333:endpoint/?", EP_A, true),
            ("arn:aws:sagemaker:us-east-1:111122223333:endpoint/A", EP_A, false),
            ("arn:aws:sagemaker:*:*:endpoint/*", EP_A, true),
            ("arn:aws:sagemaker:*:*:model/*", EP_A, false),
            ("arn:aws:sagemaker:us-east-1:111122223333:endpoint/a*", EP_A, true),
            ("arn:aws:sagemaker:us-east-1:111122223333:endpoint/ab", EP_A, false),
        ] {
            let want = if want { Decision::Allow } else { Decision::ImplicitDeny };
            assert_eq!(
                decide(st(pattern), "sagemaker:X", resource),
                want,
                "{pattern} vs {resource}"
            );
        }
        let not = json!({"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:iam::*:*"});
        assert_eq!(decide(not.clone(), "sagemaker:X", EP_A), Decision::Allow);
        assert_eq!(decide(not, "iam:X", "arn:aws:iam::1:user/a"), Decision::ImplicitDeny);
    }

    #[test]
    fn explicit_deny_wins_then_allow_else_implicit_deny() {
        let allow = policy(json!({"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}));
        let deny = policy(json!({"Effect": "Deny", "Action": "sagemaker:Delete*", "Resource": "*"}));
        let c = |a: &str| Context::new(a, EP_A);
        assert_eq!(
            evaluate([&allow, &deny], &c("sagemaker:DeleteEndpoint")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate([&deny, &allow], &c("sagemaker:DeleteEndpoint")),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate([&allow, &deny], &c("sagemaker:CreateEndpoint")),
            Decision::Allow
        );
        assert_eq!(
            evaluate([&deny], &c("sagemaker:CreateEndpoint")),
            Decision::ImplicitDeny
        );
        assert_eq!(evaluate([], &c("sagemaker:CreateEndpoint")), Decision::ImplicitDeny);
    }

    #[test]
    fn access_denied_wording_is_awss() {
        assert_eq!(
            Decision::ImplicitDeny.reason("sagemaker:CreateEndpoint").as_deref(),
            Some("because no identity-based policy allows the sagemaker:CreateEndpoint action")
        );
        assert_eq!(
            Decision::ExplicitDeny.reason("sagemaker:CreateEndpoint").as_deref(),
            Some("with an explicit deny in an identity-based policy")
        );
        assert_eq!(Decision::Allow.reason("sagemaker:CreateEndpoint"), None);
        assert_eq!(
            access_denied_message(
                "arn:aws:iam::111122223333:user/bob",
                "sagemaker:CreateEndpoint",
                EP_A,
                Decision::ImplicitDeny
            )
            .as_deref(),
            Some(
                "User: arn:aws:iam::111122223333:user/bob is not authorized to perform: sagemaker:CreateEndpoint on resource: arn:aws:sagemaker:us-east-1:111122223333:endpoint/a because no identity-based policy allows the sagemaker:CreateEndpoint action"
            )
        );
        assert_eq!(access_denied_message("u", "a:b", "*", Decision::Allow), None);
    }

    // ---- policy variables -----------------------------------------------------------------

    #[test]
    fn policy_variables_substitute_literal_text_in_2012_only() {
        let arn = "arn:aws:sagemaker:us-east-1:111122223333:endpoint/";
        let doc = |version: &str, resource: &str| {
            Policy::parse(
                &json!({"Version": version, "Statement": {"Effect": "Allow", "Action": "*", "Resource": resource}})
                    .to_string(),
            )
            .unwrap()
        };
        let run = |p: &Policy, resource: &str, user: Option<&[&str]>| {
            let mut c = Context::new("sagemaker:X", resource);
            if let Some(u) = user {
                c.insert("aws:username", u.iter().copied());
            }
            evaluate([p], &c)
        };
        let p = doc("2012-10-17", &format!("{arn}${{aws:username}}"));
        assert_eq!(run(&p, &format!("{arn}bob"), Some(&["bob"])), Decision::Allow);
        assert_eq!(run(&p, &format!("{arn}bob"), Some(&["alice"])), Decision::ImplicitDeny);
        assert_eq!(run(&p, &format!("{arn}bob"), None), Decision::ImplicitDeny);
        assert_eq!(
            run(&p, &format!("{arn}bob"), Some(&["bob", "alice"])),
            Decision::ImplicitDeny
        );
        // A substituted value is literal: a user named "b*" does not get "bob".
        assert_eq!(run(&p, &format!("{arn}bob"), Some(&["b*"])), Decision::ImplicitDeny);
        assert_eq!(run(&p, &format!("{arn}b*"), Some(&["b*"])), Decision::Allow);
        // Key names are case-insensitive; wildcards around a variable still work.
        let p = doc("2012-10-17", &format!("{arn}${{AWS:UserName}}-*"));
        assert_eq!(run(&p, &format!("{arn}bob-1"), Some(&["bob"])), Decision::Allow);
        // Defaults, and quotes inside them.
        let p = doc("2012-10-17", &format!("{arn}${{aws:username, 'no''body'}}"));
        assert_eq!(run(&p, &format!("{arn}no'body"), None), Decision::Allow);
        assert_eq!(run(&p, &format!("{arn}bob"), Some(&["bob"])), Decision::Allow);
        // ${*} ${?} ${$} are literal characters.
        let p = doc("2012-10-17", &format!("{arn}${{*}}${{?}}${{$}}"));
        assert_eq!(run(&p, &format!("{arn}*?$"), None), Decision::Allow);
        assert_eq!(run(&p, &format!("{arn}ab$"), None), Decision::ImplicitDeny);
        // 2008-10-17 and no Version: plain text, wildcards still wildcards.
        let p = doc("2008-10-17", &format!("{arn}${{aws:username}}"));
        assert_eq!(run(&p, &format!("{arn}bob"), Some(&["bob"])), Decision::ImplicitDeny);
        assert_eq!(
            run(&p, &format!("{arn}${{aws:username}}"), Some(&["bob"])),
            Decision::Allow
        );
        let p = Policy::parse(
            &json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": format!("{arn}${{*}}")}}).to_string(),
        )
        .unwrap();
        assert_eq!(run(&p, &format!("{arn}${{anything}}"), None), Decision::Allow);
    }

    #[test]
    fn an_unresolved_variable_makes_its_statement_not_apply_even_a_deny() {
        let p = policy(json!([
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": "*", "Resource": "*",
             "Condition": {"StringNotEquals": {"aws:ResourceTag/owner": "${aws:PrincipalTag/team}"}}}
        ]));
        let c = |keys: &[(&str, &[&str])]| evaluate([&p], &ctx(keys));
        assert_eq!(
            c(&[("aws:ResourceTag/owner", &["a"]), ("aws:PrincipalTag/team", &["a"])]),
            Decision::Allow
        );
        assert_eq!(
            c(&[("aws:ResourceTag/owner", &["b"]), ("aws:PrincipalTag/team", &["a"])]),
            Decision::ExplicitDeny
        );
        assert_eq!(c(&[("aws:ResourceTag/owner", &["b"])]), Decision::Allow);
    }

    // ---- condition operators ----------------------------------------------------------------

    const K: &str = "aws:ResourceTag/owner";

    #[test]
    fn string_operators() {
        let v = |x: &[&'static str]| -> Vec<(&'static str, &'static [&'static str])> {
            vec![(K, Box::leak(x.to_vec().into_boxed_slice()))]
        };
        // StringEquals: exact, case-sensitive, values OR, missing → false.
        assert!(holds("StringEquals", K, json!("team-a"), &v(&["team-a"])));
        assert!(!holds("StringEquals", K, json!("team-a"), &v(&["Team-A"])));
        assert!(holds("StringEquals", K, json!(["x", "team-a"]), &v(&["team-a"])));
        assert!(!holds("StringEquals", K, json!("team-*"), &v(&["team-a"])));
        assert!(!holds("StringEquals", K, json!("team-a"), &[]));
        // Key names are case-insensitive.
        assert!(holds(
            "StringEquals",
            "AWS:resourcetag/OWNER",
            json!("team-a"),
            &v(&["team-a"])
        ));
        // StringNotEquals: NOR over values, missing → true.
        assert!(holds("StringNotEquals", K, json!(["x", "y"]), &v(&["team-a"])));
        assert!(!holds("StringNotEquals", K, json!(["x", "team-a"]), &v(&["team-a"])));
        assert!(holds("StringNotEquals", K, json!("team-a"), &[]));
        // IgnoreCase.
        assert!(holds("StringEqualsIgnoreCase", K, json!("TEAM-a"), &v(&["team-A"])));
        assert!(!holds("StringEqualsIgnoreCase", K, json!("team-b"), &v(&["team-A"])));
        assert!(!holds("StringNotEqualsIgnoreCase", K, json!("TEAM-a"), &v(&["team-A"])));
        assert!(holds("StringNotEqualsIgnoreCase", K, json!("team-b"), &v(&["team-A"])));
        assert!(holds("StringNotEqualsIgnoreCase", K, json!("team-b"), &[]));
        // StringLike: wildcards, case-sensitive.
        assert!(holds("StringLike", K, json!("team-*"), &v(&["team-a"])));
        assert!(holds("StringLike", K, json!("team-?"), &v(&["team-a"])));
        assert!(!holds("StringLike", K, json!("team-?"), &v(&["team-ab"])));
        assert!(!holds("StringLike", K, json!("Team-*"), &v(&["team-a"])));
        assert!(!holds("StringLike", K, json!("*"), &[]));
        assert!(!holds("StringNotLike", K, json!(["x*", "team-*"]), &v(&["team-a"])));
        assert!(holds("StringNotLike", K, json!(["x*", "y*"]), &v(&["team-a"])));
        assert!(holds("StringNotLike", K, json!("*"), &[]));
        // IfExists: missing → true, present → as the operator.
        assert!(holds("StringEqualsIfExists", K, json!("team-a"), &[]));
        assert!(!holds("StringEqualsIfExists", K, json!("team-a"), &v(&["team-b"])));
        assert!(holds("StringLikeIfExists", K, json!("team-*"), &v(&["team-b"])));
        assert!(holds("StringNotEqualsIfExists", K, json!("team-a"), &[]));
        // Variables in values; ${*} is a literal star even under StringLike.
        assert!(holds(
            "StringEquals",
            K,
            json!("${aws:username}"),
            &[(K, &["bob"]), ("aws:username", &["bob"])]
        ));
        assert!(!holds("StringLike", K, json!("${*}"), &v(&["team-a"])));
        assert!(holds("StringLike", K, json!("${*}"), &v(&["*"])));
        // Numbers and booleans in the JSON are read as their text.
        assert!(holds("StringEquals", K, json!(5), &v(&["5"])));
    }

    #[test]
    fn numeric_operators() {
        let k = "sagemaker:InitialInstanceCount";
        let c = |x: &'static [&'static str]| vec![(k, x)];
        assert!(holds("NumericEquals", k, json!("2"), &c(&["2"])));
        assert!(holds("NumericEquals", k, json!("2"), &c(&["2.0"])));
        assert!(!holds("NumericEquals", k, json!("2"), &c(&["3"])));
        assert!(holds("NumericNotEquals", k, json!(["1", "2"]), &c(&["3"])));
        assert!(!holds("NumericNotEquals", k, json!(["1", "2"]), &c(&["2"])));
        assert!(holds("NumericNotEquals", k, json!("2"), &[]));
        assert!(holds("NumericLessThan", k, json!("2"), &c(&["1"])));
        assert!(!holds("NumericLessThan", k, json!("2"), &c(&["2"])));
        assert!(holds("NumericLessThanEquals", k, json!(2), &c(&["2"])));
        assert!(!holds("NumericLessThanEquals", k, json!("2"), &c(&["2.5"])));
        assert!(holds("NumericGreaterThan", k, json!("2"), &c(&["10"])));
        assert!(!holds("NumericGreaterThan", k, json!("2"), &c(&["2"])));
        assert!(holds("NumericGreaterThanEquals", k, json!("-1.5e0"), &c(&["-1.5"])));
        assert!(!holds("NumericGreaterThanEquals", k, json!("2"), &c(&["1"])));
        assert!(!holds("NumericLessThan", k, json!("2"), &[]));
        assert!(holds("NumericLessThanIfExists", k, json!("2"), &[]));
        // A request value that is not a number matches nothing.
        assert!(!holds("NumericLessThan", k, json!("2"), &c(&["one"])));
        assert!(holds("NumericNotEquals", k, json!("2"), &c(&["one"])));
    }

    #[test]
    fn date_operators() {
        let k = "aws:CurrentTime";
        let c = |x: &'static [&'static str]| vec![(k, x)];
        let now = &["2026-11-30T07:00:00Z"][..];
        assert!(holds("DateLessThan", k, json!("2026-12-01T00:00:00Z"), &c(now)));
        assert!(!holds("DateLessThan", k, json!("2026-11-30T07:00:00Z"), &c(now)));
        assert!(holds("DateLessThanEquals", k, json!("2026-11-30T07:00:00Z"), &c(now)));
        assert!(holds("DateGreaterThan", k, json!("2026-11-30"), &c(now)));
        assert!(!holds("DateGreaterThanEquals", k, json!("2026-12-01"), &c(now)));
        assert!(holds("DateEquals", k, json!("2026-11-30T09:00:00+02:00"), &c(now)));
        assert!(holds("DateEquals", k, json!("2026-11-30T07:00:00.000Z"), &c(now)));
        assert!(holds("DateEquals", k, json!("1796022000"), &c(now)));
        assert!(holds("DateNotEquals", k, json!(["2026-01-01", "2027-01-01"]), &c(now)));
        assert!(!holds("DateNotEquals", k, json!(["1796022000"]), &c(now)));
        assert!(holds("DateNotEquals", k, json!("2026-01-01"), &[]));
        assert!(!holds("DateLessThan", k, json!("2030-01-01"), &[]));
        assert!(holds("DateLessThanIfExists", k, json!("2020-01-01"), &[]));
        assert!(!holds("DateLessThan", k, json!("2030-01-01"), &c(&["yesterday"])));
        // The parser itself.
        assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_date("1970-01-01T00:00:00-0130"), Some(5400 * 1_000_000_000));
        assert_eq!(parse_date("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        assert_eq!(parse_date("2000-02-29T00:00Z"), Some(951_782_400 * 1_000_000_000));
        assert_eq!(parse_date("1969-12-31T23:59:59Z"), Some(-1_000_000_000));
        for bad in [
            "2001-02-29",
            "2026-13-01",
            "2026-11-30T24:00:00Z",
            "2026-11-30 07:00",
            "2026-11-30T07:00:00Q",
            "",
            "-5",
            "2026-11-30T07:00:00.Z",
            "2026-1-30",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn bool_binary_and_null_operators() {
        let k = "aws:SecureTransport";
        assert!(holds("Bool", k, json!("true"), &[(k, &["true"])]));
        assert!(holds("Bool", k, json!(true), &[(k, &["TRUE"])]));
        assert!(!holds("Bool", k, json!("true"), &[(k, &["false"])]));
        assert!(!holds("Bool", k, json!("false"), &[]));
        assert!(holds("BoolIfExists", k, json!("false"), &[]));
        assert!(holds(
            "BinaryEquals",
            "aws:x",
            json!("QmluYXJ5"),
            &[("aws:x", &["QmluYXJ5"])]
        ));
        assert!(!holds(
            "BinaryEquals",
            "aws:x",
            json!("QmluYXJ5"),
            &[("aws:x", &["qmluyxj5"])]
        ));
        // Null: "true" → the key is absent; "false" → present.
        let r = "aws:RequestTag/owner";
        assert!(holds("Null", r, json!("true"), &[]));
        assert!(!holds("Null", r, json!("true"), &[(r, &["a"])]));
        assert!(holds("Null", r, json!("false"), &[(r, &["a"])]));
        assert!(!holds("Null", r, json!("false"), &[]));
        assert!(holds("Null", r, json!(false), &[(r, &[""])]));
        // A key given no values is absent.
        assert!(holds("Null", r, json!("true"), &[(r, &[])]));
    }

    #[test]
    fn ip_address_operators() {
        let k = "aws:SourceIp";
        assert!(holds("IpAddress", k, json!("10.0.0.0/8"), &[(k, &["10.1.2.3"])]));
        assert!(!holds("IpAddress", k, json!("10.0.0.0/8"), &[(k, &["11.1.2.3"])]));
        assert!(holds(
            "IpAddress",
            k,
            json!(["192.168.0.0/16", "203.0.113.7"]),
            &[(k, &["203.0.113.7"])]
        ));
        assert!(!holds("IpAddress", k, json!("203.0.113.7"), &[(k, &["203.0.113.8"])]));
        assert!(holds("IpAddress", k, json!("0.0.0.0/0"), &[(k, &["8.8.8.8"])]));
        assert!(holds("IpAddress", k, json!("2001:db8::/32"), &[(k, &["2001:db8::1"])]));
        assert!(!holds("IpAddress", k, json!("2001:db8::/32"), &[(k, &["2001:db9::1"])]));
        assert!(!holds("IpAddress", k, json!("::/0"), &[(k, &["10.0.0.1"])]));
        assert!(holds("IpAddress", k, json!("10.0.0.0/8"), &[(k, &["::ffff:10.0.0.1"])]));
        assert!(!holds("IpAddress", k, json!("10.0.0.0/8"), &[]));
        assert!(!holds("IpAddress", k, json!("10.0.0.0/8"), &[(k, &["not-an-ip"])]));
        assert!(holds(
            "NotIpAddress",
            k,
            json!(["10.0.0.0/8", "127.0.0.1/32"]),
            &[(k, &["11.0.0.1"])]
        ));
        assert!(!holds(
            "NotIpAddress",
            k,
            json!(["10.0.0.0/8", "127.0.0.1/32"]),
            &[(k, &["127.0.0.1"])]
        ));
        assert!(holds("NotIpAddress", k, json!("10.0.0.0/8"), &[]));
        assert!(holds("IpAddressIfExists", k, json!("10.0.0.0/8"), &[]));
        for bad in ["10.0.0.0/33", "10.0.0/8", "::/129", "10.0.0.0/", "10.0.0.0/+8", "x"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn arn_operators() {
        let k = "aws:SourceArn";
        let c = |x: &'static [&'static str]| vec![(k, x)];
        assert!(holds("ArnEquals", k, json!(EP_A), &c(&[EP_A])));
        assert!(holds(
            "ArnLike",
            k,
            json!("arn:aws:sagemaker:*:*:endpoint/*"),
            &c(&[EP_A])
        ));
        assert!(holds(
            "ArnEquals",
            k,
            json!("arn:aws:sagemaker:*:*:endpoint/*"),
            &c(&[EP_A])
        ));
        assert!(!holds(
            "ArnLike",
            k,
            json!("arn:aws:sagemaker:*:*:model/*"),
            &c(&[EP_A])
        ));
        // A wildcard does not cross a colon in the first five fields…
        assert!(!holds(
            "ArnLike",
            k,
            json!("arn:aws:sage*:111122223333:endpoint/a"),
            &c(&[EP_A])
        ));
        // …but a shorter pattern's last field takes the rest.
        assert!(holds("ArnLike", k, json!("arn:aws:sagemaker:*"), &c(&[EP_A])));
        assert!(holds(
            "ArnLike",
            k,
            json!("arn:aws:*:*:*:endpoint/a:b"),
            &c(&["arn:aws:x:r:1:endpoint/a:b"])
        ));
        assert!(!holds("ArnLike", k, json!("arn:aws:*"), &c(&["not-an-arn"])));
        assert!(!holds("ArnLike", k, json!("arn:aws:*"), &c(&["arn:aws:s3"])));
        assert!(!holds("ArnLike", k, json!("arn:aws:*"), &[]));
        assert!(holds("ArnNotLike", k, json!("arn:aws:iam::*"), &c(&[EP_A])));
        assert!(!holds("ArnNotEquals", k, json!(EP_A), &c(&[EP_A])));
        assert!(holds("ArnNotLike", k, json!("arn:aws:iam::*"), &[]));
        assert!(holds("ArnLikeIfExists", k, json!("arn:aws:iam::*"), &[]));
    }

    #[test]
    fn set_qualifiers() {
        let k = "aws:TagKeys";
        let c = |x: &'static [&'static str]| vec![(k, x)];
        // ForAllValues: every request value in the set; empty/missing → true.
        assert!(holds(
            "ForAllValues:StringEquals",
            k,
            json!(["owner", "team"]),
            &c(&["owner"])
        ));
        assert!(holds(
            "ForAllValues:StringEquals",
            k,
            json!(["owner", "team"]),
            &c(&["owner", "team"])
        ));
        assert!(!holds(
            "ForAllValues:StringEquals",
            k,
            json!(["owner", "team"]),
            &c(&["owner", "cost"])
        ));
        assert!(holds("ForAllValues:StringEquals", k, json!(["owner"]), &[]));
        assert!(holds("ForAllValues:StringLike", k, json!("o*"), &c(&["owner", "ops"])));
        // ForAllValues with a negated operator: no request value in the set.
        assert!(holds(
            "ForAllValues:StringNotEquals",
            k,
            json!(["secret"]),
            &c(&["owner", "team"])
        ));
        assert!(!holds(
            "ForAllValues:StringNotEquals",
            k,
            json!(["secret"]),
            &c(&["owner", "secret"])
        ));
        // ForAnyValue: at least one; empty/missing → false (true with IfExists).
        assert!(holds(
            "ForAnyValue:StringEquals",
            k,
            json!(["owner"]),
            &c(&["cost", "owner"])
        ));
        assert!(!holds("ForAnyValue:StringEquals", k, json!(["owner"]), &c(&["cost"])));
        assert!(!holds("ForAnyValue:StringEquals", k, json!(["owner"]), &[]));
        assert!(!holds("ForAnyValue:StringNotEquals", k, json!(["owner"]), &[]));
        assert!(holds("ForAnyValue:StringEqualsIfExists", k, json!(["owner"]), &[]));
        assert!(holds(
            "ForAnyValue:StringLike",
            k,
            json!(["ow*"]),
            &c(&["cost", "owner"])
        ));
        assert!(holds(
            "ForAnyValue:StringNotEquals",
            k,
            json!(["owner"]),
            &c(&["owner", "cost"])
        ));
        assert!(!holds(
            "ForAnyValue:StringNotEquals",
            k,
            json!(["owner"]),
            &c(&["owner"])
        ));
        // sagemaker:InstanceTypes as the issue uses it.
        let t = "sagemaker:InstanceTypes";
        assert!(holds(
            "ForAllValues:StringLike",
            t,
            json!(["ml.g5.*", "ml.m5.large"]),
            &[(t, &["ml.g5.xlarge", "ml.m5.large"])]
        ));
        assert!(!holds(
            "ForAllValues:StringLike",
            t,
            json!(["ml.g5.*"]),
            &[(t, &["ml.g5.xlarge", "ml.p4d.24xlarge"])]
        ));
        // No qualifier on a multi-valued key: any match; negated: none matches.
        assert!(holds("StringEquals", k, json!("owner"), &c(&["cost", "owner"])));
        assert!(!holds("StringNotEquals", k, json!("owner"), &c(&["cost", "owner"])));
    }

    #[test]
    fn keys_and_operators_and() {
        let p = policy(json!({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {
            "StringEquals": {"aws:RequestTag/owner": "a", "aws:RequestTag/team": "t"},
            "Bool": {"aws:SecureTransport": "true"}
        }}));
        let full: &[(&str, &[&str])] = &[
            ("aws:RequestTag/owner", &["a"]),
            ("aws:RequestTag/team", &["t"]),
            ("aws:SecureTransport", &["true"]),
        ];
        assert_eq!(evaluate([&p], &ctx(full)), Decision::Allow);
        for skip in 0..full.len() {
            let partial: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, kv)| *kv)
                .collect();
            assert_eq!(
                evaluate([&p], &ctx(&partial)),
                Decision::ImplicitDeny,
                "without {:?}",
                full[skip].0
            );
        }
    }

    #[test]
    fn the_issues_owner_tag_and_expiring_exception_policies() {
        let p = policy(json!([
            {"Sid": "CreateWithOwner", "Effect": "Allow", "Action": "sagemaker:Create*", "Resource": "*",
             "Condition": {"Null": {"aws:RequestTag/owner": "false"}}},
            {"Sid": "Exception", "Effect": "Allow", "Action": "sagemaker:CreateEndpoint", "Resource": "*",
             "Condition": {"DateLessThan": {"aws:CurrentTime": "2026-12-01T00:00:00Z"}}},
            {"Sid": "TeamA", "Effect": "Allow", "Action": ["sagemaker:Describe*", "sagemaker:InvokeEndpoint"], "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/owner": "team-a"}}}
        ]));
        let run = |action: &str, keys: &[(&str, &[&str])]| {
            let mut c = Context::new(action, EP_A);
            for (k, v) in keys {
                c.insert(k, v.iter().copied());
            }
            evaluate([&p], &c)
        };
        assert_eq!(
            run("sagemaker:CreateModel", &[("aws:RequestTag/owner", &["me"])]),
            Decision::Allow
        );
        assert_eq!(run("sagemaker:CreateModel", &[]), Decision::ImplicitDeny);
        assert_eq!(
            run(
                "sagemaker:CreateEndpoint",
                &[("aws:CurrentTime", &["2026-11-30T07:00:00Z"])]
            ),
            Decision::Allow
        );
        assert_eq!(
            run(
                "sagemaker:CreateEndpoint",
                &[("aws:CurrentTime", &["2026-12-01T00:00:01Z"])]
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            run("sagemaker:DescribeEndpoint", &[("aws:ResourceTag/owner", &["team-a"])]),
            Decision::Allow
        );
        assert_eq!(
            run("sagemaker:InvokeEndpoint", &[("aws:ResourceTag/owner", &["team-b"])]),
            Decision::ImplicitDeny
        );
        assert_eq!(
            run("sagemaker:DeleteEndpoint", &[("aws:ResourceTag/owner", &["team-a"])]),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn glob_and_field_splitting() {
        let g = |p: &str, s: &str| glob(&toks(p, true), &s.chars().collect::<Vec<_>>());
        assert!(g("", ""));
        assert!(!g("", "a"));
        assert!(g("*", ""));
        assert!(g("a*b*c", "aXbYbc"));
        assert!(!g("a*b*c", "aXbYb"));
        assert!(g("**?", "x"));
        assert!(!g("?", ""));
        assert_eq!(split_fields(&['a', ':', 'b'], |c| *c == ':'), vec![(0, 1), (2, 3)]);
        let s: Vec<char> = "a:b:c:d:e:f:g".chars().collect();
        assert_eq!(split_fields(&s, |c| *c == ':').last(), Some(&(10, 13)));
    }
}

/// A small reference model of AWS's evaluation, written apart from the implementation (naive
/// recursive wildcard matching, the documented rules spelt out one by one), and checked against
/// it on generated policies and requests.
#[cfg(test)]
mod differential {
    use super::{Context, Decision, Policy, evaluate, json, policy_size};
    use proptest::prelude::*;
    use proptest::sample::select;
    use serde_json::json as j;

    #[derive(Debug, Clone)]
    struct RCond {
        op: String,
        key: String,
        values: Vec<String>,
    }

    #[derive(Debug, Clone)]
    struct RStmt {
        allow: bool,
        not_action: bool,
        actions: Vec<String>,
        not_resource: bool,
        resources: Vec<String>,
        conds: Vec<RCond>,
    }

    /// A policy: its statements, and whether it declares 2012-10-17 (else 2008-10-17).
    type RPolicy = (Vec<RStmt>, bool);

    #[derive(Debug, Clone)]
    struct RReq {
        action: String,
        resource: String,
        keys: Vec<(String, Vec<String>)>,
    }

    fn render((stmts, v2012): &RPolicy) -> String {
        let st: Vec<serde_json::Value> = stmts
            .iter()
            .map(|s| {
                let mut m = serde_json::Map::new();
                m.insert("Effect".into(), j!(if s.allow { "Allow" } else { "Deny" }));
                m.insert(if s.not_action { "NotAction" } else { "Action" }.into(), j!(s.actions));
                m.insert(
                    if s.not_resource { "NotResource" } else { "Resource" }.into(),
                    j!(s.resources),
                );
                if !s.conds.is_empty() {
                    let mut c = serde_json::Map::new();
                    for rc in &s.conds {
                        let block = c.entry(rc.op.clone()).or_insert_with(|| j!({}));
                        if let Some(block) = block.as_object_mut() {
                            block.insert(rc.key.clone(), j!(rc.values));
                        }
                    }
                    m.insert("Condition".into(), c.into());
                }
                serde_json::Value::Object(m)
            })
            .collect();
        j!({"Version": if *v2012 { "2012-10-17" } else { "2008-10-17" }, "Statement": st}).to_string()
    }

    fn context(r: &RReq) -> Context {
        let mut c = Context::new(r.action.clone(), r.resource.clone());
        for (k, v) in &r.keys {
            c.insert(k, v.iter().cloned());
        }
        c
    }

    // ---- the model ------------------------------------------------------------------------

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum T {
        Lit(char),
        Star,
        One,
    }

    /// Every value the request has for `key`, key names compared without case.
    fn values_of(req: &RReq, key: &str) -> Vec<String> {
        req.keys
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .flat_map(|(_, v)| v.clone())
            .collect()
    }

    /// Pattern text → tokens. The model knows the only variables the generator writes:
    /// `${aws:username}` (one value, else unresolvable) and `${*}`.
    fn tokens(p: &str, wild: bool, vars: bool, req: &RReq) -> Option<Vec<T>> {
        let mut out = Vec::new();
        let mut rest = p;
        loop {
            if vars && rest.starts_with("${aws:username}") {
                let v = values_of(req, "aws:username");
                if v.len() != 1 {
                    return None;
                }
                out.extend(v[0].chars().map(T::Lit));
                rest = &rest["${aws:username}".len()..];
            } else if vars && rest.starts_with("${*}") {
                out.push(T::Lit('*'));
                rest = &rest[4..];
            } else if let Some(c) = rest.chars().next() {
                out.push(match c {
                    '*' if wild => T::Star,
                    '?' if wild => T::One,
                    c => T::Lit(c),
                });
                rest = &rest[c.len_utf8()..];
            } else {
                return Some(out);
            }
        }
    }

    fn text(t: &[T]) -> String {
        t.iter()
            .map(|t| {
                if let T::Lit(c) = t {
                    *c
                } else {
                    unreachable!("a wildcard in literal text")
                }
            })
            .collect()
    }

    /// Naive recursive wildcard matching.
    fn rglob(p: &[T], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((T::Star, rest)) => (0..=s.len()).any(|i| rglob(rest, &s[i..])),
            Some((T::One, rest)) => !s.is_empty() && rglob(rest, &s[1..]),
            Some((T::Lit(c), rest)) => s.first() == Some(c) && rglob(rest, &s[1..]),
        }
    }

    fn rcond(c: &RCond, req: &RReq, vars: bool) -> Option<bool> {
        let for_all = c.op.starts_with("ForAllValues:");
        let for_any = c.op.starts_with("ForAnyValue:");
        let name =
            c.op.trim_start_matches("ForAllValues:")
                .trim_start_matches("ForAnyValue:");
        let if_exists = name.ends_with("IfExists");
        let name = name.trim_end_matches("IfExists");
        let present = values_of(req, &c.key);
        if name == "Null" {
            // "true": the key is absent; "false": it is present.
            return Some(c.values.iter().any(|v| (v == "true") == present.is_empty()));
        }
        let (positive, negated) = match name {
            "StringNotEquals" => ("StringEquals", true),
            "StringNotEqualsIgnoreCase" => ("StringEqualsIgnoreCase", true),
            "StringNotLike" => ("StringLike", true),
            "NumericNotEquals" => ("NumericEquals", true),
            n => (n, false),
        };
        let numeric = positive.starts_with("Numeric");
        let vals: Vec<Vec<T>> = c
            .values
            .iter()
            .map(|v| tokens(v, positive == "StringLike", vars && !numeric, req))
            .collect::<Option<_>>()?;
        let matches = |r: &str| {
            vals.iter().any(|v| match positive {
                "StringEquals" => text(v) == r,
                "StringEqualsIgnoreCase" => text(v).to_lowercase() == r.to_lowercase(),
                "StringLike" => rglob(v, &r.chars().collect::<Vec<_>>()),
                "Bool" => text(v).eq_ignore_ascii_case(r),
                _ => match (r.parse::<f64>(), text(v).parse::<f64>()) {
                    (Ok(a), Ok(b)) => match positive {
                        "NumericEquals" => a == b,
                        "NumericLessThan" => a < b,
                        "NumericGreaterThanEquals" => a >= b,
                        other => unreachable!("the model has no {other}"),
                    },
                    _ => false,
                },
            })
        };
        if present.is_empty() {
            return Some(if if_exists || for_all {
                true
            } else if for_any {
                false
            } else {
                negated
            });
        }
        Some(if for_all {
            present.iter().all(|r| matches(r) != negated)
        } else if for_any {
            present.iter().any(|r| matches(r) != negated)
        } else {
            present.iter().any(|r| matches(r)) != negated
        })
    }

    fn applies(s: &RStmt, req: &RReq, vars: bool) -> bool {
        let action: Vec<char> = req.action.to_lowercase().chars().collect();
        let action_matches = s
            .actions
            .iter()
            .any(|p| tokens(&p.to_lowercase(), true, false, req).is_some_and(|t| rglob(&t, &action)));
        if action_matches == s.not_action {
            return false;
        }
        let resource: Vec<char> = req.resource.chars().collect();
        let mut resource_matches = false;
        for p in &s.resources {
            match tokens(p, true, vars, req) {
                None => return false,
                Some(t) => resource_matches |= rglob(&t, &resource),
            }
        }
        if resource_matches == s.not_resource {
            return false;
        }
        let mut all = true;
        for c in &s.conds {
            match rcond(c, req, vars) {
                None => return false,
                Some(b) => all &= b,
            }
        }
        all
    }

    fn model(policies: &[RPolicy], req: &RReq) -> Decision {
        let applying: Vec<bool> = policies
            .iter()
            .flat_map(|(stmts, vars)| stmts.iter().filter(|s| applies(s, req, *vars)).map(|s| s.allow))
            .collect();
        if applying.contains(&false) {
            Decision::ExplicitDeny
        } else if applying.contains(&true) {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    // ---- generators -----------------------------------------------------------------------

    const ARN: &str = "arn:aws:sagemaker:us-east-1:111122223333:endpoint/";
    const ACTIONS: &[&str] = &[
        "sagemaker:CreateEndpoint",
        "sagemaker:DescribeEndpoint",
        "sagemaker:InvokeEndpoint",
        "iam:GetUser",
    ];
    const ACTION_PATTERNS: &[&str] = &[
        "*",
        "sagemaker:*",
        "sagemaker:Describe*",
        "SageMaker:createendpoint",
        "sagemaker:?nvokeEndpoint",
        "iam:*",
        "sagemaker:*Endpoint",
        "sagemaker:Create*Config",
        "IAM:get?ser",
    ];
    const KEYS: &[&str] = &[
        "aws:username",
        "aws:ResourceTag/owner",
        "AWS:resourcetag/OWNER",
        "aws:TagKeys",
        "sagemaker:Count",
    ];
    const REQUEST_VALUES: &[&str] = &[
        "a", "b", "A", "a*", "*", "team-a", "1", "2", "10", "true", "FALSE", "bob", "",
    ];

    fn resources() -> Vec<String> {
        ["a", "b", "ab", "a*", "bob", "team-a"]
            .iter()
            .map(|s| format!("{ARN}{s}"))
            .chain([
                "*".to_owned(),
                "arn:aws:sagemaker:us-east-1:111122223333:model/a".to_owned(),
            ])
            .collect()
    }

    fn resource_patterns() -> Vec<String> {
        [
            "?",
            "*",
            "${aws:username}",
            "${aws:username}*",
            "a${*}",
            "a*",
            "team-${aws:username}",
            "b",
        ]
        .iter()
        .map(|s| format!("{ARN}{s}"))
        .chain(["*", "arn:aws:sagemaker:*", "arn:aws:sagemaker:*:*:model/a"].map(str::to_owned))
        .collect()
    }

    const OPS: &[&str] = &[
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        "Bool",
        "NumericEquals",
        "NumericNotEquals",
        "NumericLessThan",
        "NumericGreaterThanEquals",
        "Null",
    ];

    fn cond() -> impl Strategy<Value = RCond> {
        (
            select(&["", "", "ForAllValues:", "ForAnyValue:"][..]),
            select(OPS),
            any::<bool>(),
            select(KEYS),
        )
            .prop_flat_map(|(prefix, base, if_exists, key)| {
                let alphabet: &'static [&'static str] = match base {
                    "Null" => &["true", "false"],
                    "Bool" => &["true", "false", "TRUE"],
                    b if b.starts_with("Numeric") => &["1", "2", "10", "-1"],
                    _ => &[
                        "a",
                        "b",
                        "A",
                        "a*",
                        "?",
                        "*",
                        "${aws:username}",
                        "team-${aws:username}",
                        "${*}",
                    ],
                };
                let suffix = if if_exists && base != "Null" { "IfExists" } else { "" };
                let op = format!("{prefix}{base}{suffix}");
                proptest::collection::vec(select(alphabet), 0..3).prop_map(move |values| RCond {
                    op: op.clone(),
                    key: key.to_owned(),
                    values: values.into_iter().map(str::to_owned).collect(),
                })
            })
    }

    fn stmt() -> impl Strategy<Value = RStmt> {
        (
            any::<bool>(),
            prop::bool::weighted(0.2),
            proptest::collection::vec(select(ACTION_PATTERNS), 1..3),
            prop::bool::weighted(0.2),
            proptest::collection::vec(select(resource_patterns()), 1..3),
            proptest::collection::vec(cond(), 0..3),
        )
            .prop_map(|(allow, not_action, actions, not_resource, resources, conds)| {
                // One JSON object per operator: a later (operator, key) replaces an earlier one.
                let mut kept: Vec<RCond> = Vec::new();
                for c in conds {
                    kept.retain(|k| !(k.op == c.op && k.key == c.key));
                    kept.push(c);
                }
                RStmt {
                    allow,
                    not_action,
                    actions: actions.into_iter().map(str::to_owned).collect(),
                    not_resource,
                    resources,
                    conds: kept,
                }
            })
    }

    fn rpolicy() -> impl Strategy<Value = RPolicy> {
        (proptest::collection::vec(stmt(), 1..4), prop::bool::weighted(0.8))
    }

    fn request() -> impl Strategy<Value = RReq> {
        (
            select(ACTIONS),
            select(resources()),
            proptest::collection::vec(
                (select(KEYS), proptest::collection::vec(select(REQUEST_VALUES), 0..3)),
                0..4,
            ),
        )
            .prop_map(|(action, resource, keys)| RReq {
                action: action.to_owned(),
                resource,
                keys: keys
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
                    .collect(),
            })
    }

    fn parsed(p: &RPolicy) -> Result<Policy, TestCaseError> {
        let doc = render(p);
        Policy::parse(&doc).map_err(|e| TestCaseError::fail(format!("{doc}: {e}")))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn evaluation_agrees_with_the_reference_model(
            policies in proptest::collection::vec(rpolicy(), 0..3),
            req in request(),
        ) {
            let parsed: Vec<Policy> = policies.iter().map(parsed).collect::<Result<_, _>>()?;
            let docs: Vec<String> = policies.iter().map(render).collect();
            prop_assert_eq!(evaluate(&parsed, &context(&req)), model(&policies, &req), "{:?} {:?}", docs, req);
        }

        #[test]
        fn adding_a_deny_never_grants(
            policies in proptest::collection::vec(rpolicy(), 0..3),
            mut extra in stmt(),
            vars in any::<bool>(),
            req in request(),
        ) {
            extra.allow = false;
            let mut parsed: Vec<Policy> = policies.iter().map(parsed).collect::<Result<_, _>>()?;
            let before = evaluate(&parsed, &context(&req));
            parsed.push(self::parsed(&(vec![extra], vars))?);
            let after = evaluate(&parsed, &context(&req));
            prop_assert!(before == Decision::Allow || after != Decision::Allow, "{:?} → {:?}", before, after);
            prop_assert!(before != Decision::ExplicitDeny || after == Decision::ExplicitDeny);
        }

        #[test]
        fn adding_an_allow_never_lifts_an_explicit_deny(
            policies in proptest::collection::vec(rpolicy(), 0..3),
            mut extra in stmt(),
            vars in any::<bool>(),
            req in request(),
        ) {
            extra.allow = true;
            let mut parsed: Vec<Policy> = policies.iter().map(parsed).collect::<Result<_, _>>()?;
            let before = evaluate(&parsed, &context(&req));
            parsed.push(self::parsed(&(vec![extra], vars))?);
            let after = evaluate(&parsed, &context(&req));
            prop_assert!(before != Decision::ExplicitDeny || after == Decision::ExplicitDeny, "{:?} → {:?}", before, after);
            prop_assert!(before != Decision::Allow || after == Decision::Allow);
        }
    }

    // ---- the JSON reader and the parser on arbitrary text ----------------------------------

    fn to_serde(n: &json::Node) -> serde_json::Value {
        match &n.val {
            json::Val::Null => serde_json::Value::Null,
            json::Val::Bool(b) => (*b).into(),
            json::Val::Num(t) => serde_json::from_str(t).unwrap_or(serde_json::Value::Null),
            json::Val::Str(s) => s.clone().into(),
            json::Val::Arr(items) => items.iter().map(to_serde).collect(),
            json::Val::Obj(members) => members
                .iter()
                .map(|m| (m.key.clone(), to_serde(&m.val)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// Where our reader may refuse what serde_json reads: a member named twice (serde_json keeps
    /// the last), or nesting past our limit.
    fn refused_by_design(text: &str) -> bool {
        json::parse(text).is_err_and(|e| e.msg == "a member name appears twice" || e.msg == "nested too deeply")
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e6f64..1e6).prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const JSONISH: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\n",
        "\"a\"",
        "\"b\"",
        "1",
        "-0.5e3",
        "01",
        "1.",
        "true",
        "tru",
        "null",
        "\"\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud83d\"",
        "\"\\u12\"",
        "\"\\q\"",
        "\"\t\"",
        "é",
        "\"",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn the_json_reader_reads_what_serde_json_writes(v in value(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) };
            let text = text.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let node = json::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
            prop_assert_eq!(to_serde(&node), v);
        }

        #[test]
        fn the_json_reader_agrees_with_serde_json_on_jsonish_text(parts in proptest::collection::vec(select(JSONISH), 0..16)) {
            let text: String = parts.concat();
            let theirs = serde_json::from_str::<serde_json::Value>(&text);
            let ours = json::parse(&text);
            match (&ours, &theirs) {
                (Ok(n), Ok(v)) => prop_assert_eq!(&to_serde(n), v, "{}", text),
                (Err(_), Err(_)) => {}
                (Err(_), Ok(_)) => prop_assert!(refused_by_design(&text), "{}: we refuse what serde_json reads", text),
                (Ok(_), Err(e)) => prop_assert!(false, "{}: we read what serde_json refuses ({})", text, e),
            }
        }

        #[test]
        fn any_text_parses_or_is_refused_with_a_position(text in ".{0,200}") {
            check_refusal(&text)?;
        }

        #[test]
        fn damaged_policies_parse_or_are_refused_with_a_position(
            p in rpolicy(),
            cuts in proptest::collection::vec((any::<prop::sample::Index>(), select(JSONISH)), 1..4),
        ) {
            let mut doc: Vec<char> = render(&p).chars().collect();
            for (at, insert) in cuts {
                let i = at.index(doc.len() + 1);
                if i < doc.len() && insert == " " {
                    doc.remove(i);
                } else {
                    for (k, c) in insert.chars().enumerate() {
                        doc.insert(i + k, c);
                    }
                }
            }
            check_refusal(&doc.into_iter().collect::<String>())?;
        }
    }

    /// Civil date of a day count, by walking years and months (slow and plain).
    fn civil(mut days: i64) -> (i64, i64, i64) {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut y = 1970;
        loop {
            let len = if leap(y) { 366 } else { 365 };
            if days < 0 {
                y -= 1;
                days += if leap(y) { 366 } else { 365 };
            } else if days >= len {
                days -= len;
                y += 1;
            } else {
                break;
            }
        }
        let lens = [
            31,
            if leap(y) { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        let mut m = 0;
        while days >= lens[m] {
            days -= lens[m];
            m += 1;
        }
        (y, m as i64 + 1, days + 1)
    }

    proptest! {
        #[test]
        fn dates_read_back_what_was_written(
            secs in -2_000_000_000i64..8_000_000_000,
            offset_min in -(23 * 60 + 59)..(23 * 60 + 59i64),
            form in 0..4u8,
        ) {
            let local = secs + offset_min * 60;
            let (y, m, d) = civil(local.div_euclid(86_400));
            let t = local.rem_euclid(86_400);
            let (hh, mm, ss) = (t / 3600, t / 60 % 60, t % 60);
            let sign = if offset_min < 0 { '-' } else { '+' };
            let (oh, om) = (offset_min.abs() / 60, offset_min.abs() % 60);
            let text = match form {
                0 => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{sign}{oh:02}:{om:02}"),
                1 => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.000{sign}{oh:02}{om:02}"),
                2 => {
                    let (y, m, d) = civil(secs.div_euclid(86_400));
                    let t = secs.rem_euclid(86_400);
                    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
                }
                _ => secs.max(0).to_string(),
            };
            let want = if form == 3 { secs.max(0) } else { secs };
            if (0..=9999).contains(&y) {
                prop_assert_eq!(super::parse_date(&text), Some(i128::from(want) * 1_000_000_000), "{}", text);
            }
        }

        #[test]
        fn cidr_blocks_contain_exactly_the_addresses_sharing_their_prefix(
            net in any::<u32>(), addr in any::<u32>(), prefix in 0..=32u32, flip in 0..32u32,
            net6 in any::<u128>(), prefix6 in 0..=128u32,
        ) {
            let bits_agree = |a: u128, b: u128, n: u32, width: u32| (0..n).all(|i| (a >> (width - 1 - i)) & 1 == (b >> (width - 1 - i)) & 1);
            let v4 = std::net::Ipv4Addr::from(net);
            let block = super::Cidr::parse(&format!("{v4}/{prefix}")).ok_or_else(|| TestCaseError::fail("refused"))?;
            for a in [addr, net ^ (1 << flip), net] {
                let ip = std::net::IpAddr::V4(a.into());
                prop_assert_eq!(block.contains(ip), bits_agree(net.into(), a.into(), prefix, 32), "{} in {}/{}", ip, v4, prefix);
            }
            let v6 = std::net::Ipv6Addr::from(net6);
            let block = super::Cidr::parse(&format!("{v6}/{prefix6}")).ok_or_else(|| TestCaseError::fail("refused"))?;
            for a in [net6 ^ (1u128 << (flip * 4)), net6, u128::from(addr)] {
                let ip = std::net::IpAddr::V6(a.into());
                if std::net::Ipv6Addr::from(a).to_ipv4_mapped().is_none() {
                    prop_assert_eq!(block.contains(ip), bits_agree(net6, a, prefix6, 128), "{} in {}/{}", ip, v6, prefix6);
                }
            }
        }
    }

    fn check_refusal(text: &str) -> Result<(), TestCaseError> {
        if let Err(e) = Policy::parse(text) {
            let lines = text.split('\n').count();
            prop_assert!(e.line >= 1 && e.line <= lines, "{:?}: line {}", text, e.line);
            prop_assert!(e.column >= 1, "{:?}", text);
            let suffix = format!("(line {}, column {})", e.line, e.column);
            prop_assert!(e.message.ends_with(&suffix), "{}", e.message);
            prop_assert!(policy_size(&e.message) > suffix.len(), "{}", e.message);
        }
        Ok(())
    }
}
