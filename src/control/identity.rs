//! Identities as IAM keeps them: users, access keys, groups and inline policies.
//!
//! The API (`api/iam.rs`) parses each IAM request into an [`IamCommand`] (anything that changes
//! something) or calls one of the queries here. [`apply`] validates the command as IAM does
//! (names, paths, quotas, policy documents), writes the change to the store in one
//! transaction, then updates the in-memory copy of the identities ([`IamState`]) and publishes a
//! new [`Directory`] through [`Identities::publish`]: the store is written before the client
//! hears "yes", and the published snapshot never shows a change the store does not hold.
//!
//! User and group names are unique regardless of case and are found regardless of case, as in
//! IAM; the stored spelling is the one answered.
//!
//! Where AWS is silent, the choices are written next to the rule.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::auth::directory::{Directory, Identities, Principal};
use crate::control::app::App;
use crate::core::model::{Tag, Timestamp};
use crate::core::policy::Policy;
use crate::store::{IamRows, IamWrite, Store, StoreError};

/// The rows the queries answer with (re-exported: the API reads them through `control`).
pub use crate::store::{IamAccessKeyRow, IamGroupRow, IamPolicyRow, IamUserRow};

/// How many access keys a user may have (IAM's quota `AccessKeysPerUser`).
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;
/// How many groups a user may be in (IAM's quota `GroupsPerUser`).
pub const MAX_GROUPS_PER_USER: usize = 10;
/// How many tags a user may carry.
pub const MAX_TAGS_PER_USER: usize = 50;
/// The aggregate size of a user's inline policies, whitespace not counted (IAM: 2,048).
pub const MAX_USER_POLICY_BYTES: usize = 2048;
/// The aggregate size of a group's inline policies, whitespace not counted (IAM: 5,120).
pub const MAX_GROUP_POLICY_BYTES: usize = 5120;
/// The user [`bootstrap_admin`] creates.
pub const ADMIN_USER: &str = "admin";
/// The inline policy [`bootstrap_admin`] gives it.
pub const ADMIN_POLICY_NAME: &str = "AdministratorAccess";
/// Its document: everything allowed.
pub const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Why an IAM command or query was refused; each variant is one IAM error code.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    /// `NoSuchEntity` (404).
    #[error("{0}")]
    NoSuchEntity(String),
    /// `EntityAlreadyExists` (409).
    #[error("{0}")]
    EntityAlreadyExists(String),
    /// `LimitExceeded` (409).
    #[error("{0}")]
    LimitExceeded(String),
    /// `DeleteConflict` (409).
    #[error("{0}")]
    DeleteConflict(String),
    /// `MalformedPolicyDocument` (400): the policy parser's message, with the line and column.
    #[error("{0}")]
    MalformedPolicyDocument(String),
    /// `ValidationError` (400): "1 validation error detected: Value … at '…' failed to satisfy
    /// constraint: …".
    #[error("{0}")]
    Validation(String),
    /// `InvalidInput` (400).
    #[error("{0}")]
    InvalidInput(String),
    /// The system's random source failed; nothing was changed.
    #[error("spillway could not draw random bytes for a key: {0}")]
    Random(String),
    /// The store failed; nothing was changed.
    #[error("spillway could not access its store: {0}")]
    Store(#[from] StoreError),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, IamError>;

/// A change to the identities.
#[derive(Debug, Clone, PartialEq)]
pub enum IamCommand {
    /// `CreateUser`.
    CreateUser {
        /// `UserName`.
        user_name: String,
        /// `Path` (default `/`).
        path: Option<String>,
        /// `Tags`.
        tags: Vec<Tag>,
    },
    /// `DeleteUser`.
    DeleteUser {
        /// `UserName`.
        user_name: String,
    },
    /// `TagUser`.
    TagUser {
        /// `UserName`.
        user_name: String,
        /// `Tags`.
        tags: Vec<Tag>,
    },
    /// `UntagUser`.
    UntagUser {
        /// `UserName`.
        user_name: String,
        /// `TagKeys`.
        tag_keys: Vec<String>,
    },
    /// `CreateAccessKey`.
    CreateAccessKey {
        /// `UserName` (the API puts the caller's in when the request names none).
        user_name: String,
    },
    /// `DeleteAccessKey`.
    DeleteAccessKey {
        /// `UserName`.
        user_name: String,
        /// `AccessKeyId`.
        access_key_id: String,
    },
    /// `UpdateAccessKey`.
    UpdateAccessKey {
        /// `UserName`.
        user_name: String,
        /// `AccessKeyId`.
        access_key_id: String,
        /// `Status`: `Active` or `Inactive`.
        status: String,
    },
    /// `PutUserPolicy`.
    PutUserPolicy {
        /// `UserName`.
        user_name: String,
        /// `PolicyName`.
        policy_name: String,
        /// `PolicyDocument`.
        document: String,
    },
    /// `DeleteUserPolicy`.
    DeleteUserPolicy {
        /// `UserName`.
        user_name: String,
        /// `PolicyName`.
        policy_name: String,
    },
    /// `CreateGroup`.
    CreateGroup {
        /// `GroupName`.
        group_name: String,
        /// `Path` (default `/`).
        path: Option<String>,
    },
    /// `DeleteGroup`.
    DeleteGroup {
        /// `GroupName`.
        group_name: String,
    },
    /// `AddUserToGroup`.
    AddUserToGroup {
        /// `GroupName`.
        group_name: String,
        /// `UserName`.
        user_name: String,
    },
    /// `RemoveUserFromGroup`.
    RemoveUserFromGroup {
        /// `GroupName`.
        group_name: String,
        /// `UserName`.
        user_name: String,
    },
    /// `PutGroupPolicy`.
    PutGroupPolicy {
        /// `GroupName`.
        group_name: String,
        /// `PolicyName`.
        policy_name: String,
        /// `PolicyDocument`.
        document: String,
    },
    /// `DeleteGroupPolicy`.
    DeleteGroupPolicy {
        /// `GroupName`.
        group_name: String,
        /// `PolicyName`.
        policy_name: String,
    },
}

/// What an accepted command answers with.
#[derive(Debug, Clone, PartialEq)]
pub enum IamOutcome {
    /// The user created.
    User(IamUserRow),
    /// The access key created (its secret included: the only time it is shown).
    AccessKey(IamAccessKeyRow),
    /// The group created.
    Group(IamGroupRow),
    /// Done; nothing to answer.
    Done,
}

/// The in-memory copy of the stored identities: commands check against it under its lock,
/// write the store, then update it; queries read it.
#[derive(Debug, Default)]
pub struct IamState {
    rows: Mutex<IamRows>,
}

impl IamState {
    /// State holding the rows read from the store at start.
    pub fn new(rows: IamRows) -> Self {
        Self { rows: Mutex::new(rows) }
    }

    fn lock(&self) -> MutexGuard<'_, IamRows> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// ------------------------------------------------------------------------------------------
// validation, with IAM's wording
// ------------------------------------------------------------------------------------------

/// Collects the constraint violations of one request into IAM's `ValidationError` message.
#[derive(Debug, Default)]
pub struct Violations(Vec<String>);

impl Violations {
    fn push(&mut self, value: Option<&str>, member: &str, rule: &str) {
        let value = match value {
            Some(v) => format!("'{v}'"),
            None => "null".to_string(),
        };
        self.0.push(format!(
            "Value {value} at '{member}' failed to satisfy constraint: {rule}"
        ));
    }

    fn length(&mut self, value: &str, member: &str, min: usize, max: usize) -> bool {
        let n = value.chars().count();
        if n < min {
            self.push(
                Some(value),
                member,
                &format!("Member must have length greater than or equal to {min}"),
            );
            false
        } else if n > max {
            self.push(
                Some(value),
                member,
                &format!("Member must have length less than or equal to {max}"),
            );
            false
        } else {
            true
        }
    }

    /// An IAM name (`UserName`, `GroupName`, `PolicyName`): `[\w+=,.@-]+` and `max` characters.
    pub fn name(&mut self, value: &str, member: &str, max: usize) {
        if self.length(value, member, 1, max) && !value.chars().all(is_name_char) {
            self.push(
                Some(value),
                member,
                r"Member must satisfy regular expression pattern: [\w+=,.@-]+",
            );
        }
    }

    /// A `Path`: `/` or `/…/` of printable ASCII, up to 512 characters.
    pub fn path(&mut self, value: &str, member: &str) {
        if self.length(value, member, 1, 512) && !is_path(value) {
            self.push(
                Some(value),
                member,
                r"Member must satisfy regular expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
            );
        }
    }

    /// A `PathPrefix`: `/` then printable ASCII, up to 512 characters.
    pub fn path_prefix(&mut self, value: &str, member: &str) {
        if self.length(value, member, 1, 512)
            && !(value.starts_with('/') && value.chars().all(|c| ('\u{21}'..='\u{7f}').contains(&c)))
        {
            self.push(
                Some(value),
                member,
                r"Member must satisfy regular expression pattern: \u002F[\u0021-\u007F]*",
            );
        }
    }

    /// A `PolicyDocument`: 1 to 131,072 characters of tab, newline, carriage return and
    /// U+0020–U+00FF (IAM's pattern; its parser then checks the JSON).
    pub fn document(&mut self, value: &str, member: &str) {
        if self.length(value, member, 1, 131_072)
            && !value
                .chars()
                .all(|c| matches!(c, '\t' | '\n' | '\r') || ('\u{20}'..='\u{ff}').contains(&c))
        {
            self.push(
                Some(value),
                member,
                r"Member must satisfy regular expression pattern: [\u0009\u000A\u000D\u0020-\u00FF]+",
            );
        }
    }

    /// An `AccessKeyId`: 16 to 128 word characters.
    pub fn access_key_id(&mut self, value: &str, member: &str) {
        if self.length(value, member, 16, 128) && !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.push(
                Some(value),
                member,
                r"Member must satisfy regular expression pattern: [\w]+",
            );
        }
    }

    /// An access key `Status`.
    pub fn status(&mut self, value: &str, member: &str) {
        if !matches!(value, "Active" | "Inactive") {
            self.push(
                Some(value),
                member,
                "Member must satisfy enum value set: [Active, Inactive]",
            );
        }
    }

    /// Tags: at most 50, keys 1–128 and values 0–256 characters of letters, digits, spaces
    /// and `_.:/=+-@`.
    pub fn tags(&mut self, tags: &[Tag], member: &str) {
        if tags.len() > MAX_TAGS_PER_USER {
            self.0.push(format!(
                "Value at '{member}' failed to satisfy constraint: Member must have length less than or equal to {MAX_TAGS_PER_USER}"
            ));
        }
        for (i, t) in tags.iter().enumerate() {
            let at = format!("{member}.{}.member.key", i + 1);
            if self.length(&t.key, &at, 1, 128) && !t.key.chars().all(is_tag_char) {
                self.push(
                    Some(&t.key),
                    &at,
                    r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]+",
                );
            }
            let at = format!("{member}.{}.member.value", i + 1);
            if self.length(&t.value, &at, 0, 256) && !t.value.chars().all(is_tag_char) {
                self.push(
                    Some(&t.value),
                    &at,
                    r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]*",
                );
            }
        }
    }

    /// Tag keys (`UntagUser`).
    pub fn tag_keys(&mut self, keys: &[String], member: &str) {
        if keys.len() > MAX_TAGS_PER_USER {
            self.0.push(format!(
                "Value at '{member}' failed to satisfy constraint: Member must have length less than or equal to {MAX_TAGS_PER_USER}"
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            let at = format!("{member}.{}.member", i + 1);
            if self.length(k, &at, 1, 128) && !k.chars().all(is_tag_char) {
                self.push(
                    Some(k),
                    &at,
                    r"Member must satisfy regular expression pattern: [\p{L}\p{Z}\p{N}_.:/=+\-@]+",
                );
            }
        }
    }

    /// `MaxItems`: 1 to 1000.
    pub fn max_items(&mut self, value: Option<i64>, member: &str) {
        if let Some(v) = value {
            if v < 1 {
                self.push(
                    Some(&v.to_string()),
                    member,
                    "Member must have value greater than or equal to 1",
                );
            } else if v > 1000 {
                self.push(
                    Some(&v.to_string()),
                    member,
                    "Member must have value less than or equal to 1000",
                );
            }
        }
    }

    /// `Marker`: 1 to 320 characters of U+0020–U+00FF.
    pub fn marker(&mut self, value: Option<&str>, member: &str) {
        if let Some(v) = value
            && self.length(v, member, 1, 320)
            && !v.chars().all(|c| ('\u{20}'..='\u{ff}').contains(&c))
        {
            self.push(
                Some(v),
                member,
                r"Member must satisfy regular expression pattern: [\u0020-\u00FF]+",
            );
        }
    }

    /// `Ok` when nothing was violated; otherwise IAM's `ValidationError`.
    pub fn finish(self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(IamError::Validation(format!(
                "1 validation error detected: {}",
                self.0[0]
            ))),
            n => Err(IamError::Validation(format!(
                "{n} validation errors detected: {}",
                self.0.join("; ")
            ))),
        }
    }
}

