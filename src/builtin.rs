//! Model servers built into the spillway binary (`PrimaryContainer.Image = "builtin:<name>"`).
//!
//! `echo` follows the SageMaker container contract (listens on `SAGEMAKER_BIND_TO_PORT`,
//! `GET /ping`, `POST /invocations`) and answers every invocation with what it received and
//! where it runs, including the environment spillway gave it (the SageMaker contract,
//! `SPILLWAY_*`, `CUDA_VISIBLE_DEVICES`, Slurm's job variables and the model's `Environment`;
//! never other variables, which may be what an operator passed through for the model alone), so
//! tests and demos can see from inside an instance which type and model it is.
//!
//! Knobs (environment): `ECHO_STARTUP_DELAY_MS` delays listening; `ECHO_PING_STATUS` makes
//! `/ping` answer that status instead of 200; `ECHO_INVOCATION_DELAY_MS` makes every invocation
//! take that long (a slow model, for concurrency and draining tests); `ECHO_INVOCATION_STATUS`
//! makes every invocation answer that status (a failing model); `ECHO_BIND_ADDR` sets the
//! listening address (default `127.0.0.1`; a multi-host Slurm cluster needs `0.0.0.0`).
//!
//! `host` is the agent an instance of an endpoint that hosts inference components runs
//! (docs/inference-components.md, "Copies on providers"): it listens as `echo` does (same port
//! and `ECHO_BIND_ADDR` conventions), answers `GET /ping` 200 and every `POST /invocations` 400
//! with a message saying the instance hosts inference components and the request must name one.
//! The components' copies are separate processes (job steps under Slurm) with ports of their own.
//!
//! A request body `stream:<n>` makes the answer a stream of `n` chunks `token-<i> `, one every
//! `ECHO_STREAM_INTERVAL_MS` (default 50 ms), the way an LLM server streams tokens.
//!
//! A request body `burn:<ms>` keeps one CPU core busy for that many milliseconds (at most
//! 60 000) before answering as usual, so tests can see the instance's `CPUUtilization`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;

/// Names of the built-in model servers.
pub const BUILTINS: &[&str] = &["echo", "host"];

/// What the `host` agent answers to an invocation: the instance runs no model of its own.
pub const HOST_AGENT_MESSAGE: &str = "This instance hosts inference components: name the one to invoke \
     (InferenceComponentName, header X-Amzn-SageMaker-Inference-Component).";

/// Runs the named built-in model server until the process is signalled.
pub async fn run(name: &str) -> std::io::Result<()> {
    let app = match name {
        "echo" => {
            if let Some(ms) = env_u64("ECHO_STARTUP_DELAY_MS") {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Router::new()
                .route("/ping", get(ping))
                .route("/invocations", post(invocations))
        }
        "host" => host_agent(),
        _ => {
            return Err(std::io::Error::other(format!(
                "unknown built-in model server {name:?}; available: {}",
                BUILTINS.join(", ")
            )));
        }
    }
    // SageMaker payloads go up to 6 MB; axum's default limit is 2 MB.
    .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024));
    let port = env_u64("SAGEMAKER_BIND_TO_PORT").unwrap_or(8080) as u16;
    let ip: std::net::IpAddr = std::env::var("ECHO_BIND_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, port)).await?;
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            term.recv().await;
        })
        .await
}

/// The `host` agent's routes: `/ping` 200, `/invocations` 400 with [`HOST_AGENT_MESSAGE`]
/// (a JSON body in the shape of a model error, so a client sees why).
pub fn host_agent() -> Router {
    Router::new().route("/ping", get(|| async { StatusCode::OK })).route(
        "/invocations",
        post(|| async {
            (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                json!({ "message": HOST_AGENT_MESSAGE }).to_string(),
            )
        }),
    )
}

/// The longest `burn:<ms>` request (the model timeout's default).
const MAX_BURN_MS: u64 = 60_000;

/// Spins one core for `d` on a blocking thread (the event loop keeps answering).
#[allow(clippy::disallowed_methods)] // The echo model burns real CPU time.
async fn burn(d: Duration) {
    let _ = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + d;
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
        }
        x
    })
    .await;
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

async fn ping() -> StatusCode {
    env_u64("ECHO_PING_STATUS")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK)
}

async fn invocations(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if let Some(ms) = env_u64("ECHO_INVOCATION_DELAY_MS") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(ms) = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.strip_prefix("burn:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
    {
        burn(Duration::from_millis(ms.min(MAX_BURN_MS))).await;
    }
    if let Some(n) = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.strip_prefix("stream:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
    {
        return stream_tokens(n).into_response();
    }
    let var = |k: &str| std::env::var(k).ok();
    let env = own_environment();
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let status = env_u64("ECHO_INVOCATION_STATUS")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let out = json!({
        "body": String::from_utf8_lossy(&body),
        "contentType": header("content-type"),
        "accept": header("accept"),
        "customAttributes": header("x-amzn-sagemaker-custom-attributes"),
        "instanceId": var("SPILLWAY_INSTANCE_ID"),
        "instanceType": var("SPILLWAY_INSTANCE_TYPE"),
        "modelName": var("SPILLWAY_MODEL_NAME"),
        // The client's address: one per connection, so callers can count connections.
        "peer": peer.to_string(),
        "env": env,
    });
    (status, [("content-type", "application/json")], out.to_string()).into_response()
}

/// The variables spillway gave this instance: the SageMaker contract (`SAGEMAKER_*`, `SM_*`),
/// spillway's own (`SPILLWAY_*`), `CUDA_VISIBLE_DEVICES`, the job's `SLURM_*` under Slurm, and
/// the model's `Environment` (named in `SPILLWAY_MODEL_ENV_KEYS`); never anything else of the
/// process environment, which may hold what an operator passed through for the model alone.
fn own_environment() -> serde_json::Map<String, serde_json::Value> {
    let model_keys = std::env::var(crate::core::model::MODEL_ENV_KEYS).unwrap_or_default();
    let model_keys: Vec<&str> = model_keys.split(',').filter(|k| !k.is_empty()).collect();
    std::env::vars()
        .filter(|(k, _)| {
            ["SAGEMAKER_", "SM_", "SPILLWAY_", "SLURM_"]
                .iter()
                .any(|p| k.starts_with(p))
                || k == "CUDA_VISIBLE_DEVICES"
                || model_keys.contains(&k.as_str())
        })
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect()
}

/// Streams `n` tokens through a channel-backed body, one per interval.
fn stream_tokens(n: u32) -> impl IntoResponse {
    let interval = Duration::from_millis(env_u64("ECHO_STREAM_INTERVAL_MS").unwrap_or(50));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(format!("token-{i} ")))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let body = http_body_util::StreamBody::new(ReceiverStream(rx));
    ([("content-type", "text/plain")], axum::body::Body::new(body))
}

/// A `Stream` over an mpsc receiver (what `tokio-stream` would provide, in six lines).
struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request to `addr`: (status, body).
    async fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![];
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    }

    #[tokio::test]
    async fn the_host_agent_pings_and_refuses_invocations() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, host_agent()).await });
        assert_eq!(call(addr, "GET", "/ping").await.0, 200);
        let (status, body) = call(addr, "POST", "/invocations").await;
        assert_eq!(status, 400);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains("InferenceComponentName"),
            "{body}"
        );
        assert_eq!(call(addr, "GET", "/nothing").await.0, 404);
    }
}
