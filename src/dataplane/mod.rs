//! The data plane: everything an invocation passes through, from the client's socket to the
//! model's and back.
//!
//! `server` (the listener and its I/O threads) → `fastpath` (the lean HTTP/1.1 path) and the
//! hyper-served connections → `invoke` (the invocation core) → `routes` (the in-memory route
//! table) and `upstream` (pooled model connections), with `h1` (HTTP/1.1 pieces) underneath.
//! Arrows point one way; the control plane (`api`) is reached only for the error type an
//! invocation answers with.

pub mod eventstream;
pub mod fastpath;
pub mod h1;
pub mod head;
pub mod hyperpath;
pub mod invoke;
pub mod op;
pub mod routes;
pub mod server;
pub mod stop;
pub mod upstream;
