//! The pure core: domain types, the instance-type catalog, request validation, the fleet
//! planner and the endpoint state machine.
//!
//! **Architecture invariant:** nothing in `core` performs IO. No HTTP, no SQL, no process
//! spawning, no reading of the wall clock: every function that needs the time is handed `now`
//! (epoch seconds). That keeps every decision testable in microseconds.

pub mod alarm;
pub mod capacity;
pub mod catalog;
pub mod component;
pub mod cost;
pub mod endpoint;
pub mod explain;
pub mod iam;
pub mod logs;
pub mod model;
pub mod notify;
pub mod planner;
pub mod policy;
pub mod s3uri;
pub mod scaling;
pub mod time;
pub mod validate;