/// `[\w+=,.@-]` with `\w` as ASCII letters, digits and `_` (IAM's names are ASCII).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

fn is_path(p: &str) -> bool {
    p == "/"
        || (p.len() >= 3
            && p.starts_with('/')
            && p.ends_with('/')
            && p.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c)))
}

fn check_name(value: &str, member: &str, max: usize) -> Result<()> {
    let mut v = Violations::default();
    v.name(value, member, max);
    v.finish()
}

/// Characters of a policy document that count against the size quota (IAM does not count
/// white space).
fn policy_size(doc: &str) -> usize {
    doc.chars().filter(|c| !c.is_whitespace()).map(char::len_utf8).sum()
}

// ------------------------------------------------------------------------------------------
// ids and secrets
// ------------------------------------------------------------------------------------------

const UPPER_ALNUM: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `n` characters drawn uniformly from `alphabet` with the operating system's CSPRNG
/// (`getrandom`), by rejection sampling so that no character is likelier than another.
fn random_string(alphabet: &[u8], n: usize) -> Result<String> {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| IamError::Random(e.to_string()))?;
        for &b in &buf {
            if out.len() == n {
                break;
            }
            if (b as usize) < limit {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// An IAM unique id: `prefix` then 16 upper-case letters and digits (`AIDA…`, `AKIA…`, `AGPA…`).
pub fn new_id(prefix: &str) -> Result<String> {
    Ok(format!("{prefix}{}", random_string(UPPER_ALNUM, 16)?))
}

/// A secret access key: 40 characters of the base64 alphabet from the OS CSPRNG (240 bits).
pub fn new_secret() -> Result<String> {
    random_string(SECRET_ALPHABET, 40)
}

// ------------------------------------------------------------------------------------------
// lookups on the in-memory rows
// ------------------------------------------------------------------------------------------

fn no_user(name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The user with name {name} cannot be found."))
}

fn no_group(name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The group with name {name} cannot be found."))
}

/// A new or replaced inline policy of `owner` (a `kind`, `user` or `group`), within IAM's
/// limit on the characters of all its inline policies together.
fn inline_policy(
    existing: &[IamPolicyRow],
    owner: &str,
    kind: &str,
    max: usize,
    name: String,
    document: String,
) -> Result<IamPolicyRow> {
    let others: usize = existing
        .iter()
        .filter(|p| same(&p.owner, owner) && p.name != name)
        .map(|p| policy_size(&p.document))
        .sum();
    if others + policy_size(&document) > max {
        return Err(IamError::LimitExceeded(format!(
            "Maximum policy size of {max} bytes exceeded for {kind} {owner}"
        )));
    }
    Ok(IamPolicyRow {
        owner: owner.to_string(),
        name,
        document,
    })
}

fn find_user<'a>(rows: &'a IamRows, name: &str) -> Result<&'a IamUserRow> {
    rows.users
        .iter()
        .find(|u| u.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| no_user(name))
}

