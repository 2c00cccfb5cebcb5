//! STUB (integration scaffold; replaced by the real policy language at merge).
#![allow(missing_docs, dead_code, unused_variables)]
use std::collections::BTreeMap;
#[derive(Debug)]
pub struct Policy;
impl Policy {
    pub fn parse(document: &str) -> Result<Policy, PolicyError> {
        Ok(Policy)
    }
}
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}
#[derive(Debug, Clone)]
pub struct Context {
    action: String,
    resource: String,
    keys: BTreeMap<String, Vec<String>>,
}
impl Context {
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            resource: resource.into(),
            keys: BTreeMap::new(),
        }
    }
    pub fn with(mut self, key: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.insert(key, values);
        self
    }
    pub fn insert(&mut self, key: &str, values: impl IntoIterator<Item = impl Into<String>>) {
        self.keys
            .entry(key.to_ascii_lowercase())
            .or_default()
            .extend(values.into_iter().map(Into::into));
    }
    pub fn action(&self) -> &str {
        &self.action
    }
    pub fn resource(&self) -> &str {
        &self.resource
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, ctx: &Context) -> Decision {
    Decision::ImplicitDeny
}
