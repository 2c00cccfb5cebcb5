//! The identities access keys resolve to: users, their groups, their policies.