fn find_group<'a>(rows: &'a IamRows, name: &str) -> Result<&'a IamGroupRow> {
    rows.groups
        .iter()
        .find(|g| g.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| no_group(name))
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn find_key<'a>(rows: &'a IamRows, user: &str, id: &str) -> Result<&'a IamAccessKeyRow> {
    rows.access_keys
        .iter()
        .find(|k| k.id == id && same(&k.user_name, user))
        .ok_or_else(|| IamError::NoSuchEntity(format!("The Access Key with id {id} cannot be found.")))
}

fn iam_arn(account: &str, kind: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:{kind}{path}{name}")
}

fn sort_by_name<T>(items: &mut [T], name: impl Fn(&T) -> &str) {
    items.sort_by_key(|t| name(t).to_ascii_lowercase());
}

// ------------------------------------------------------------------------------------------
// commands
// ------------------------------------------------------------------------------------------

/// Applies one IAM command: validates it, writes the store, updates the in-memory copy and
/// publishes a new directory.
pub fn apply(app: &App, cmd: IamCommand) -> Result<IamOutcome> {
    apply_to(
        &app.iam,
        &app.store,
        &app.identities,
        &app.cfg.account_id,
        app.clock.now(),
        cmd,
    )
}

/// [`apply`] on explicit parts (tests, start-up).
pub fn apply_to(
    state: &IamState,
    store: &Store,
    identities: &Identities,
    account: &str,
    now: Timestamp,
    cmd: IamCommand,
) -> Result<IamOutcome> {
    let mut rows = state.lock();
    let (writes, outcome) = plan(&rows, account, now, cmd)?;
    store.iam_write(&writes.iter().map(Change::as_write).collect::<Vec<_>>())?;
    for w in writes {
        w.apply(&mut rows);
    }
    identities.publish(directory(&rows, account));
    Ok(outcome)
}

/// One change, owned: written to the store, then applied to the in-memory rows.
#[derive(Debug, Clone)]
enum Change {
    InsertUser(IamUserRow),
    DeleteUser(String),
    PutUserTags(String, Vec<Tag>),
    DeleteUserTags(String, Vec<String>),
    InsertAccessKey(IamAccessKeyRow),
    DeleteAccessKey(String),
    SetAccessKeyStatus(String, String),
    PutUserPolicy(IamPolicyRow),
    DeleteUserPolicy(String, String),
    InsertGroup(IamGroupRow),
    DeleteGroup(String),
    AddMember(String, String),
    RemoveMember(String, String),
    PutGroupPolicy(IamPolicyRow),
    DeleteGroupPolicy(String, String),
}

impl Change {
    fn as_write(&self) -> IamWrite<'_> {
        match self {
            Change::InsertUser(u) => IamWrite::InsertUser(u),
            Change::DeleteUser(n) => IamWrite::DeleteUser(n),
            Change::PutUserTags(n, t) => IamWrite::PutUserTags(n, t),
            Change::DeleteUserTags(n, k) => IamWrite::DeleteUserTags(n, k),
            Change::InsertAccessKey(k) => IamWrite::InsertAccessKey(k),
            Change::DeleteAccessKey(id) => IamWrite::DeleteAccessKey(id),
            Change::SetAccessKeyStatus(id, s) => IamWrite::SetAccessKeyStatus(id, s),
            Change::PutUserPolicy(p) => IamWrite::PutUserPolicy(p),
            Change::DeleteUserPolicy(u, n) => IamWrite::DeleteUserPolicy(u, n),
            Change::InsertGroup(g) => IamWrite::InsertGroup(g),
            Change::DeleteGroup(n) => IamWrite::DeleteGroup(n),
            Change::AddMember(g, u) => IamWrite::AddMember(g, u),
            Change::RemoveMember(g, u) => IamWrite::RemoveMember(g, u),
            Change::PutGroupPolicy(p) => IamWrite::PutGroupPolicy(p),
            Change::DeleteGroupPolicy(g, n) => IamWrite::DeleteGroupPolicy(g, n),
        }
    }

    /// The same change on the in-memory rows (names are the stored spellings already).
    fn apply(self, rows: &mut IamRows) {
        match self {
            Change::InsertUser(u) => {
                rows.users.push(u);
                sort_by_name(&mut rows.users, |u| &u.name);
            }
            Change::DeleteUser(n) => rows.users.retain(|u| u.name != n),
            Change::PutUserTags(n, tags) => {
                if let Some(u) = rows.users.iter_mut().find(|u| u.name == n) {
                    for t in tags {
                        match u.tags.iter_mut().find(|x| x.key == t.key) {
                            Some(x) => x.value = t.value,
                            None => u.tags.push(t),
                        }
                    }
                }
            }
            Change::DeleteUserTags(n, keys) => {
                if let Some(u) = rows.users.iter_mut().find(|u| u.name == n) {
                    u.tags.retain(|t| !keys.contains(&t.key));
                }
            }
            Change::InsertAccessKey(k) => rows.access_keys.push(k),
            Change::DeleteAccessKey(id) => rows.access_keys.retain(|k| k.id != id),
            Change::SetAccessKeyStatus(id, s) => {
                if let Some(k) = rows.access_keys.iter_mut().find(|k| k.id == id) {
                    k.status = s;
                }
            }
            Change::PutUserPolicy(p) => put_policy(&mut rows.user_policies, p),
            Change::DeleteUserPolicy(u, n) => rows.user_policies.retain(|p| !(p.owner == u && p.name == n)),
            Change::InsertGroup(g) => {
                rows.groups.push(g);
                sort_by_name(&mut rows.groups, |g| &g.name);
            }
            Change::DeleteGroup(n) => rows.groups.retain(|g| g.name != n),
            Change::AddMember(g, u) => {
                if !rows.members.iter().any(|(mg, mu)| *mg == g && *mu == u) {
                    rows.members.push((g, u));
                }
            }
            Change::RemoveMember(g, u) => rows.members.retain(|(mg, mu)| !(*mg == g && *mu == u)),
            Change::PutGroupPolicy(p) => put_policy(&mut rows.group_policies, p),
            Change::DeleteGroupPolicy(g, n) => rows.group_policies.retain(|p| !(p.owner == g && p.name == n)),
        }
    }
}

