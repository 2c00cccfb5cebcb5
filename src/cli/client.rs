//! The operator CLI's HTTP client: finds the server and credentials as the aws CLI does, signs
//! every request with SigV4 (`crate::auth::sigv4::sign`, the same canonicalisation the server
//! verifies), and turns answers into values or typed errors with the exit code scripts rely on.
//!
//! Where it looks, in order:
//! - the server: `--endpoint-url`, else `AWS_ENDPOINT_URL`, else `http://127.0.0.1:7474`;
//! - the region: `--region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`;
//! - the key: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`); else the
//!   profile (`--profile`, else `AWS_PROFILE`, else `default`) of the shared credentials file
//!   (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`); else the profile `spillway` of
//!   `<data dir>/credentials` (`--data-dir`, else `SPILLWAY_DATA_DIR`, else `./.spillway`), the
//!   file `spillway serve` writes for its administrator. With none the requests go unsigned
//!   (a server with `[auth] mode = "none"` takes them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::auth::sigv4::{self, RequestParts};
use crate::clock::Clock;

/// Why a CLI command failed; each kind has its own exit code ([`CliError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server cannot be reached.
    #[error(
        "cannot reach spillway at {url}: {detail}\n  (is `spillway serve` running there? set --endpoint-url or AWS_ENDPOINT_URL)"
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The server refused the caller (authentication or authorization).
    #[error("refused: {code}: {message}{hint}")]
    Refused {
        /// AWS error code.
        code: String,
        /// Its message.
        message: String,
        /// What to try.
        hint: String,
    },
    /// The thing named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was invalid (the server's `ValidationException`, or a bad argument).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The server failed, or answered something the CLI does not understand.
    #[error("server error: {0}")]
    Server(String),
    /// A check the command makes did not pass (a game day that failed).
    #[error("{0}")]
    CheckFailed(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The user interrupted the command (Ctrl-C) after it had cleaned up.
    #[error("{0}")]
    Interrupted(String),
}

impl CliError {
    /// The process exit code: 0 is success, 1 a failed check (game day), 2 a usage error
    /// (clap's), 3 the server is unreachable, 4 refused (credentials or permissions), 5 not
    /// found, 6 an invalid request, 7 a server error, 8 a local file error, 130 interrupted (141, a closed stdout, is `cli::BROKEN_PIPE`).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::CheckFailed(_) => 1,
            CliError::Unreachable { .. } => 3,
            CliError::Refused { .. } => 4,
            CliError::NotFound(_) => 5,
            CliError::Invalid(_) => 6,
            CliError::Server(_) => 7,
            CliError::Io(_) => 8,
            CliError::Interrupted(_) => 130,
        }
    }
}

/// Where the server is and who the caller is.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, no trailing slash.
    pub url: String,
    /// Region of the credential scope.
    pub region: String,
    /// The key, if one was found.
    pub key: Option<Key>,
    /// Where the key came from (for messages).
    pub key_source: String,
}

/// An access key.
#[derive(Debug, Clone)]
pub struct Key {
    /// Access key id.
    pub id: String,
    /// Secret.
    pub secret: String,
    /// Session token, if any.
    pub token: Option<String>,
}

/// The value of `name` in `[profile]` of an INI credentials file (`[profile name]` also
/// matches, as in the aws CLI's config file).
fn ini_value(text: &str, profile: &str, name: &str) -> Option<String> {
    let mut in_profile = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            let section = section.strip_prefix("profile ").unwrap_or(section).trim();
            in_profile = section == profile;
            continue;
        }
        if in_profile
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == name
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

fn key_from_file(path: &Path, profile: &str) -> Option<Key> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(Key {
        id: ini_value(&text, profile, "aws_access_key_id")?,
        secret: ini_value(&text, profile, "aws_secret_access_key")?,
        token: ini_value(&text, profile, "aws_session_token"),
    })
}

