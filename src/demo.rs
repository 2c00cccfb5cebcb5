//! `spillway serve --demo`: creates an endpoint whose preferred pool has no capacity on this
//! machine, narrates the fallback as it happens, invokes it once and prints what to try next.
//!
//! Every run starts fresh and says what it reset: the demo's own endpoint, configuration and
//! model (and the ones its "try it yourself" lines create), a scalable target registered on its
//! variant, and run-time capacity pins of its three instance types. Everything else in the data
//! directory (other endpoints, identities, the audit trail, other pins) is kept. It prints only
//! this run's events, waits until the fleet really serves before printing counts, and says why
//! when the invocation fails.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::auth::sigv4::{self, RequestParts};
use crate::config::{AuthMode, Config};
use crate::control::app::App;

/// Names used by the demo.
pub const MODEL: &str = "demo-echo";
/// Endpoint configuration name.
pub const CONFIG: &str = "demo-pools";
/// Endpoint name.
pub const ENDPOINT: &str = "demo";
/// The model the "try it yourself" lines create (deleted by the next demo).
pub const TRY_MODEL: &str = "demo-llm-model";
/// The endpoint configuration the "try it yourself" lines create (deleted by the next demo).
pub const TRY_CONFIG: &str = "demo-llm-config";
/// The demo's instance types, most preferred first.
pub const TYPES: [&str; 3] = ["ml.g6e.2xlarge", "ml.g6.2xlarge", "ml.m5.xlarge"];
/// The Application Auto Scaling resource id of the demo's variant.
const RESOURCE_ID: &str = "endpoint/demo/variant/AllTraffic";
/// The alarm docs/autoscaling.md creates on the demo's variant (deleted by the next demo).
pub const WALKTHROUGH_ALARM: &str = "demo-5xx";
/// CloudWatch's `X-Amz-Target` prefix.
const CLOUDWATCH: &str = "GraniteServiceVersion20100801";
/// How long the demo waits for its endpoint to be deleted, created, or to answer.
const WAIT: Duration = Duration::from_secs(180);

/// Prints a line to stdout; a closed stdout (the reader of a pipe went away) is not an error:
/// the server keeps running, and a Ctrl-C still stops every model process.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }};
}

/// Pins the demo's instance types unless the config already pins them: no capacity for the
/// preferred type, one slot for the second; the third (`ml.m5.xlarge`) stays unpinned and runs
/// within the host's CPU and memory allowance, which the pinned types never use.
pub fn prepare_config(cfg: &mut Config) {
    let pins = &mut cfg.provider.local.capacity;
    pins.entry(TYPES[0].into()).or_insert(0);
    pins.entry(TYPES[1].into()).or_insert(1);
    if cfg.provisioning.deadline_override_seconds.is_none() {
        cfg.provisioning.deadline_override_seconds = Some(60);
    }
    if cfg.provisioning.ice_backoff_initial_ms > 1000 {
        cfg.provisioning.ice_backoff_initial_ms = 1000;
    }
}

/// The administrator's key from `<data_dir>/credentials` (none with authentication off).
fn administrator_key(app: &App) -> Option<(String, String)> {
    if app.cfg.auth.mode == AuthMode::None {
        return None;
    }
    let text = std::fs::read_to_string(app.cfg.data_dir.join("credentials")).ok()?;
    let value = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    Some((value("aws_access_key_id")?, value("aws_secret_access_key")?))
}

/// One answer: status, headers, body.
type Answer = (u16, axum::http::HeaderMap, Vec<u8>);