fn put_policy(list: &mut Vec<IamPolicyRow>, p: IamPolicyRow) {
    match list.iter_mut().find(|x| x.owner == p.owner && x.name == p.name) {
        Some(x) => x.document = p.document,
        None => list.push(p),
    }
}

fn check_document(document: &str) -> Result<()> {
    let mut v = Violations::default();
    v.document(document, "policyDocument");
    v.finish()?;
    Policy::parse(document).map_err(|e| IamError::MalformedPolicyDocument(e.message))?;
    Ok(())
}

/// The changes a command makes and what it answers, or why it is refused; reads only `rows`.
fn plan(rows: &IamRows, account: &str, now: Timestamp, cmd: IamCommand) -> Result<(Vec<Change>, IamOutcome)> {
    Ok(match cmd {
        IamCommand::CreateUser { user_name, path, tags } => {
            let mut v = Violations::default();
            v.name(&user_name, "userName", 64);
            if let Some(p) = &path {
                v.path(p, "path");
            }
            v.tags(&tags, "tags");
            v.finish()?;
            if rows.users.iter().any(|u| same(&u.name, &user_name)) {
                return Err(IamError::EntityAlreadyExists(format!(
                    "User with name {user_name} already exists."
                )));
            }
            let path = path.unwrap_or_else(|| "/".into());
            let user = IamUserRow {
                arn: iam_arn(account, "user", &path, &user_name),
                user_id: unique_id(rows, "AIDA")?,
                name: user_name,
                path,
                created: now,
                tags: dedup_tags(tags),
            };
            (vec![Change::InsertUser(user.clone())], IamOutcome::User(user))
        }
        IamCommand::DeleteUser { user_name } => {
            check_name(&user_name, "userName", 128)?;
            let u = find_user(rows, &user_name)?;
            if rows.user_policies.iter().any(|p| same(&p.owner, &u.name)) {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must delete policies first.".into(),
                ));
            }
            if rows.access_keys.iter().any(|k| same(&k.user_name, &u.name)) {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must delete access keys first.".into(),
                ));
            }
            if rows.members.iter().any(|(_, m)| same(m, &u.name)) {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must remove users from group first.".into(),
                ));
            }
            (vec![Change::DeleteUser(u.name.clone())], IamOutcome::Done)
        }
        IamCommand::TagUser { user_name, tags } => {
            let mut v = Violations::default();
            v.name(&user_name, "userName", 128);
            v.tags(&tags, "tags");
            v.finish()?;
            let u = find_user(rows, &user_name)?;
            let tags = dedup_tags(tags);
            let added = tags.iter().filter(|t| !u.tags.iter().any(|x| x.key == t.key)).count();
            if u.tags.len() + added > MAX_TAGS_PER_USER {
                return Err(IamError::LimitExceeded(format!(
                    "Cannot exceed quota for TagsPerUser: {MAX_TAGS_PER_USER}"
                )));
            }
            (vec![Change::PutUserTags(u.name.clone(), tags)], IamOutcome::Done)
        }
        IamCommand::UntagUser { user_name, tag_keys } => {
            let mut v = Violations::default();
            v.name(&user_name, "userName", 128);
            v.tag_keys(&tag_keys, "tagKeys");
            v.finish()?;
            let u = find_user(rows, &user_name)?;
            (vec![Change::DeleteUserTags(u.name.clone(), tag_keys)], IamOutcome::Done)
        }
        IamCommand::CreateAccessKey { user_name } => {
            check_name(&user_name, "userName", 128)?;
            let u = find_user(rows, &user_name)?;
            if rows.access_keys.iter().filter(|k| same(&k.user_name, &u.name)).count() >= MAX_ACCESS_KEYS_PER_USER {
                return Err(IamError::LimitExceeded(format!(
                    "Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS_PER_USER}"
                )));
            }
            let key = IamAccessKeyRow {
                id: loop {
                    let id = new_id("AKIA")?;
                    if !rows.access_keys.iter().any(|k| k.id == id) {
                        break id;
                    }
                },
                user_name: u.name.clone(),
                secret: new_secret()?,
                status: "Active".into(),
                created: now,
                last_used: None,
            };
            (vec![Change::InsertAccessKey(key.clone())], IamOutcome::AccessKey(key))
        }
        IamCommand::DeleteAccessKey {
            user_name,
            access_key_id,
        } => {
            let mut v = Violations::default();
            v.name(&user_name, "userName", 128);
            v.access_key_id(&access_key_id, "accessKeyId");
            v.finish()?;
            let u = find_user(rows, &user_name)?;
            let k = find_key(rows, &u.name, &access_key_id)?;
            (vec![Change::DeleteAccessKey(k.id.clone())], IamOutcome::Done)
        }
        IamCommand::UpdateAccessKey {
            user_name,
            access_key_id,
            status,
        } => {
            let mut v = Violations::default();
            v.name(&user_name, "userName", 128);
            v.access_key_id(&access_key_id, "accessKeyId");
            v.status(&status, "status");
            v.finish()?;
            let u = find_user(rows, &user_name)?;
            let k = find_key(rows, &u.name, &access_key_id)?;
            (vec![Change::SetAccessKeyStatus(k.id.clone(), status)], IamOutcome::Done)
        }
        IamCommand::PutUserPolicy {
            user_name,
            policy_name,
            document,
        } => {
            let mut v = Violations::default();
            v.name(&user_name, "userName", 128);
            v.name(&policy_name, "policyName", 128);
            v.finish()?;
            check_document(&document)?;
            let u = find_user(rows, &user_name)?;
            let p = inline_policy(
                &rows.user_policies,
                &u.name,
                "user",
                MAX_USER_POLICY_BYTES,
                policy_name,
                document,
            )?;
            (vec![Change::PutUserPolicy(p)], IamOutcome::Done)
        }
        IamCommand::DeleteUserPolicy { user_name, policy_name } => {
            let mut v = Violations::default();
            v.name(&user_name, "userName", 128);
            v.name(&policy_name, "policyName", 128);
            v.finish()?;
            let p = find_user_policy(rows, &user_name, &policy_name)?;
            (
                vec![Change::DeleteUserPolicy(p.owner.clone(), p.name.clone())],
                IamOutcome::Done,
            )
        }
        IamCommand::CreateGroup { group_name, path } => {
            let mut v = Violations::default();
            v.name(&group_name, "groupName", 128);
            if let Some(p) = &path {
                v.path(p, "path");
            }
            v.finish()?;
            if rows.groups.iter().any(|g| same(&g.name, &group_name)) {
                return Err(IamError::EntityAlreadyExists(format!(
                    "Group with name {group_name} already exists."
                )));
            }
            let path = path.unwrap_or_else(|| "/".into());
            let group = IamGroupRow {
                arn: iam_arn(account, "group", &path, &group_name),
                group_id: unique_id(rows, "AGPA")?,
                name: group_name,
                path,
                created: now,
            };
            (vec![Change::InsertGroup(group.clone())], IamOutcome::Group(group))
        }
        IamCommand::DeleteGroup { group_name } => {
            check_name(&group_name, "groupName", 128)?;
            let g = find_group(rows, &group_name)?;
            if rows.members.iter().any(|(mg, _)| same(mg, &g.name)) {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must remove users from group first.".into(),
                ));
            }
            if rows.group_policies.iter().any(|p| same(&p.owner, &g.name)) {
                return Err(IamError::DeleteConflict(
                    "Cannot delete entity, must delete policies first.".into(),
                ));
            }
            (vec![Change::DeleteGroup(g.name.clone())], IamOutcome::Done)
        }
        IamCommand::AddUserToGroup { group_name, user_name } => {
            let mut v = Violations::default();
            v.name(&group_name, "groupName", 128);
            v.name(&user_name, "userName", 128);
            v.finish()?;
            let g = find_group(rows, &group_name)?;
            let u = find_user(rows, &user_name)?;
            let groups = rows.members.iter().filter(|(_, m)| same(m, &u.name));
            if groups.clone().any(|(mg, _)| same(mg, &g.name)) {
                // Already a member: IAM answers success and changes nothing.
                return Ok((vec![], IamOutcome::Done));
            }
            if groups.count() >= MAX_GROUPS_PER_USER {
                return Err(IamError::LimitExceeded(format!(
                    "Cannot exceed quota for GroupsPerUser: {MAX_GROUPS_PER_USER}"
                )));
            }
            (
                vec![Change::AddMember(g.name.clone(), u.name.clone())],
                IamOutcome::Done,
            )
        }
        IamCommand::RemoveUserFromGroup { group_name, user_name } => {
            let mut v = Violations::default();
            v.name(&group_name, "groupName", 128);
            v.name(&user_name, "userName", 128);
            v.finish()?;
            let g = find_group(rows, &group_name)?;
            let u = find_user(rows, &user_name)?;
            if !rows
                .members
                .iter()
                .any(|(mg, mu)| same(mg, &g.name) && same(mu, &u.name))
            {
                // AWS documents no wording for this; NoSuchEntity naming both is spillway's.
                return Err(IamError::NoSuchEntity(format!(
                    "The user with name {} is not in the group with name {}.",
                    u.name, g.name
                )));
            }
            (
                vec![Change::RemoveMember(g.name.clone(), u.name.clone())],
                IamOutcome::Done,
            )
        }
        IamCommand::PutGroupPolicy {
            group_name,
            policy_name,
            document,
        } => {
            let mut v = Violations::default();
            v.name(&group_name, "groupName", 128);
            v.name(&policy_name, "policyName", 128);
            v.finish()?;
            check_document(&document)?;
            let g = find_group(rows, &group_name)?;
            let p = inline_policy(
                &rows.group_policies,
                &g.name,
                "group",
                MAX_GROUP_POLICY_BYTES,
                policy_name,
                document,
            )?;
            (vec![Change::PutGroupPolicy(p)], IamOutcome::Done)
        }
        IamCommand::DeleteGroupPolicy {
            group_name,
            policy_name,
        } => {
            let mut v = Violations::default();
            v.name(&group_name, "groupName", 128);
            v.name(&policy_name, "policyName", 128);
            v.finish()?;
            let p = find_group_policy(rows, &group_name, &policy_name)?;
            (
                vec![Change::DeleteGroupPolicy(p.owner.clone(), p.name.clone())],
                IamOutcome::Done,
            )
        }
    })
}

