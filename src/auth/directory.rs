//! The identities access keys resolve to: users, their groups, their policies.
//!
//! The control plane (`control::identity`) owns the identities: it applies IAM commands, persists
//! them, and then builds a new immutable [`Directory`] and publishes it through
//! [`Identities::publish`]. Everything that authenticates or authorizes a request reads the
//! current snapshot with [`Identities::current`], which costs one lock-free-in-practice read
//! lock and an `Arc` clone.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::core::policy::Policy;

/// Who signed a request, resolved from an access key, with everything policy evaluation needs.
#[derive(Clone)]
pub struct Principal {
    /// The IAM user's name.
    pub user_name: String,
    /// The user's id (`AIDA…`).
    pub user_id: String,
    /// The user's ARN (`arn:aws:iam::<account>:user<path><name>`).
    pub arn: String,
    /// The account the user belongs to.
    pub account_id: String,
    /// The access key the request was signed with (`AKIA…`).
    pub access_key_id: String,
    /// That key's secret: what SigV4 verification signs with. Never logged (see the `Debug`
    /// impl).
    pub secret_access_key: String,
    /// Whether the key is `Active`; an `Inactive` key authenticates nothing.
    pub active: bool,
    /// The user's inline policies and the inline policies of its groups.
    pub policies: Vec<Arc<Policy>>,
    /// The user's tags (`aws:PrincipalTag/<key>`).
    pub tags: Vec<(String, String)>,
}

impl fmt::Debug for Principal {
    /// Everything but the secret and the policies' contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("user_name", &self.user_name)
            .field("user_id", &self.user_id)
            .field("arn", &self.arn)
            .field("account_id", &self.account_id)
            .field("access_key_id", &self.access_key_id)
            .field("active", &self.active)
            .field("policies", &self.policies.len())
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// An immutable snapshot of identities; control rebuilds and publishes a new one on each IAM change.
#[derive(Debug, Default)]
pub struct Directory {
    by_key: HashMap<String, Arc<Principal>>,
}

impl Directory {
    /// A directory of these principals, one per access key (a later duplicate key id replaces
    /// an earlier one; the store's primary key makes that impossible in practice).
    pub fn new(principals: impl IntoIterator<Item = Principal>) -> Self {
        Self {
            by_key: principals
                .into_iter()
                .map(|p| (p.access_key_id.clone(), Arc::new(p)))
                .collect(),
        }
    }

    /// The principal an access key belongs to (active or not: the caller checks
    /// [`Principal::active`]).
    pub fn principal(&self, access_key_id: &str) -> Option<Arc<Principal>> {
        self.by_key.get(access_key_id).cloned()
    }

    /// How many access keys the directory knows.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether it knows no access key at all.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Holder the control plane writes and the API/data plane read (cheap to read on every request).
#[derive(Debug, Default)]
pub struct Identities {
    current: RwLock<Arc<Directory>>,
}

impl Identities {
    /// A holder starting with `d`.
    pub fn new(d: Directory) -> Self {
        Self {
            current: RwLock::new(Arc::new(d)),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Directory> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the snapshot; readers holding the old one keep it until they drop it.
    pub fn publish(&self, d: Directory) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(key: &str, user: &str) -> Principal {
        Principal {
            user_name: user.into(),
            user_id: "AIDAAAAAAAAAAAAAAAAA".into(),
            arn: format!("arn:aws:iam::123456789012:user/{user}"),
            account_id: "123456789012".into(),
            access_key_id: key.into(),
            secret_access_key: "very-secret-value".into(),
            active: true,
            policies: vec![],
            tags: vec![],
        }
    }

    #[test]
    fn published_snapshots_replace_the_current_one_and_old_readers_keep_theirs() {
        let ids = Identities::default();
        assert!(ids.current().principal("AKIA1").is_none());
        let old = ids.current();
        ids.publish(Directory::new([principal("AKIA1", "alice"), principal("AKIA2", "bob")]));
        assert_eq!(ids.current().principal("AKIA2").unwrap().user_name, "bob");
        assert_eq!(ids.current().len(), 2);
        assert!(old.is_empty());
        ids.publish(Directory::new([principal("AKIA2", "bob")]));
        assert!(ids.current().principal("AKIA1").is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let p = principal("AKIA1", "alice");
        let s = format!("{p:?}");
        assert!(s.contains("alice") && s.contains("AKIA1"));
        assert!(!s.contains("very-secret-value"), "{s}");
    }
}