/// Sends one request to the server as a client does: over HTTP, signed (SigV4, `service`) with
/// the administrator's key.
async fn request(
    app: &App,
    url: &str,
    method: &str,
    path: &str,
    service: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    let host = url.trim_start_matches("http://");
    let mut req = hyper::Request::builder().method(method).uri(format!("{url}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some((key, secret)) = administrator_key(app) {
        let mut signed: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
        signed.extend(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
        let parts = RequestParts {
            method,
            path,
            query: "",
            headers: &signed,
        };
        let hash = sigv4::sha256_hex(body.as_bytes());
        let now = app.clock.system_time();
        for (k, v) in sigv4::sign(&parts, &hash, &key, &secret, None, &app.cfg.region, service, now) {
            req = req.header(k, v);
        }
    }
    let req = req.body(Body::from(body.to_string())).map_err(|e| e.to_string())?;
    let resp = app
        .http
        .request(req)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, headers, body.to_vec()))
}

/// An AWS error answer: its code and message.
#[derive(Debug)]
struct Refused {
    code: String,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// One awsJson call (`X-Amz-Target: <prefix>.<op>`), as boto3 makes it. `Err(Ok(_))`: the
/// server refused it; `Err(Err(_))`: no answer.
async fn call_json(
    app: &App,
    url: &str,
    prefix: &str,
    service: &str,
    op: &str,
    body: Value,
) -> Result<Value, Result<Refused, String>> {
    let target = format!("{prefix}.{op}");
    let json_version = if prefix == CLOUDWATCH { "1.0" } else { "1.1" };
    let content_type = format!("application/x-amz-json-{json_version}");
    let headers = [
        ("content-type", content_type.as_str()),
        ("x-amz-target", target.as_str()),
    ];
    let (status, _, body) = request(app, url, "POST", "/", service, &headers, &body.to_string())
        .await
        .map_err(Err)?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 200 {
        let code = v["__type"].as_str().unwrap_or("?");
        return Err(Ok(Refused {
            code: code.rsplit('#').next().unwrap_or(code).to_string(),
            message: v["message"]
                .as_str()
                .or(v["Message"].as_str())
                .unwrap_or("")
                .to_string(),
        }));
    }
    Ok(v)
}

/// One SageMaker call.
async fn call(app: &App, url: &str, op: &str, body: Value) -> Result<Value, Result<Refused, String>> {
    call_json(app, url, "SageMaker", "sagemaker", op, body).await
}

/// Flattens a call's error into one line.
fn why(e: Result<Refused, String>) -> String {
    match e {
        Ok(r) => r.to_string(),
        Err(e) => e,
    }
}

/// One admin API call (`/_spillway/...`), signed for the service `spillway`.
async fn admin(app: &App, url: &str, method: &str, path: &str) -> Result<Value, String> {
    let (status, _, body) = request(app, url, method, path, "spillway", &[], "").await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!(
            "{method} {path}: HTTP {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(v)
}

/// Runs the demo against a started server.
/// `storage_url`: the embedded object store's S3 API, when it runs (its export line).
pub async fn run(app: Arc<App>, url: String, storage_url: Option<String>) {
    if let Err(e) = run_inner(&app, &url, storage_url.as_deref()).await {
        say!("\ndemo failed: {e}");
        say!("The server keeps running; press Ctrl-C to stop it (it stops every model process it started).");
    }
}

/// Whether a refusal says the resource does not exist.
fn not_found(e: &Result<Refused, String>) -> bool {
    matches!(e, Ok(r) if r.message.contains("Could not find") || r.code.contains("NotFound"))
}

/// Deletes what an earlier demo left, says what it deleted, and returns the lines.
async fn reset(app: &App, url: &str) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    // The scalable target on the demo's variant (AWS keeps one after its endpoint is deleted;
    // the new endpoint must not inherit its policies).
    let targets = call_json(
        app,
        url,
        "AnyScaleFrontendService",
        "application-autoscaling",
        "DescribeScalableTargets",
        json!({"ServiceNamespace": "sagemaker", "ResourceIds": [RESOURCE_ID]}),
    )
    .await
    .map_err(why)?;
    if targets["ScalableTargets"].as_array().is_some_and(|t| !t.is_empty()) {
        call_json(
            app,
            url,
            "AnyScaleFrontendService",
            "application-autoscaling",
            "DeregisterScalableTarget",
            json!({"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE_ID,
                   "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}),
        )
        .await
        .map_err(why)?;
        done.push(format!(
            "deregistered the scalable target {RESOURCE_ID} (and its scaling policies)"
        ));
    }
    // The alarm docs/autoscaling.md makes: its action names a policy that is gone now.
    let alarms = call_json(
        app,
        url,
        CLOUDWATCH,
        "monitoring",
        "DescribeAlarms",
        json!({"AlarmNames": [WALKTHROUGH_ALARM]}),
    )
    .await
    .map_err(why)?;
    if alarms["MetricAlarms"].as_array().is_some_and(|a| !a.is_empty()) {
        call_json(
            app,
            url,
            CLOUDWATCH,
            "monitoring",
            "DeleteAlarms",
            json!({"AlarmNames": [WALKTHROUGH_ALARM]}),
        )
        .await
        .map_err(why)?;
        done.push(format!(
            "deleted the CloudWatch alarm {WALKTHROUGH_ALARM} (made by docs/autoscaling.md)"
        ));
    }
    // The endpoint: deleting it is refused while an operation is in flight; wait that out.
    let started = app.clock.instant();
    let mut deleted: Option<String> = None;
    loop {
        match call(app, url, "DescribeEndpoint", json!({"EndpointName": ENDPOINT})).await {
            Err(e) if not_found(&e) => break,
            Err(e) => return Err(format!("DescribeEndpoint {ENDPOINT}: {}", why(e))),
            Ok(d) => {
                if deleted.is_none() {
                    let count: u64 = d["ProductionVariants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v["CurrentInstanceCount"].as_u64())
                        .sum();
                    let status = d["EndpointStatus"].as_str().unwrap_or("?");
                    match call(app, url, "DeleteEndpoint", json!({"EndpointName": ENDPOINT})).await {
                        Ok(_) => {
                            deleted = Some(format!(
                                "deleted endpoint {ENDPOINT} (was {status} with {count} instance(s) serving; every instance of it was stopped)"
                            ))
                        }
                        Err(e) if not_found(&e) => break,
                        Err(e) if status == "Deleting" => {
                            let _ = e;
                            deleted = Some(format!("waited for endpoint {ENDPOINT} to finish deleting"));
                        }
                        // An operation in flight: try again once it ends.
                        Err(_) => {}
                    }
                }
            }
        }
        if app.clock.since(started) > WAIT {
            return Err(format!(
                "endpoint {ENDPOINT} is still there after {} s; delete it yourself (aws sagemaker delete-endpoint --endpoint-name {ENDPOINT}) and start the demo again",
                WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    done.extend(deleted);
    for (op, key, name) in [
        ("DeleteEndpointConfig", "EndpointConfigName", CONFIG),
        ("DeleteModel", "ModelName", MODEL),
        ("DeleteEndpointConfig", "EndpointConfigName", TRY_CONFIG),
        ("DeleteModel", "ModelName", TRY_MODEL),
    ] {
        match call(app, url, op, json!({ key: name })).await {
            Ok(_) => done.push(format!(
                "deleted {} {name}",
                if key == "ModelName" { "model" } else { "endpoint config" }
            )),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(format!("{op} {name}: {}", why(e))),
        }
    }
    // Run-time pins of the demo's types (PUT /_spillway/capacity/...), which outlive restarts:
    // the demo's own pins (or your config file's) apply again. A type that answered
    // insufficient capacity before this run (the old endpoint relaunching at start) would be
    // skipped while it backs off, so the fallback would not show: DELETE forgets that too.
    let view = admin(app, url, "GET", "/_spillway/capacity").await?;
    for row in view["instanceTypes"].as_array().into_iter().flatten() {
        let t = row["instanceType"].as_str().unwrap_or("");
        if !TYPES.contains(&t) {
            continue;
        }
        let pinned = row["pinnedBy"] == "runtime";
        let backing_off = row["availability"].as_str().is_some_and(|a| a != "Available");
        if pinned || backing_off {
            admin(app, url, "DELETE", &format!("/_spillway/capacity/{t}")).await?;
        }
        if pinned {
            done.push(format!(
                "removed the run-time capacity pin {t} = {} slot(s) (set with PUT /_spillway/capacity/{t})",
                row["slots"]
            ));
        }
        if backing_off {
            done.push(format!(
                "forgot {t}'s insufficient-capacity back-off from before this run ({} answer(s) in a row), so the demo's first launch tries it",
                row["consecutiveFailures"]
            ));
        }
    }
    Ok(done)
}

/// The demo's capacity as the provider sees it now, one phrase per type.
async fn capacity_line(app: &App, url: &str) -> Result<String, String> {
    let view = admin(app, url, "GET", "/_spillway/capacity").await?;
    let rows = view["instanceTypes"].as_array().cloned().unwrap_or_default();
    let phrases: Vec<String> = TYPES
        .iter()
        .map(|t| {
            let row = rows.iter().find(|r| r["instanceType"] == *t);
            match row.and_then(|r| r["slots"].as_u64().map(|s| (s, r["pinnedBy"].as_str().unwrap_or("?")))) {
                Some((s, by)) => format!(
                    "{t} = {s} slot{} (pinned {})",
                    if s == 1 { "" } else { "s" },
                    if by == "runtime" {
                        "at run time"
                    } else {
                        "by the configuration"
                    }
                ),
                None => format!("{t} = not pinned (fits this host's CPUs)"),
            }
        })
        .collect();
    Ok(phrases.join(", "))
}

/// Whether every variant has its desired instances serving, by DescribeEndpoint's counts.
fn serving(d: &Value) -> bool {
    let variants = d["ProductionVariants"].as_array().cloned().unwrap_or_default();
    !variants.is_empty()
        && variants.iter().all(|v| {
            let desired = v["DesiredInstanceCount"].as_u64().unwrap_or(u64::MAX);
            let current = v["CurrentInstanceCount"].as_u64().unwrap_or(0);
            let pools: u64 = v["InstancePools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["CurrentInstanceCount"].as_u64())
                .sum();
            current >= desired && pools >= desired
        })
}

async fn run_inner(app: &Arc<App>, url: &str, storage_url: Option<&str>) -> Result<(), String> {
    say!("\n== spillway demo: an endpoint whose preferred instance type has no capacity ==\n");
    let reset = reset(app, url).await?;
    if !reset.is_empty() {
        say!(
            "Starting fresh: the demo reset its own state (everything else in {} is kept):",
            app.cfg.data_dir.display()
        );
        for line in &reset {
            say!("  - {line}");
        }
        say!(
            "  (to start from nothing, stop the server and remove {}; the next start makes a new administrator key)\n",
            app.cfg.data_dir.display()
        );
    }
    call(
        app,
        url,
        "CreateModel",
        json!({
            "ModelName": MODEL,
            "PrimaryContainer": {"Image": "builtin:echo", "Environment": {"GREETING": "hello from spillway"}},
        }),
    )
    .await
    .map_err(|e| format!("CreateModel {MODEL}: {}", why(e)))?;
    call(
        app,
        url,
        "CreateEndpointConfig",
        json!({
            "EndpointConfigName": CONFIG,
            "ProductionVariants": [{
                "VariantName": "AllTraffic",
                "ModelName": MODEL,
                "InitialInstanceCount": 2,
                "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
                "InstancePools": [
                    {"InstanceType": TYPES[0], "Priority": 1},
                    {"InstanceType": TYPES[1], "Priority": 2},
                    {"InstanceType": TYPES[2], "Priority": 3},
                ],
            }],
        }),
    )
    .await
    .map_err(|e| format!("CreateEndpointConfig {CONFIG}: {}", why(e)))?;
    say!(
        "CreateEndpoint {ENDPOINT}: pools {} (1) > {} (2) > {} (3), 2 instances",
        TYPES[0],
        TYPES[1],
        TYPES[2]
    );
    say!("  capacity here: {}\n", capacity_line(app, url).await?);
    // Only this run's events: the store keeps the history of every endpoint ever named `demo`.
    let mut shown = app.store.events(ENDPOINT).map_err(|e| e.to_string())?.len();
    call(
        app,
        url,
        "CreateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": CONFIG}),
    )
    .await
    .map_err(|e| format!("CreateEndpoint {ENDPOINT}: {}", why(e)))?;
    let started = app.clock.instant();
    let described = loop {
        let events = app.store.events(ENDPOINT).map_err(|e| e.to_string())?;
        for e in events.iter().skip(shown) {
            say!(
                "  {:<18} {:<16} {:<22} {}",
                e.kind,
                e.instance_type.as_deref().unwrap_or(""),
                e.result.as_deref().unwrap_or(""),
                e.message
            );
        }
        shown = shown.max(events.len());
        let d = call(app, url, "DescribeEndpoint", json!({"EndpointName": ENDPOINT}))
            .await
            .map_err(|e| format!("DescribeEndpoint {ENDPOINT}: {}", why(e)))?;
        let status = d["EndpointStatus"].as_str().unwrap_or("");
        if status == "Failed" || (status == "InService" && serving(&d)) {
            break d;
        }
        if app.clock.since(started) > WAIT {
            say!(
                "\nThe fleet is not serving after {} s (status {status}); the endpoint stays, see the commands below.",
                WAIT.as_secs()
            );
            break d;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    say!("\nDescribeEndpoint: {}", described["EndpointStatus"]);
    if let Some(f) = described.get("FailureReason") {
        say!("  FailureReason: {f}");
        return Ok(());
    }
    for v in described["ProductionVariants"].as_array().into_iter().flatten() {
        let pools: Vec<String> = v["InstancePools"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} {}",
                    p["InstanceType"].as_str().unwrap_or("?"),
                    p["CurrentInstanceCount"]
                )
            })
            .collect();
        say!(
            "  variant {}: {} of {} instances in service; per pool: {}",
            v["VariantName"],
            v["CurrentInstanceCount"],
            v["DesiredInstanceCount"],
            pools.join(", ")
        );
    }
    invoke(app, url).await?;
    say!("{}", try_it(app, url, storage_url));
    Ok(())
}

/// Invokes the endpoint once, as a client would (over HTTP, signed with the administrator's key),
/// and says who answered, or why nobody did.
async fn invoke(app: &App, url: &str) -> Result<(), String> {
    let started = app.clock.instant();
    let path = format!("/endpoints/{ENDPOINT}/invocations");
    let headers = [("content-type", "application/json")];
    let (status, headers, body) = loop {
        let answer = request(app, url, "POST", &path, "sagemaker", &headers, r#"{"inputs": "hello"}"#).await?;
        if answer.0 == 200 || app.clock.since(started) > Duration::from_secs(30) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    if status != 200 {
        say!(
            "\nInvokeEndpoint failed: HTTP {status} {} {}",
            header("x-amzn-errortype").unwrap_or_default(),
            String::from_utf8_lossy(&body).chars().take(500).collect::<String>()
        );
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (
        header("x-amzn-invoked-production-variant"),
        header("x-spillway-instance-type"),
    ) {
        (Some(variant), Some(ty)) => say!(
            "\nInvokeEndpoint -> variant {variant:?}, answered by {ty:?} running model {}; echoed body {}",
            body["modelName"],
            body["body"],
        ),
        (variant, ty) => say!(
            "\nInvokeEndpoint answered 200 without saying who answered (x-amzn-invoked-production-variant: {variant:?}, x-spillway-instance-type: {ty:?})"
        ),
    }
    Ok(())
}

/// The lines that point boto3 and the aws CLI at this server with the administrator's key (the
/// same lines `spillway serve` printed at start); none with authentication off.
fn exports(app: &App, url: &str, storage_url: Option<&str>) -> String {
    let s3 = storage_url.map_or_else(String::new, |u| format!("  export AWS_ENDPOINT_URL_S3={u}\n"));
    if app.cfg.auth.mode == AuthMode::None {
        return format!(
            "  export AWS_ENDPOINT_URL={url}\n{s3}  export AWS_DEFAULT_REGION={}\n  export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x    # [auth] mode = \"none\": any key\n",
            app.cfg.region
        );
    }
    let path = app.cfg.data_dir.join("credentials");
    let path = std::path::absolute(&path).unwrap_or(path);
    format!(
        "  export AWS_SHARED_CREDENTIALS_FILE={}\n  export AWS_PROFILE=spillway\n  export AWS_ENDPOINT_URL={url}\n{s3}  export AWS_DEFAULT_REGION={}\n",
        path.display(),
        app.cfg.region
    )
}

/// The "try it yourself" lines: each works as printed in a new shell after the exports.
fn try_it(app: &App, url: &str, storage_url: Option<&str>) -> String {
    // The operator's CLI is this binary: its own path, so the lines work wherever it was built.
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .and_then(|p| shlex::try_quote(&p).ok().map(|q| q.into_owned()))
        .unwrap_or_else(|| "spillway".into());
    try_it_text(url, &exports(app, url, storage_url), &exe)
}

/// The "try it yourself" text for a server at `url`, after the `exports` lines.
fn try_it_text(url: &str, exports: &str, exe: &str) -> String {
    format!(
        r#"
Try it yourself in a new shell. First these lines (the administrator's key, as printed at start):

{exports}
then any line below. They need curl, and boto3 and the aws CLI (`pip install boto3 awscli`;
scripts/test.sh installs both into the repository's .venv: `. .venv/bin/activate`).

  python3 -c 'import boto3; rt = boto3.client("sagemaker-runtime"); r = rt.invoke_endpoint(EndpointName="{ENDPOINT}", Body=b"hi"); print(r["ResponseMetadata"]["HTTPHeaders"]["x-spillway-instance-type"], r["Body"].read())'

  aws sagemaker describe-endpoint --endpoint-name {ENDPOINT} --query '[EndpointStatus, ProductionVariants[0].InstancePools]' --output text
  aws cloudtrail lookup-events --max-results 5 --query 'Events[].[EventTime,EventName,Username]' --output text
  sw() {{ curl -sS --fail-with-body --aws-sigv4 "aws:amz:$AWS_DEFAULT_REGION:spillway" --user "$(aws configure get aws_access_key_id):$(aws configure get aws_secret_access_key)" "$@"; echo; }}
  sw {url}/_spillway/    # the admin API: every path, method and IAM action
  sw {url}/_spillway/endpoints/{ENDPOINT}/events    # every event of the name "{ENDPOINT}", earlier demos' included
  sw -X PUT {url}/_spillway/capacity/{t0} -d '{{"slots": 2}}'    # give the preferred type capacity back (a fleet moves back only if tagged spillway:rebalance=enabled; the next --demo removes this pin)
  aws sagemaker create-model --model-name {TRY_MODEL} --primary-container Image=builtin:echo
  aws sagemaker create-endpoint-config --endpoint-config-name {TRY_CONFIG} --production-variants '[{{"VariantName": "AllTraffic", "ModelName": "{TRY_MODEL}", "InitialInstanceCount": 2, "InstancePools": [{{"InstanceType": "{t0}", "Priority": 1}}, {{"InstanceType": "{t1}", "Priority": 2}}, {{"InstanceType": "{t2}", "Priority": 3}}]}}]'

The operator's CLI is this same binary (docs/operations.md); the same exports configure it:
  {exe} status
  {exe} explain {ENDPOINT}    # why it runs where it runs: each pool's last answer, back-off, rebalancing, cost
  {exe} cost {ENDPOINT} --since 1h    # instance-hours and cost per instance type, and what falling back costs
  {exe} gameday {ENDPOINT} --take {t1} --for 5s --report gameday-{ENDPOINT}.md    # the negative test: PASS or FAIL, with a report
  {exe} runbook {ENDPOINT} > runbook-{ENDPOINT}.md    # owner, rollback, cost, what to watch, last game day
The console: open {url}/ in a browser and sign in with the key in $AWS_SHARED_CREDENTIALS_FILE.

Autoscaling and CloudWatch alarms on this endpoint, step by step with the aws CLI: see
docs/autoscaling.md in the spillway repository (more procedures in docs/runbook.md). It registers
the variant with Application Auto Scaling:
  aws application-autoscaling register-scalable-target --service-namespace sagemaker --resource-id {RESOURCE_ID} --scalable-dimension sagemaker:variant:DesiredInstanceCount --min-capacity 1 --max-capacity 3

Running `spillway serve --demo` again starts the demo afresh and says what it reset.
Press Ctrl-C to stop the server (it stops every model process it started).
"#,
        t0 = TYPES[0],
        t1 = TYPES[1],
        t2 = TYPES[2],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(current: u64, desired: u64, pools: &[u64]) -> Value {
        json!({
            "VariantName": "AllTraffic",
            "CurrentInstanceCount": current,
            "DesiredInstanceCount": desired,
            "InstancePools": pools.iter().map(|n| json!({"InstanceType": "ml.m5.xlarge", "CurrentInstanceCount": n})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn the_fleet_serves_only_when_every_variant_has_its_desired_instances() {
        let d = |vs: Vec<Value>| json!({"EndpointStatus": "InService", "ProductionVariants": vs});
        assert!(serving(&d(vec![variant(2, 2, &[0, 1, 1])])));
        // InService right after a restart, before the adopted or relaunched instances serve
        assert!(!serving(&d(vec![variant(0, 2, &[0, 0, 0])])));
        assert!(!serving(&d(vec![variant(2, 2, &[0, 1, 0])])));
        assert!(!serving(&d(vec![variant(2, 2, &[1, 1]), variant(1, 2, &[1])])));
        assert!(!serving(&d(vec![])));
        assert!(!serving(&json!({"EndpointStatus": "InService"})));
    }

    #[test]
    fn only_a_missing_resource_counts_as_not_found() {
        let refused = |code: &str, message: &str| {
            Ok(Refused {
                code: code.into(),
                message: message.into(),
            })
        };
        assert!(not_found(&refused(
            "ValidationException",
            "Could not find endpoint \"arn:aws:sagemaker:us-east-1:1:endpoint/demo\"."
        )));
        assert!(not_found(&refused("ObjectNotFoundException", "No scalable target")));
        assert!(!not_found(&refused(
            "ValidationException",
            "Cannot update in-progress endpoint"
        )));
        assert!(!not_found(&Err("connection refused".into())));
    }

    #[test]
    fn the_printed_commands_name_the_server_and_the_demo_resources() {
        let text = try_it_text("http://127.0.0.1:7475", "  export X=y\n", "/opt/sw/spillway");
        assert!(text.contains("http://127.0.0.1:7475/_spillway/endpoints/demo/events"));
        assert!(
            text.contains("  /opt/sw/spillway explain demo "),
            "the operator's CLI is this binary"
        );
        assert!(text.contains(TRY_MODEL) && text.contains(TRY_CONFIG) && text.contains(RESOURCE_ID));
        assert!(
            !text.contains("--model-name llm-model") && !text.contains("\"ModelName\": \"llm-model\""),
            "a model the demo's reset would not delete"
        );
    }
}