/// A later tag of the same key replaces an earlier one, keeping the first one's place.
fn dedup_tags(tags: Vec<Tag>) -> Vec<Tag> {
    let mut out: Vec<Tag> = Vec::with_capacity(tags.len());
    for t in tags {
        match out.iter_mut().find(|x| x.key == t.key) {
            Some(x) => x.value = t.value,
            None => out.push(t),
        }
    }
    out
}

fn unique_id(rows: &IamRows, prefix: &str) -> Result<String> {
    loop {
        let id = new_id(prefix)?;
        if !rows.users.iter().any(|u| u.user_id == id) && !rows.groups.iter().any(|g| g.group_id == id) {
            return Ok(id);
        }
    }
}

fn find_user_policy<'a>(rows: &'a IamRows, user: &str, policy: &str) -> Result<&'a IamPolicyRow> {
    let u = find_user(rows, user)?;
    rows.user_policies
        .iter()
        .find(|p| same(&p.owner, &u.name) && p.name == policy)
        .ok_or_else(|| IamError::NoSuchEntity(format!("The user policy with name {policy} cannot be found.")))
}

fn find_group_policy<'a>(rows: &'a IamRows, group: &str, policy: &str) -> Result<&'a IamPolicyRow> {
    let g = find_group(rows, group)?;
    rows.group_policies
        .iter()
        .find(|p| same(&p.owner, &g.name) && p.name == policy)
        .ok_or_else(|| IamError::NoSuchEntity(format!("The group policy with name {policy} cannot be found.")))
}

/// On a server without users: creates user [`ADMIN_USER`] with the inline policy
/// [`ADMIN_POLICY_NAME`] (everything allowed) and one access key, in one transaction, and
/// returns `(access key id, secret)` for the integrator to hand to the operator. `None` when any
/// user exists already (the operator has the key, or chose other identities).
pub fn bootstrap_admin(app: &App) -> Result<Option<(String, String)>> {
    bootstrap_admin_to(
        &app.iam,
        &app.store,
        &app.identities,
        &app.cfg.account_id,
        app.clock.now(),
    )
}

/// [`bootstrap_admin`] on explicit parts.
pub fn bootstrap_admin_to(
    state: &IamState,
    store: &Store,
    identities: &Identities,
    account: &str,
    now: Timestamp,
) -> Result<Option<(String, String)>> {
    let mut rows = state.lock();
    if !rows.users.is_empty() {
        return Ok(None);
    }
    let mut scratch = rows.clone();
    let mut changes = vec![];
    let mut step = |scratch: &mut IamRows, cmd| -> Result<IamOutcome> {
        let (c, outcome) = plan(scratch, account, now, cmd)?;
        for ch in &c {
            ch.clone().apply(scratch);
        }
        changes.extend(c);
        Ok(outcome)
    };
    step(
        &mut scratch,
        IamCommand::CreateUser {
            user_name: ADMIN_USER.into(),
            path: None,
            tags: vec![],
        },
    )?;
    step(
        &mut scratch,
        IamCommand::PutUserPolicy {
            user_name: ADMIN_USER.into(),
            policy_name: ADMIN_POLICY_NAME.into(),
            document: ADMIN_POLICY.into(),
        },
    )?;
    let IamOutcome::AccessKey(key) = step(
        &mut scratch,
        IamCommand::CreateAccessKey {
            user_name: ADMIN_USER.into(),
        },
    )?
    else {
        unreachable!("CreateAccessKey answers with the key");
    };
    store.iam_write(&changes.iter().map(Change::as_write).collect::<Vec<_>>())?;
    *rows = scratch;
    identities.publish(directory(&rows, account));
    Ok(Some((key.id, key.secret)))
}

// ------------------------------------------------------------------------------------------
// the directory
// ------------------------------------------------------------------------------------------

