//! Differential test against botocore: every request of a corpus that botocore signed (and sent
//! over a real socket: `tests/conformance/sigv4_corpus.py` writes the bytes a server receives)
//! verifies, and each single change to a signed element is refused.
//!
//! Where the corpus comes from:
//! * `SPILLWAY_SIGV4_CORPUS=<file>`: that file (the pytest wrapper
//!   `tests/conformance/test_sigv4_botocore.py` writes one and runs this test with it, so the
//!   conformance step of `scripts/test.sh` always runs it);
//! * otherwise the script is run with `SPILLWAY_PYTHON`, or `.venv/bin/python` when it exists;
//! * with neither, the test fails when `SPILLWAY_REQUIRE_PY=1`, and otherwise says loudly that
//!   it did not run (the first `scripts/test.sh` run has no venv yet at the nextest step; the
//!   pytest wrapper then runs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;
use spillway::auth::sigv4::{
    AuthError, KeyCache, PayloadHash, RequestParts, UNSIGNED_PAYLOAD, authenticate, sha256_hex,
};

struct Case {
    source: String,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    now: u64,
    region: String,
    service: String,
    secret: String,
    /// What botocore signed (generated cases), for failure messages.
    botocore_canonical_request: Option<String>,
}

fn corpus() -> Option<(Vec<Case>, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file: PathBuf = if let Ok(f) = std::env::var("SPILLWAY_SIGV4_CORPUS") {
        f.into()
    } else {
        let python = std::env::var("SPILLWAY_PYTHON")
            .map(PathBuf::from)
            .ok()
            .or_else(|| Some(root.join(".venv/bin/python")).filter(|p| p.exists()));
        let Some(python) = python else {
            if std::env::var("SPILLWAY_REQUIRE_PY").as_deref() == Ok("1") {
                panic!("SPILLWAY_REQUIRE_PY=1 but no Python with botocore: set SPILLWAY_PYTHON or create .venv");
            }
            eprintln!(
                "\n*** sigv4_botocore: NOT RUN: no Python with botocore (.venv/bin/python or SPILLWAY_PYTHON); \
                 the conformance suite runs it (tests/conformance/test_sigv4_botocore.py) ***\n"
            );
            return None;
        };
        let out = std::env::temp_dir().join(format!("spillway-sigv4-corpus-{}.json", std::process::id()));
        let status = Command::new(&python)
            .arg(root.join("tests/conformance/sigv4_corpus.py"))
            .arg(&out)
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        assert!(status.success(), "sigv4_corpus.py failed: {status}");
        out
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    if std::env::var_os("SPILLWAY_SIGV4_CORPUS").is_none() {
        let _ = std::fs::remove_file(&file);
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let s = |c: &Value, k: &str| c[k].as_str().unwrap().to_string();
    let cases = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            source: s(c, "source"),
            method: s(c, "method"),
            path: s(c, "path"),
            query: s(c, "query"),
            headers: c["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_string(),
                        hex::decode(h[1].as_str().unwrap()).unwrap(),
                    )
                })
                .collect(),
            body: hex::decode(s(c, "body")).unwrap(),
            now: c["now"].as_u64().unwrap(),
            region: s(c, "region"),
            service: s(c, "service"),
            secret: s(c, "secret"),
            botocore_canonical_request: c["botocore_canonical_request"].as_str().map(str::to_string),
        })
        .collect();
    Some((cases, format!("seed {}", v["seed"])))
}

impl Case {
    fn check(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
    ) -> Result<(), AuthError> {
        let refs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let parts = RequestParts {
            method,
            path,
            query,
            headers: &refs,
        };
        let now = UNIX_EPOCH + Duration::from_secs(self.now);
        let p = authenticate(&parts, &self.region, &[self.service.as_str()], now)?;
        let hash = match p.payload() {
            PayloadHash::Unsigned => UNSIGNED_PAYLOAD.to_string(),
            PayloadHash::Declared(_) | PayloadHash::Compute => sha256_hex(body),
        };
        p.verify(&self.secret, &hash, &KeyCache::new(4))
    }

    fn signed_header_names(&self) -> Vec<String> {
        let auth = &self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .unwrap()
            .1;
        let auth = String::from_utf8(auth.clone()).unwrap();
        let sh = auth.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
        sh.split(';').map(str::to_string).collect()
    }
}

fn other_alnum(b: u8) -> u8 {
    match b {
        b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => b + 1,
        b'z' => b'a',
        b'Z' => b'A',
        _ => b'0',
    }
}

/// A changed request: what was changed, method, path, query, headers, body.
type Mutation = (String, String, String, String, Vec<(String, Vec<u8>)>, Vec<u8>);

