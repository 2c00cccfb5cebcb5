//! STUB (integration scaffold; replaced by the real directory at merge).
#![allow(missing_docs, dead_code, unused_variables)]
use std::sync::Arc;
#[derive(Debug)]
pub struct Principal {
    pub user_name: String,
    pub user_id: String,
    pub arn: String,
    pub account_id: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub active: bool,
    pub policies: Vec<Arc<crate::core::policy::Policy>>,
    pub tags: Vec<(String, String)>,
}
#[derive(Debug, Default)]
pub struct Directory;
impl Directory {
    pub fn principal(&self, access_key_id: &str) -> Option<Arc<Principal>> {
        None
    }
}
#[derive(Debug, Default)]
pub struct Identities;
impl Identities {
    pub fn current(&self) -> Arc<Directory> {
        Arc::new(Directory)
    }
}
