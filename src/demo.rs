//! `spillway serve --demo`: creates an endpoint whose preferred pool has no capacity on this
//! machine, narrates the fallback as it happens, invokes it once and prints what to try next.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::api::sagemaker;
use crate::config::Config;
use crate::control::app::App;

/// Names used by the demo.
pub const MODEL: &str = "demo-echo";
/// Endpoint configuration name.
pub const CONFIG: &str = "demo-pools";
/// Endpoint name.
pub const ENDPOINT: &str = "demo";

/// Pins the demo's instance types unless the config already pins them: no capacity for the
/// preferred type, one slot for the second, the third fits on any host's CPUs.
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

async fn call(app: &Arc<App>, op: &str, body: Value) -> Result<Value, String> {
    sagemaker::call(app, op, body.to_string().as_bytes())
        .await
        .map_err(|e| format!("{}: {}", e.code.as_str(), e.message))
}

/// Runs the demo against a started server.
pub async fn run(app: Arc<App>, url: String) {
    if let Err(e) = run_inner(&app, &url).await {
        eprintln!("demo: {e}");
    }
}

async fn run_inner(app: &Arc<App>, url: &str) -> Result<(), String> {
    println!("\n== spillway demo: an endpoint whose preferred instance type has no capacity ==\n");
    let existing = call(app, "DescribeEndpoint", json!({"EndpointName": ENDPOINT}))
        .await
        .ok();
    if existing.is_none() {
        let _ = call(
            app,
            "CreateModel",
            json!({
                "ModelName": MODEL,
                "PrimaryContainer": {"Image": "builtin:echo", "Environment": {"GREETING": "hello from spillway"}},
            }),
        )
        .await;
        let _ = call(
            app,
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
        let d = call(app, "DescribeEndpoint", json!({"EndpointName": ENDPOINT})).await?;
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
    let req = hyper::Request::post(format!("{url}/endpoints/{ENDPOINT}/invocations"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"inputs": "hello"}"#))
        .map_err(|e| e.to_string())?;
    let resp = app.http.request(req).await.map_err(|e| e.to_string())?;
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
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
Try it yourself (any credentials work):

  python3 -c 'import boto3; rt = boto3.client("sagemaker-runtime", endpoint_url="{url}", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"); r = rt.invoke_endpoint(EndpointName="{ENDPOINT}", Body=b"hi"); print(r["ResponseMetadata"]["HTTPHeaders"]["x-spillway-instance-type"], r["Body"].read())'

  aws --endpoint-url {url} sagemaker describe-endpoint --endpoint-name {ENDPOINT}
  curl -s {url}/_spillway/endpoints/{ENDPOINT}/events
  curl -s -X PUT {url}/_spillway/capacity/ml.g6e.2xlarge -d '{{"slots": 2}}'    # give the preferred type capacity back
  aws --endpoint-url {url} sagemaker create-model --model-name llm-model --primary-container Image=builtin:echo
  aws --endpoint-url {url} sagemaker create-endpoint-config --endpoint-config-name llm-prod-v2 --production-variants file://examples/variant-with-instance-pools.json

Press Ctrl-C to stop the server (it stops every model process it started).
"#
    );
    Ok(())
}