/// Builds the directory of every access key from the rows: each key's principal carries its
/// user's inline policies and those of the user's groups, parsed.
///
/// A stored document that no longer parses (a stricter parser after an upgrade) fails closed:
/// every key of the users it applies to is published inactive, and the error is logged, since
/// dropping only that policy could drop a `Deny`.
pub fn directory(rows: &IamRows, account: &str) -> Directory {
    let mut principals = vec![];
    for u in &rows.users {
        let groups: Vec<&str> = rows
            .members
            .iter()
            .filter(|(_, m)| same(m, &u.name))
            .map(|(g, _)| g.as_str())
            .collect();
        let docs = rows.user_policies.iter().filter(|p| same(&p.owner, &u.name)).chain(
            rows.group_policies
                .iter()
                .filter(|p| groups.iter().any(|g| same(g, &p.owner))),
        );
        let mut policies = vec![];
        let mut broken = false;
        for p in docs {
            match Policy::parse(&p.document) {
                Ok(policy) => policies.push(Arc::new(policy)),
                Err(e) => {
                    tracing::error!(user = %u.name, policy = %p.name, owner = %p.owner, error = %e,
                        "a stored policy does not parse; the user's access keys are treated as inactive");
                    broken = true;
                }
            }
        }
        for k in rows.access_keys.iter().filter(|k| same(&k.user_name, &u.name)) {
            principals.push(Principal {
                user_name: u.name.clone(),
                user_id: u.user_id.clone(),
                arn: u.arn.clone(),
                account_id: account.to_string(),
                access_key_id: k.id.clone(),
                secret_access_key: k.secret.clone(),
                active: k.status == "Active" && !broken,
                policies: policies.clone(),
                tags: u.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect(),
            });
        }
    }
    Directory::new(principals)
}

// ------------------------------------------------------------------------------------------
// queries
// ------------------------------------------------------------------------------------------

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The `Marker` of the next page; `None` on the last (`IsTruncated` false).
    pub marker: Option<String>,
}

/// Paging as IAM does: `MaxItems` (1–1000, default 100) items from `Marker` on. The marker is
/// the position of the next item, as a decimal number: opaque to clients, as IAM's are. A
/// marker this server did not hand out is `InvalidInput` naming it (AWS does not document the
/// case).
pub fn page<T>(items: Vec<T>, marker: Option<&str>, max_items: Option<i64>) -> Result<Page<T>> {
    let mut v = Violations::default();
    v.marker(marker, "marker");
    v.max_items(max_items, "maxItems");
    v.finish()?;
    let start = match marker {
        None => 0,
        Some(m) => m.parse::<usize>().ok().filter(|&s| s <= items.len()).ok_or_else(|| {
            IamError::InvalidInput(format!("Invalid Marker: {m} is not a marker this server issued."))
        })?,
    };
    let max = max_items.unwrap_or(100) as usize;
    let end = (start + max).min(items.len());
    let marker = (end < items.len()).then(|| end.to_string());
    let items = items.into_iter().skip(start).take(end - start).collect();
    Ok(Page { items, marker })
}

/// The user an access key belongs to, and the key (`GetAccessKeyLastUsed`).
pub fn access_key_owner(app: &App, access_key_id: &str) -> Result<(IamUserRow, IamAccessKeyRow)> {
    let rows = app.iam.lock();
    let key =
        rows.access_keys.iter().find(|k| k.id == access_key_id).ok_or_else(|| {
            IamError::NoSuchEntity(format!("The Access Key with id {access_key_id} cannot be found."))
        })?;
    Ok((find_user(&rows, &key.user_name)?.clone(), key.clone()))
}

/// `GetUser`.
pub fn user(app: &App, name: &str) -> Result<IamUserRow> {
    check_name(name, "userName", 128)?;
    Ok(find_user(&app.iam.lock(), name)?.clone())
}

/// `ListUsers`: users whose path starts with `path_prefix`, by name.
pub fn users(app: &App, path_prefix: Option<&str>) -> Result<Vec<IamUserRow>> {
    if let Some(p) = path_prefix {
        let mut v = Violations::default();
        v.path_prefix(p, "pathPrefix");
        v.finish()?;
    }
    let rows = app.iam.lock();
    Ok(rows
        .users
        .iter()
        .filter(|u| path_prefix.is_none_or(|p| u.path.starts_with(p)))
        .cloned()
        .collect())
}

/// `ListAccessKeys`: a user's keys, oldest first (secrets included: the API never shows them).
pub fn access_keys(app: &App, user: &str) -> Result<Vec<IamAccessKeyRow>> {
    check_name(user, "userName", 128)?;
    let rows = app.iam.lock();
    let u = find_user(&rows, user)?;
    Ok(rows
        .access_keys
        .iter()
        .filter(|k| same(&k.user_name, &u.name))
        .cloned()
        .collect())
}

/// `GetUserPolicy`.
pub fn user_policy(app: &App, user: &str, policy: &str) -> Result<IamPolicyRow> {
    let mut v = Violations::default();
    v.name(user, "userName", 128);
    v.name(policy, "policyName", 128);
    v.finish()?;
    Ok(find_user_policy(&app.iam.lock(), user, policy)?.clone())
}

/// `ListUserPolicies`: the names of a user's inline policies, in name order.
pub fn user_policies(app: &App, user: &str) -> Result<Vec<String>> {
    check_name(user, "userName", 128)?;
    let rows = app.iam.lock();
    let u = find_user(&rows, user)?;
    let mut names: Vec<String> = rows
        .user_policies
        .iter()
        .filter(|p| same(&p.owner, &u.name))
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    Ok(names)
}

/// `GetGroup`: the group and its users, in the order they were added.
pub fn group(app: &App, name: &str) -> Result<(IamGroupRow, Vec<IamUserRow>)> {
    check_name(name, "groupName", 128)?;
    let rows = app.iam.lock();
    let g = find_group(&rows, name)?;
    let users = rows
        .members
        .iter()
        .filter(|(mg, _)| same(mg, &g.name))
        .filter_map(|(_, mu)| rows.users.iter().find(|u| same(&u.name, mu)).cloned())
        .collect();
    Ok((g.clone(), users))
}

/// `ListGroupsForUser`: the user's groups, in the order it joined them.
pub fn groups_for_user(app: &App, user: &str) -> Result<Vec<IamGroupRow>> {
    check_name(user, "userName", 128)?;
    let rows = app.iam.lock();
    let u = find_user(&rows, user)?;
    Ok(rows
        .members
        .iter()
        .filter(|(_, mu)| same(mu, &u.name))
        .filter_map(|(mg, _)| rows.groups.iter().find(|g| same(&g.name, mg)).cloned())
        .collect())
}

/// `GetGroupPolicy`.
pub fn group_policy(app: &App, group: &str, policy: &str) -> Result<IamPolicyRow> {
    let mut v = Violations::default();
    v.name(group, "groupName", 128);
    v.name(policy, "policyName", 128);
    v.finish()?;
    Ok(find_group_policy(&app.iam.lock(), group, policy)?.clone())
}