/// Each way to change one signed element of a case (elements with nothing to change are left out).
fn mutations(c: &Case) -> Vec<Mutation> {
    let mut out = Vec::new();
    let base = || {
        (
            c.method.clone(),
            c.path.clone(),
            c.query.clone(),
            c.headers.clone(),
            c.body.clone(),
        )
    };
    let first_alnum = |s: &[u8]| s.iter().rposition(u8::is_ascii_alphanumeric);
    // Method.
    let (mut m, p, q, h, b) = base();
    m = if m == "GET" { "POST".into() } else { "GET".into() };
    out.push(("method".into(), m, p, q, h, b));
    // Path (unless a `..` segment could swallow the change).
    if !c.path.split('/').any(|s| s == "..")
        && let Some(i) = first_alnum(c.path.as_bytes())
    {
        let (m, p, q, h, b) = base();
        let mut pb = p.into_bytes();
        pb[i] = other_alnum(pb[i]);
        out.push(("path".into(), m, String::from_utf8(pb).unwrap(), q, h, b));
    }
    // Query.
    if let Some(i) = first_alnum(c.query.as_bytes()) {
        let (m, p, q, h, b) = base();
        let mut qb = q.into_bytes();
        qb[i] = other_alnum(qb[i]);
        out.push(("query".into(), m, p, String::from_utf8(qb).unwrap(), h, b));
    }
    // Every signed header's value, one at a time.
    for name in c.signed_header_names() {
        for (idx, (n, v)) in c.headers.iter().enumerate() {
            if !n.eq_ignore_ascii_case(&name) || (name == "x-amz-content-sha256" && v == UNSIGNED_PAYLOAD.as_bytes()) {
                continue;
            }
            if let Some(i) = first_alnum(v) {
                let (m, p, q, mut h, b) = base();
                h[idx].1[i] = other_alnum(h[idx].1[i]);
                out.push((format!("header {name}"), m, p, q, h, b));
            }
        }
    }
    // The body, unless unsigned.
    let unsigned = c
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("x-amz-content-sha256") && v == UNSIGNED_PAYLOAD.as_bytes());
    if !unsigned {
        let (m, p, q, h, mut b) = base();
        match b.first_mut() {
            Some(x) => *x ^= 1,
            None => b.push(b'x'),
        }
        out.push(("body".into(), m, p, q, h, b));
    }
    // The signature and the credential scope.
    let ai = c
        .headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .unwrap();
    let auth = String::from_utf8(c.headers[ai].1.clone()).unwrap();
    let sig_at = auth.find("Signature=").unwrap() + "Signature=".len() + 10;
    let mut sig = auth.clone().into_bytes();
    sig[sig_at] = if sig[sig_at] == b'0' { b'1' } else { b'0' };
    let date = auth.split('/').nth(1).unwrap().to_string();
    for (what, new) in [
        ("signature", String::from_utf8(sig).unwrap()),
        (
            "scope region",
            auth.replacen(&format!("/{}/", c.region), "/eu-west-1/", 1),
        ),
        ("scope service", auth.replacen(&format!("/{}/", c.service), "/s3/", 1)),
        ("scope date", auth.replacen(&format!("/{date}/"), "/20200101/", 1)),
        (
            "signed headers",
            auth.replacen("SignedHeaders=", "SignedHeaders=accept-encoding;", 1),
        ),
    ] {
        let (m, p, q, mut h, b) = base();
        h[ai].1 = new.into_bytes();
        out.push((what.into(), m, p, q, h, b));
    }
    out
}

#[test]
fn botocore_signed_requests_verify_and_mutations_do_not() {
    let Some((cases, seed)) = corpus() else { return };
    assert!(cases.len() >= 100, "corpus too small: {}", cases.len());
    let mut failures = Vec::new();
    let mut refused = 0usize;
    for c in &cases {
        if let Err(e) = c.check(&c.method, &c.path, &c.query, &c.headers, &c.body) {
            let diff = match (&e, &c.botocore_canonical_request) {
                (AuthError::Signature { canonical_request, .. }, Some(theirs)) => canonical_request
                    .lines()
                    .zip(theirs.lines())
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("spillway: {a:?}\n    botocore: {b:?}"))
                    .unwrap_or_else(|| "canonical requests agree; the signature differs".into()),
                _ => e.to_string(),
            };
            failures.push(format!(
                "{}: {} {}?{}:\n    {diff}",
                c.source, c.method, c.path, c.query
            ));
            continue;
        }
        for (what, m, p, q, h, b) in mutations(c) {
            if c.check(&m, &p, &q, &h, &b).is_ok() {
                failures.push(format!("{}: accepted after changing the {what}: {m} {p}?{q}", c.source));
            } else {
                refused += 1;
            }
        }
    }
    // Every API's real client is in the corpus.
    for api in [
        "sagemaker.",
        "sagemaker-runtime.",
        "application-autoscaling.",
        "cloudwatch.",
        "cloudtrail.",
        "iam.",
        "sts.",
    ] {
        assert!(
            cases.iter().any(|c| c.source.starts_with(api)),
            "no {api} request in the corpus"
        );
    }
    assert!(
        failures.is_empty(),
        "{seed}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "sigv4_botocore: verified {} botocore-signed requests and refused {refused} mutations ({seed})",
        cases.len()
    );
}
