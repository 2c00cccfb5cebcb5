//! spillway: self-hosted inference endpoints that speak the SageMaker hosting API and
//! provision each production variant from ranked instance pools.
//!
//! See `ARCHITECTURE.md` for the code map and invariants.

pub mod api;
pub mod audit;
pub mod auth;
pub mod builtin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod control;
pub mod core;
pub mod dataplane;
pub mod demo;
pub mod error;
pub mod logs;
pub mod objects;
pub mod provider;
pub mod queue;
pub mod store;
pub mod telemetry;