/// `ListGroupPolicies`: the names of a group's inline policies, in name order.
pub fn group_policies(app: &App, group: &str) -> Result<Vec<String>> {
    check_name(group, "groupName", 128)?;
    let rows = app.iam.lock();
    let g = find_group(&rows, group)?;
    let mut names: Vec<String> = rows
        .group_policies
        .iter()
        .filter(|p| same(&p.owner, &g.name))
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "111122223333";
    const ALLOW_ALL: &str = ADMIN_POLICY;

    struct World {
        state: IamState,
        store: Store,
        ids: Identities,
    }

    impl World {
        fn new() -> Self {
            Self::on(Store::in_memory().unwrap())
        }

        fn on(store: Store) -> Self {
            let rows = store.iam_rows().unwrap();
            let ids = Identities::new(directory(&rows, ACCOUNT));
            Self {
                state: IamState::new(rows),
                store,
                ids,
            }
        }

        fn run(&self, cmd: IamCommand) -> Result<IamOutcome> {
            apply_to(&self.state, &self.store, &self.ids, ACCOUNT, 1_700_000_000.0, cmd)
        }

        fn user(&self, name: &str) {
            self.run(IamCommand::CreateUser {
                user_name: name.into(),
                path: None,
                tags: vec![],
            })
            .unwrap();
        }

        fn key(&self, user: &str) -> IamAccessKeyRow {
            match self
                .run(IamCommand::CreateAccessKey { user_name: user.into() })
                .unwrap()
            {
                IamOutcome::AccessKey(k) => k,
                o => panic!("{o:?}"),
            }
        }

        fn rows(&self) -> IamRows {
            self.state.lock().clone()
        }
    }

    fn message(r: Result<IamOutcome>) -> (String, String) {
        let e = r.unwrap_err();
        let kind = format!("{e:?}");
        (kind.split('(').next().unwrap().to_string(), e.to_string())
    }

    #[test]
    fn names_paths_and_documents_are_checked_with_iams_wording() {
        let mut v = Violations::default();
        v.name("bad name", "userName", 64);
        assert_eq!(
            v.finish().unwrap_err().to_string(),
            r"1 validation error detected: Value 'bad name' at 'userName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\w+=,.@-]+"
        );
        let mut v = Violations::default();
        v.name(&"a".repeat(65), "userName", 64);
        v.path("team", "path");
        let e = v.finish().unwrap_err().to_string();
        assert!(e.starts_with("2 validation errors detected: "), "{e}");
        assert!(e.contains("Member must have length less than or equal to 64"), "{e}");
        assert!(e.contains("at 'path'"), "{e}");
        for ok in ["a", "A_b+c=d,e.f@g-h", &"x".repeat(64)] {
            let mut v = Violations::default();
            v.name(ok, "userName", 64);
            assert!(v.finish().is_ok(), "{ok}");
        }
        for (path, ok) in [
            ("/", true),
            ("/a/", true),
            ("/a/b/", true),
            ("//", false),
            ("/a", false),
            ("a/", false),
            ("/a b/", false),
        ] {
            assert_eq!(is_path(path), ok, "{path}");
        }
        let mut v = Violations::default();
        v.document("\u{1}", "policyDocument");
        assert!(v.finish().is_err());
        let mut v = Violations::default();
        v.status("active", "status");
        assert!(v.finish().unwrap_err().to_string().contains("[Active, Inactive]"));
        let mut v = Violations::default();
        v.max_items(Some(0), "maxItems");
        v.max_items(Some(1001), "maxItems");
        assert!(v.finish().unwrap_err().to_string().starts_with("2 validation errors"));
        let mut v = Violations::default();
        v.tags(
            &[Tag {
                key: "".into(),
                value: "v".into(),
            }],
            "tags",
        );
        assert!(v.finish().unwrap_err().to_string().contains("'tags.1.member.key'"));
    }

    #[test]
    fn ids_and_secrets_come_from_the_right_alphabets() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let id = new_id("AKIA").unwrap();
            assert_eq!(id.len(), 20);
            assert!(id[4..].bytes().all(|b| UPPER_ALNUM.contains(&b)), "{id}");
            let s = new_secret().unwrap();
            assert_eq!(s.len(), 40);
            assert!(s.bytes().all(|b| SECRET_ALPHABET.contains(&b)), "{s}");
            assert!(seen.insert(s), "a secret repeated");
        }
        // Every character of the alphabet turns up (no modulo bias cuts any off).
        let all: String = (0..50).map(|_| new_id("").unwrap()).collect();
        assert!(UPPER_ALNUM.iter().all(|c| all.as_bytes().contains(c)));
    }

    #[test]
    fn users_are_unique_regardless_of_case_and_found_regardless_of_case() {
        let w = World::new();
        w.user("Bob");
        let (kind, msg) = message(w.run(IamCommand::CreateUser {
            user_name: "bob".into(),
            path: None,
            tags: vec![],
        }));
        assert_eq!(kind, "EntityAlreadyExists");
        assert_eq!(msg, "User with name bob already exists.");
        let k = w.key("BOB");
        assert_eq!(k.user_name, "Bob");
        assert!(k.id.starts_with("AKIA") && k.secret.len() == 40);
        let (kind, msg) = message(w.run(IamCommand::DeleteUser {
            user_name: "nobody".into(),
        }));
        assert_eq!(
            (kind.as_str(), msg.as_str()),
            ("NoSuchEntity", "The user with name nobody cannot be found.")
        );
    }

    #[test]
    fn a_user_has_at_most_two_access_keys() {
        let w = World::new();
        w.user("u");
        w.key("u");
        w.key("u");
        let (kind, msg) = message(w.run(IamCommand::CreateAccessKey { user_name: "u".into() }));
        assert_eq!(kind, "LimitExceeded");
        assert_eq!(msg, "Cannot exceed quota for AccessKeysPerUser: 2");
        assert_eq!(w.rows().access_keys.len(), 2);
    }

    #[test]
    fn deleting_a_user_with_dependents_is_a_conflict_until_they_are_gone() {
        let w = World::new();
        w.user("u");
        w.run(IamCommand::CreateGroup {
            group_name: "g".into(),
            path: None,
        })
        .unwrap();
        w.run(IamCommand::PutUserPolicy {
            user_name: "u".into(),
            policy_name: "p".into(),
            document: ALLOW_ALL.into(),
        })
        .unwrap();
        let k = w.key("u");
        w.run(IamCommand::AddUserToGroup {
            group_name: "g".into(),
            user_name: "u".into(),
        })
        .unwrap();
        let del = || w.run(IamCommand::DeleteUser { user_name: "u".into() });
        assert_eq!(message(del()).1, "Cannot delete entity, must delete policies first.");
        w.run(IamCommand::DeleteUserPolicy {
            user_name: "u".into(),
            policy_name: "p".into(),
        })
        .unwrap();
        assert_eq!(message(del()).1, "Cannot delete entity, must delete access keys first.");
        w.run(IamCommand::DeleteAccessKey {
            user_name: "u".into(),
            access_key_id: k.id,
        })
        .unwrap();
        assert_eq!(
            message(del()).1,
            "Cannot delete entity, must remove users from group first."
        );
        let (kind, _) = message(w.run(IamCommand::DeleteGroup { group_name: "g".into() }));
        assert_eq!(kind, "DeleteConflict");
        w.run(IamCommand::RemoveUserFromGroup {
            group_name: "g".into(),
            user_name: "u".into(),
        })
        .unwrap();
        assert_eq!(del().unwrap(), IamOutcome::Done);
        w.run(IamCommand::DeleteGroup { group_name: "g".into() }).unwrap();
        assert_eq!(w.rows(), IamRows::default());
        assert_eq!(w.store.iam_rows().unwrap(), IamRows::default());
    }

    #[test]
    fn malformed_policies_are_refused_with_the_parsers_line() {
        let w = World::new();
        w.user("u");
        let (kind, msg) = message(w.run(IamCommand::PutUserPolicy {
            user_name: "u".into(),
            policy_name: "p".into(),
            document: "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n}".into(),
        }));
        assert_eq!(kind, "MalformedPolicyDocument");
        assert!(msg.contains("line 4"), "{msg}");
        assert!(w.rows().user_policies.is_empty());
    }

    #[test]
    fn inline_policies_count_against_the_users_size_quota() {
        let w = World::new();
        w.user("u");
        let big = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"*","Resource":"arn:aws:s3:::{}"}}]}}"#,
            "x".repeat(1500)
        );
        let put = |name: &str| {
            w.run(IamCommand::PutUserPolicy {
                user_name: "u".into(),
                policy_name: name.into(),
                document: big.clone(),
            })
        };
        put("one").unwrap();
        put("one").unwrap(); // replacing a policy does not count it twice
        let (kind, msg) = message(put("two"));
        assert_eq!(kind, "LimitExceeded");
        assert_eq!(msg, "Maximum policy size of 2048 bytes exceeded for user u");
    }

    #[test]
    fn the_directory_follows_every_change_and_carries_group_policies() {
        let w = World::new();
        w.user("u");
        let k = w.key("u");
        let p = w.ids.current().principal(&k.id).unwrap();
        assert!(p.active);
        assert_eq!(p.secret_access_key, k.secret);
        assert_eq!(p.arn, "arn:aws:iam::111122223333:user/u");
        assert!(p.policies.is_empty());
        w.run(IamCommand::CreateGroup {
            group_name: "g".into(),
            path: Some("/teams/".into()),
        })
        .unwrap();
        w.run(IamCommand::PutGroupPolicy {
            group_name: "g".into(),
            policy_name: "gp".into(),
            document: ALLOW_ALL.into(),
        })
        .unwrap();
        w.run(IamCommand::AddUserToGroup {
            group_name: "G".into(),
            user_name: "U".into(),
        })
        .unwrap();
        w.run(IamCommand::PutUserPolicy {
            user_name: "u".into(),
            policy_name: "up".into(),
            document: ALLOW_ALL.into(),
        })
        .unwrap();
        assert_eq!(w.ids.current().principal(&k.id).unwrap().policies.len(), 2);
        w.run(IamCommand::UpdateAccessKey {
            user_name: "u".into(),
            access_key_id: k.id.clone(),
            status: "Inactive".into(),
        })
        .unwrap();
        assert!(!w.ids.current().principal(&k.id).unwrap().active);
        w.run(IamCommand::TagUser {
            user_name: "u".into(),
            tags: vec![Tag {
                key: "team".into(),
                value: "a".into(),
            }],
        })
        .unwrap();
        assert_eq!(
            w.ids.current().principal(&k.id).unwrap().tags,
            vec![("team".to_string(), "a".to_string())]
        );
        w.run(IamCommand::DeleteAccessKey {
            user_name: "u".into(),
            access_key_id: k.id.clone(),
        })
        .unwrap();
        assert!(w.ids.current().principal(&k.id).is_none());
    }

    #[test]
    fn a_stored_policy_that_no_longer_parses_makes_the_users_keys_inactive() {
        let mut rows = IamRows::default();
        rows.users.push(IamUserRow {
            name: "u".into(),
            user_id: "AIDA0000000000000000".into(),
            path: "/".into(),
            arn: "arn:aws:iam::1:user/u".into(),
            created: 0.0,
            tags: vec![],
        });
        rows.access_keys.push(IamAccessKeyRow {
            id: "AKIA0000000000000000".into(),
            user_name: "u".into(),
            secret: "s".into(),
            status: "Active".into(),
            created: 0.0,
            last_used: None,
        });
        assert!(directory(&rows, "1").principal("AKIA0000000000000000").unwrap().active);
        rows.user_policies.push(IamPolicyRow {
            owner: "u".into(),
            name: "p".into(),
            document: "not json".into(),
        });
        assert!(!directory(&rows, "1").principal("AKIA0000000000000000").unwrap().active);
    }

    #[test]
    fn changes_survive_a_reopened_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let key = {
            let w = World::on(Store::open(&path).unwrap());
            w.run(IamCommand::CreateUser {
                user_name: "u".into(),
                path: Some("/a/".into()),
                tags: vec![Tag {
                    key: "k".into(),
                    value: "v".into(),
                }],
            })
            .unwrap();
            w.run(IamCommand::CreateGroup {
                group_name: "g".into(),
                path: None,
            })
            .unwrap();
            w.run(IamCommand::AddUserToGroup {
                group_name: "g".into(),
                user_name: "u".into(),
            })
            .unwrap();
            w.run(IamCommand::PutGroupPolicy {
                group_name: "g".into(),
                policy_name: "p".into(),
                document: ALLOW_ALL.into(),
            })
            .unwrap();
            let k = w.key("u");
            assert_eq!(w.rows(), w.store.iam_rows().unwrap(), "memory and store agree");
            k
        };
        let w = World::on(Store::open(&path).unwrap());
        let rows = w.rows();
        assert_eq!(rows.users[0].arn, "arn:aws:iam::111122223333:user/a/u");
        assert_eq!(rows.users[0].tags[0].value, "v");
        assert_eq!(rows.members, vec![("g".to_string(), "u".to_string())]);
        let p = w.ids.current().principal(&key.id).unwrap();
        assert_eq!(p.secret_access_key, key.secret);
        assert_eq!(p.policies.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the store holds secrets");
    }

    #[test]
    fn bootstrap_creates_one_admin_once() {
        let w = World::new();
        let (id, secret) = bootstrap_admin_to(&w.state, &w.store, &w.ids, ACCOUNT, 5.0)
            .unwrap()
            .unwrap();
        let p = w.ids.current().principal(&id).unwrap();
        assert_eq!(
            (p.user_name.as_str(), p.secret_access_key.as_str()),
            (ADMIN_USER, secret.as_str())
        );
        assert_eq!(p.policies.len(), 1);
        let rows = w.store.iam_rows().unwrap();
        assert_eq!(rows.user_policies[0].name, ADMIN_POLICY_NAME);
        assert_eq!(rows.user_policies[0].document, ADMIN_POLICY);
        assert_eq!(rows, w.rows());
        assert!(
            bootstrap_admin_to(&w.state, &w.store, &w.ids, ACCOUNT, 6.0)
                .unwrap()
                .is_none()
        );
        assert_eq!(w.store.iam_rows().unwrap().access_keys.len(), 1);
    }

    #[test]
    fn pages_follow_markers_to_the_end() {
        let items: Vec<u32> = (0..7).collect();
        let p1 = page(items.clone(), None, Some(3)).unwrap();
        assert_eq!((p1.items.clone(), p1.marker.as_deref()), (vec![0, 1, 2], Some("3")));
        let p3 = page(items.clone(), Some("6"), Some(3)).unwrap();
        assert_eq!((p3.items, p3.marker), (vec![6], None));
        assert!(matches!(
            page(items.clone(), Some("x"), None),
            Err(IamError::InvalidInput(_))
        ));
        assert!(matches!(page(items, None, Some(0)), Err(IamError::Validation(_))));
    }

    proptest::proptest! {
        #[test]
        fn paging_visits_every_item_once(n in 0usize..300, max in 1i64..50) {
            let items: Vec<usize> = (0..n).collect();
            let mut seen = vec![];
            let mut marker: Option<String> = None;
            loop {
                let p = page(items.clone(), marker.as_deref(), Some(max)).unwrap();
                proptest::prop_assert!(p.items.len() as i64 <= max);
                seen.extend(p.items);
                match p.marker {
                    Some(m) => marker = Some(m),
                    None => break,
                }
            }
            proptest::prop_assert_eq!(seen, items);
        }

        #[test]
        fn the_name_rule_is_iams_pattern(s in "[a-zA-Z0-9_+=,.@ /#-]{0,70}") {
            let mut v = Violations::default();
            v.name(&s, "userName", 64);
            let ok = !s.is_empty() && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
            proptest::prop_assert_eq!(v.finish().is_ok(), ok);
        }
    }
}