/// What the user gave on the command line (environment variables fill the rest).
#[derive(Debug, Clone, Default)]
pub struct TargetArgs {
    /// `--endpoint-url`.
    pub endpoint_url: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

impl Target {
    /// Resolves the server, region and key from `args` and `env` (a lookup of environment
    /// variables, so tests can hand their own).
    pub fn resolve(args: &TargetArgs, env: &dyn Fn(&str) -> Option<String>) -> Target {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let url = args
            .endpoint_url
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| "http://127.0.0.1:7474".into())
            .trim_end_matches('/')
            .to_string();
        let region = args
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let profile = args
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let (key, key_source) =
            if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (
                    Some(Key {
                        id,
                        secret,
                        token: env("AWS_SESSION_TOKEN"),
                    }),
                    "the environment (AWS_ACCESS_KEY_ID)".to_string(),
                )
            } else {
                let shared = env("AWS_SHARED_CREDENTIALS_FILE")
                    .map(PathBuf::from)
                    .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
                let data_dir = args
                    .data_dir
                    .clone()
                    .or_else(|| env("SPILLWAY_DATA_DIR").map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from(".spillway"));
                let own = data_dir.join("credentials");
                match shared
                    .as_deref()
                    .and_then(|p| key_from_file(p, &profile).map(|k| (k, p.to_path_buf())))
                {
                    Some((k, p)) => (Some(k), format!("profile {profile:?} of {}", p.display())),
                    None => match key_from_file(&own, "spillway") {
                        Some(k) => (Some(k), format!("profile \"spillway\" of {}", own.display())),
                        None => (
                            None,
                            format!(
                                "no AWS_ACCESS_KEY_ID, no profile {profile:?} in {}, no {}",
                                shared
                                    .as_deref()
                                    .map_or_else(|| "~/.aws/credentials".into(), |p| p.display().to_string()),
                                own.display()
                            ),
                        ),
                    },
                }
            };
        Target {
            url,
            region,
            key,
            key_source,
        }
    }

    /// `host[:port]` of the URL, as the `Host` header names it.
    fn host(&self) -> &str {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .unwrap_or(&self.url);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// A signed HTTP client to one spillway server.
pub struct Client {
    target: Target,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    clock: Clock,
}

/// One answer: status, headers and body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Client {
    /// A client for `target`.
    pub fn new(target: Target) -> Result<Client, CliError> {
        if target.url.starts_with("https://") {
            return Err(CliError::Invalid(format!(
                "{}: the CLI speaks plain HTTP to spillway (put TLS in front of it for remote clients, and point the CLI at spillway's own address)",
                target.url
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        Ok(Client {
            target,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
            clock: Clock::wall(),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// The resolved target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends one request, signed for `service` when a key is known. `path_and_query` starts
    /// with `/`; its query must already be percent-encoded.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        service: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, CliError> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.target.url))
            .header("user-agent", concat!("spillway-cli/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(key) = &self.target.key {
            let host = self.target.host().to_string();
            let mut signed: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
            signed.extend(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
            let parts = RequestParts {
                method,
                path,
                query,
                headers: &signed,
            };
            let hash = sigv4::sha256_hex(body);
            for (k, v) in sigv4::sign(
                &parts,
                &hash,
                &key.id,
                &key.secret,
                key.token.as_deref(),
                &self.target.region,
                service,
                self.clock.system_time(),
            ) {
                req = req.header(k, v);
            }
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| CliError::Invalid(format!("cannot build the request: {e}")))?;
        let unreachable = |detail: String| CliError::Unreachable {
            url: self.target.url.clone(),
            detail,
        };
        let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
            .await
            .map_err(|_| unreachable("no answer within 60 s".into()))?
            .map_err(|e| {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    detail = format!("{detail}: {s}");
                    source = s.source();
                }
                unreachable(detail)
            })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(format!("the answer was cut: {e}")))?
            .to_bytes();
        Ok(Answer { status, headers, body })
    }

    /// A request whose answer is JSON; a non-2xx answer becomes the matching [`CliError`].
    pub async fn json(
        &self,
        method: &str,
        path_and_query: &str,
        service: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Value, CliError> {
        let a = self.send(method, path_and_query, service, headers, body).await?;
        self.check(a)
    }

    /// The JSON of a 2xx answer, or the error it carries.
    fn check(&self, a: Answer) -> Result<Value, CliError> {
        let v: Value = if a.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&a.body).map_err(|e| {
                let excerpt: String = String::from_utf8_lossy(&a.body[..a.body.len().min(120)])
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                CliError::Server(format!(
                    "{} answered HTTP {} with something that is not JSON ({e}: {excerpt:?}) and so without an AWS error; is spillway listening there? (--endpoint-url, AWS_ENDPOINT_URL)",
                    self.target.url, a.status
                ))
            })?
        };
        if (200..300).contains(&a.status) {
            return Ok(v);
        }
        if v.get("__type").is_none() && v.get("message").is_none() && v.get("Message").is_none() {
            // Not an AWS error: something else answers at this address (a proxy, another server).
            return Err(CliError::Server(format!(
                "{} answered HTTP {} without an AWS error; is spillway listening there? (--endpoint-url, AWS_ENDPOINT_URL)",
                self.target.url, a.status
            )));
        }
        let code = v
            .get("__type")
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {}", a.status));
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Err(match (a.status, code.as_str()) {
            (401 | 403, _)
            | (
                _,
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "MissingAuthenticationTokenException"
                | "IncompleteSignatureException",
            ) => {
                let hint = if self.target.key.is_none() {
                    format!(
                        "\n  (no credentials found: {}; export the four lines `spillway serve` printed, or run where its .spillway directory is, or pass --data-dir)",
                        self.target.key_source
                    )
                } else {
                    format!("\n  (signed with the key from {})", self.target.key_source)
                };
                CliError::Refused { code, message, hint }
            }
            (404, _) => CliError::NotFound(message),
            (400, "ValidationException" | "ValidationError" | "SerializationException") => CliError::Invalid(message),
            (400, _) if message.starts_with("Could not find") => CliError::NotFound(message),
            _ => CliError::Server(format!("{code}: {message}")),
        })
    }

    /// One SageMaker control-plane call.
    pub async fn sagemaker(&self, op: &str, body: Value) -> Result<Value, CliError> {
        let target = format!("SageMaker.{op}");
        self.json(
            "POST",
            "/",
            "sagemaker",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", target.as_str()),
            ],
            body.to_string().as_bytes(),
        )
        .await
    }

    /// One admin API `GET`.
    pub async fn admin_get(&self, path_and_query: &str) -> Result<Value, CliError> {
        self.json("GET", path_and_query, "spillway", &[], b"").await
    }

    /// One admin API call with a body.
    pub async fn admin(&self, method: &str, path: &str, body: &[u8]) -> Result<Value, CliError> {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        self.json(method, path, "spillway", headers, body).await
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn profiles_are_read_as_the_aws_cli_reads_them() {
        let text =
            "# c\n[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[profile other]\naws_access_key_id=C\n";
        assert_eq!(ini_value(text, "default", "aws_access_key_id").as_deref(), Some("A"));
        assert_eq!(
            ini_value(text, "default", "aws_secret_access_key").as_deref(),
            Some("B")
        );
        assert_eq!(ini_value(text, "other", "aws_access_key_id").as_deref(), Some("C"));
        assert_eq!(ini_value(text, "other", "aws_secret_access_key"), None);
        assert_eq!(ini_value(text, "missing", "aws_access_key_id"), None);
    }

    #[test]
    fn the_environment_wins_then_the_shared_file_then_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::write(&shared, "[team]\naws_access_key_id=S\naws_secret_access_key=s\n").unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            "[spillway]\naws_access_key_id=D\naws_secret_access_key=d\n",
        )
        .unwrap();
        let args = TargetArgs {
            data_dir: Some(dir.path().to_path_buf()),
            ..TargetArgs::default()
        };
        let mut env: HashMap<&str, String> = HashMap::new();
        let resolve = |env: &HashMap<&str, String>| Target::resolve(&args, &|k| env.get(k).cloned());
        assert_eq!(resolve(&env).key.unwrap().id, "D");
        assert_eq!(resolve(&env).url, "http://127.0.0.1:7474");
        env.insert("AWS_SHARED_CREDENTIALS_FILE", shared.display().to_string());
        env.insert("AWS_PROFILE", "team".into());
        env.insert("AWS_ENDPOINT_URL", "http://127.0.0.1:9/".into());
        let t = resolve(&env);
        assert_eq!(t.key.as_ref().unwrap().id, "S");
        assert_eq!(t.url, "http://127.0.0.1:9");
        assert_eq!(t.host(), "127.0.0.1:9");
        env.insert("AWS_ACCESS_KEY_ID", "E".into());
        env.insert("AWS_SECRET_ACCESS_KEY", "e".into());
        assert_eq!(resolve(&env).key.unwrap().id, "E");
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
