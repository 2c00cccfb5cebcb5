//! What spillway measures: invocation and fleet metrics (`metrics.rs`, the one source of truth
//! that `/metrics`, the CloudWatch API and the autoscaler read) and per-instance CPU, memory and
//! GPU utilization read from the host (`usage.rs`).

pub mod metrics;
pub mod query;
pub mod usage;
