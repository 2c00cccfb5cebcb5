//! `spillway serve --demo`: creates an endpoint whose preferred pool has no capacity on this
//! machine, narrates the fallback as it happens, invokes it once and prints what to try next.

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

/// Pins the demo's instance types unless the config already pins them: no capacity for the
/// preferred type, one slot for the second; the third (`ml.m5.xlarge`) stays unpinned and runs
/// within the host's CPU and memory allowance, which the pinned types never use.
pub fn prepare_config(cfg: &mut Config) {
    let pins = &mut cfg.provider.local.capacity;
    pins.entry("ml.g6e.2xlarge".into()).or_insert(0);
    pins.entry("ml.g6.2xlarge".into()).or_insert(1);
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

/// Sends one request to the server as a client does: over HTTP, signed (SigV4, `service`) with
/// the administrator's key. Returns the status, the headers and the body.
async fn request(
    app: &App,
    url: &str,
    path: &str,
    service: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, axum::http::HeaderMap, Vec<u8>), String> {
    let host = url.trim_start_matches("http://");
    let mut req = hyper::Request::post(format!("{url}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some((key, secret)) = administrator_key(app) {
        let mut signed: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
        signed.extend(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
        let parts = RequestParts {
            method: "POST",
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
    let resp = app.http.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, headers, body.to_vec()))
}

/// One SageMaker call, as boto3 makes it.
async fn call(app: &Arc<App>, url: &str, op: &str, body: Value) -> Result<Value, String> {
    let target = format!("SageMaker.{op}");
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let (status, _, body) = request(app, url, "/", "sagemaker", &headers, &body.to_string()).await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!(
            "{}: {}",
            v["__type"].as_str().unwrap_or("?"),
            v["message"].as_str().unwrap_or("")
        ));
    }
    Ok(v)
}

/// Runs the demo against a started server.
pub async fn run(app: Arc<App>, url: String) {
    if let Err(e) = run_inner(&app, &url).await {
        eprintln!("demo: {e}");
    }
}

async fn run_inner(app: &Arc<App>, url: &str) -> Result<(), String> {
    println!("\n== spillway demo: an endpoint whose preferred instance type has no capacity ==\n");
    let existing = call(app, url, "DescribeEndpoint", json!({"EndpointName": ENDPOINT}))
        .await
        .ok();
    if existing.is_none() {
        let _ = call(
            app,
            url,
            "CreateModel",
            json!({
                "ModelName": MODEL,
                "PrimaryContainer": {"Image": "builtin:echo", "Environment": {"GREETING": "hello from spillway"}},
            }),
        )
        .await;
        let _ = call(
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
                        {"InstanceType": "ml.g6e.2xlarge", "Priority": 1},
                        {"InstanceType": "ml.g6.2xlarge", "Priority": 2},
                        {"InstanceType": "ml.m5.xlarge", "Priority": 3},
                    ],
                }],
            }),
        )
        .await;
        println!(
            "CreateEndpoint {ENDPOINT}: pools ml.g6e.2xlarge (1) > ml.g6.2xlarge (2) > ml.m5.xlarge (3), 2 instances"
        );
        println!(
            "  capacity here: ml.g6e.2xlarge = 0 slots, ml.g6.2xlarge = 1 slot, ml.m5.xlarge = fits this host's CPUs\n"
        );
        call(
            app,
            url,
            "CreateEndpoint",
            json!({"EndpointName": ENDPOINT, "EndpointConfigName": CONFIG}),
        )
        .await?;
    } else {
        println!("endpoint {ENDPOINT} exists already (data dir kept from an earlier run); showing its history\n");
    }
    let mut shown = 0;
    let status = loop {
        let events = app.store.events(ENDPOINT).map_err(|e| e.to_string())?;
        for e in &events[shown..] {
            println!(
                "  {:<18} {:<16} {:<22} {}",
                e.kind,
                e.instance_type.as_deref().unwrap_or(""),
                e.result.as_deref().unwrap_or(""),
                e.message
            );
        }
        shown = events.len();
        let d = call(app, url, "DescribeEndpoint", json!({"EndpointName": ENDPOINT})).await?;
        let status = d["EndpointStatus"].as_str().unwrap_or("").to_string();
        if status == "InService" || status == "Failed" {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!("\nDescribeEndpoint: {}", status["EndpointStatus"]);
    if let Some(f) = status.get("FailureReason") {
        println!("  FailureReason: {f}");
        return Ok(());
    }
    for v in status["ProductionVariants"].as_array().into_iter().flatten() {
        println!("  variant {} InstancePools: {}", v["VariantName"], v["InstancePools"]);
    }
    // Invoked as a client would: over HTTP, signed with the administrator's key. After a
    // restart the endpoint is InService before its adopted instances serve again: wait (30 s at
    // most) for an answer from a model.
    let mut tries = 0;
    let (headers, body) = loop {
        let (status, headers, body) = request(
            app,
            url,
            &format!("/endpoints/{ENDPOINT}/invocations"),
            "sagemaker",
            &[("content-type", "application/json")],
            r#"{"inputs": "hello"}"#,
        )
        .await?;
        tries += 1;
        if status == 200 || tries >= 100 {
            break (headers, body);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    println!(
        "\nInvokeEndpoint -> variant {:?}, answered by {:?} running model {}; echoed body {}",
        headers
            .get("x-amzn-invoked-production-variant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        headers
            .get("x-spillway-instance-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        body["modelName"],
        body["body"],
    );
    println!(
        r#"
Try it yourself, in a shell with the four exports printed at start (the administrator's key):

  python3 -c 'import boto3; rt = boto3.client("sagemaker-runtime"); r = rt.invoke_endpoint(EndpointName="{ENDPOINT}", Body=b"hi"); print(r["ResponseMetadata"]["HTTPHeaders"]["x-spillway-instance-type"], r["Body"].read())'

  aws sagemaker describe-endpoint --endpoint-name {ENDPOINT}
  aws cloudtrail lookup-events --max-results 5 --query 'Events[].[EventTime,EventName,Username]' --output text
  sw() {{ curl -s --aws-sigv4 "aws:amz:$AWS_DEFAULT_REGION:spillway" --user "$(aws configure get aws_access_key_id):$(aws configure get aws_secret_access_key)" "$@"; }}
  sw {url}/_spillway/endpoints/{ENDPOINT}/events
  sw -X PUT {url}/_spillway/capacity/ml.g6e.2xlarge -d '{{"slots": 2}}'    # give the preferred type capacity back (a fleet moves back only if tagged spillway:rebalance=enabled)
  aws sagemaker create-model --model-name llm-model --primary-container Image=builtin:echo
  aws sagemaker create-endpoint-config --endpoint-config-name llm-prod-v2 --production-variants '[{{"VariantName": "AllTraffic", "ModelName": "llm-model", "InitialInstanceCount": 2, "InstancePools": [{{"InstanceType": "ml.g6e.2xlarge", "Priority": 1}}, {{"InstanceType": "ml.g6.2xlarge", "Priority": 2}}, {{"InstanceType": "ml.m5.xlarge", "Priority": 3}}]}}]' 

Press Ctrl-C to stop the server (it stops every model process it started).
"#
    );
    Ok(())
}
