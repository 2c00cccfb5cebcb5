//! The operator's CLI: commands that talk to a running spillway over HTTP, signed like any
//! client (`client`), with `--output table|json` and exit codes scripts can trust
//! ([`client::CliError::exit_code`]).
//!
//! - `spillway status`: endpoints, variants, fleet per instance type, what is pending.
//! - `spillway explain ENDPOINT`: why its fleet runs where it runs (`core::explain`).
//! - `spillway events ENDPOINT [--follow]`: its event history.
//! - `spillway capacity [set TYPE N | clear TYPE | reclaim TYPE]`: pins and back-off.
//! - `spillway cost [ENDPOINT] [--since 7d]`: instance-hours and cost per type (`core::cost`).
//! - `spillway gameday ENDPOINT --take TYPE`: the negative test, with a report (`gameday`).
//! - `spillway runbook ENDPOINT`: a Markdown runbook from live state (`runbook`).

/// `print!` to stdout that never panics: when the reader went away (`spillway status | head`),
/// the command stops quietly with exit code 141, as a program killed by SIGPIPE would.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($arg)*).and_then(|_| std::io::stdout().flush()).is_err() {
            std::process::exit($crate::cli::BROKEN_PIPE);
        }
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {{
        out!($($arg)*);
        out!("\n");
    }};
}

/// The exit code when stdout's reader went away: 128 + SIGPIPE, as the shell reports a
/// program that SIGPIPE killed.
pub const BROKEN_PIPE: i32 = 141;

pub mod client;
pub mod gameday;
pub mod runbook;
pub mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::core::explain::human_seconds;
use crate::core::time::iso8601;
use client::{CliError, Client, Target, TargetArgs, encode};
use table::Table;

/// Where the server is and who calls it (each has an environment variable, as the aws CLI).
#[derive(Args, Debug, Clone, Default)]
pub struct Connect {
    /// The server (env AWS_ENDPOINT_URL; default http://127.0.0.1:7474).
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// Region of the signature (env AWS_REGION or AWS_DEFAULT_REGION; default us-east-1).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Profile of the shared credentials file (env AWS_PROFILE; default `default`).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The server's data directory, whose `credentials` file is used when no other key is
    /// found (env SPILLWAY_DATA_DIR; default ./.spillway).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// How a command prints its result.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Text for people.
    #[default]
    Table,
    /// JSON for scripts (the API's own shapes).
    Json,
}

impl Connect {
    fn client(&self) -> Result<Client, CliError> {
        let args = TargetArgs {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            data_dir: self.data_dir.clone(),
        };
        Client::new(Target::resolve(&args, &|k| std::env::var(k).ok()))
    }
}

/// The operator's commands.
#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Endpoints, variants and their fleet per instance type, and what is pending.
    Status {
        /// Connection and output.
        #[command(flatten)]
        connect: Connect,
    },
    /// Why an endpoint runs where it runs: pools, what each type answered, back-off, rebalancing,
    /// scaling and cost, in sentences and then the evidence.
    Explain {
        /// The endpoint.
        endpoint: String,
        /// Connection and output.
        #[command(flatten)]
        connect: Connect,
    },
    /// An endpoint's event history (every launch attempt, fallback, scaling and capacity change).
    Events {
        /// The endpoint.
        endpoint: String,
        /// Keep printing new events until interrupted (or the endpoint is deleted).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only events of the last DURATION (e.g. 30m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Connection and output.
        #[command(flatten)]
        connect: Connect,
    },
    /// Capacity per instance type: pins, instances in use, back-off; or change a pin.
    Capacity {
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<CapacityAction>,
        /// Connection and output.
        #[command(flatten)]
        connect: Connect,
    },
    /// Instance-hours and cost per instance type, and what falling back cost.
    Cost {
        /// One endpoint (default: every endpoint).
        endpoint: Option<String>,
        /// The window, back from now (e.g. 24h, 7d).
        #[arg(long, default_value = "7d")]
        since: String,
        /// Connection and output.
        #[command(flatten)]
        connect: Connect,
    },
    /// The negative test: take an instance type away, watch the fleet fall back (and, with
    /// rebalancing, return) while invoking the endpoint; exit 0 on PASS, 1 on FAIL.
    Gameday(gameday::GamedayArgs),
    /// A Markdown runbook for an endpoint, generated from its live state.
    Runbook {
        /// The endpoint.
        endpoint: String,
        /// Connection and output (`json` prints the facts the page is made of).
        #[command(flatten)]
        connect: Connect,
    },
}

/// `spillway capacity` actions.
#[derive(Subcommand, Debug, Clone)]
pub enum CapacityAction {
    /// Pin TYPE to N slots on this server (durable until cleared).
    Set {
        /// Instance type.
        instance_type: String,
        /// Slots (0: the type has no capacity here).
        slots: u32,
    },
    /// Remove TYPE's run-time pin (the config file's pin, if any, applies again).
    Clear {
        /// Instance type.
        instance_type: String,
    },
    /// Take every running instance of TYPE away (each is replaced through its pools).
    Reclaim {
        /// Instance type.
        instance_type: String,
        /// Only this endpoint's instances (default: every endpoint's).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

/// Runs one operator command; the process exit code.
pub fn main(command: OperatorCommand) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spillway: cannot start the async runtime: {e}");
            return 7;
        }
    };
    match rt.block_on(run(command)) {
        Ok(()) => 0,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "spillway: {e}");
            e.exit_code()
        }
    }
}

async fn run(command: OperatorCommand) -> Result<(), CliError> {
    match command {
        OperatorCommand::Status { connect } => status(&connect).await,
        OperatorCommand::Explain { endpoint, connect } => explain(&connect, &endpoint).await,
        OperatorCommand::Events {
            endpoint,
            follow,
            since,
            connect,
        } => events(&connect, &endpoint, follow, since.as_deref()).await,
        OperatorCommand::Capacity { action, connect } => capacity(&connect, action).await,
        OperatorCommand::Cost {
            endpoint,
            since,
            connect,
        } => cost(&connect, endpoint.as_deref(), &since).await,
        OperatorCommand::Gameday(args) => gameday::run(args).await,
        OperatorCommand::Runbook { endpoint, connect } => runbook::run(&connect, &endpoint).await,
    }
}

fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Every endpoint name (all pages of `ListEndpoints`).
pub(crate) async fn endpoint_names(c: &Client) -> Result<Vec<String>, CliError> {
    let mut names = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"MaxResults": 100, "SortBy": "Name", "SortOrder": "Ascending"});
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let page = c.sagemaker("ListEndpoints", body).await?;
        for e in page["Endpoints"].as_array().into_iter().flatten() {
            if let Some(n) = e["EndpointName"].as_str() {
                names.push(n.to_string());
            }
        }
        match page["NextToken"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(names),
        }
    }
}

/// The explain answer of an endpoint.
pub(crate) async fn explanation(c: &Client, endpoint: &str) -> Result<Value, CliError> {
    c.admin_get(&format!("/_spillway/endpoints/{}/explain", encode(endpoint)))
        .await
}

/// `ml.g6.2xlarge×2 ml.m5.xlarge×1*`: a variant's fleet, `*` marking fallback pools.
fn fleet_cell(v: &Value) -> String {
    let cells: Vec<String> = v["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["current"].as_u64().unwrap_or(0) > 0)
        .map(|p| {
            format!(
                "{}×{}{}",
                p["instanceType"].as_str().unwrap_or("?"),
                p["current"],
                if p["priority"].as_u64().unwrap_or(1) > 1 {
                    "*"
                } else {
                    ""
                }
            )
        })
        .collect();
    if cells.is_empty() { "-".into() } else { cells.join(" ") }
}

/// Instances of a variant (of the explain answer) on pools other than its first.
pub(crate) fn on_fallback(v: &Value) -> u64 {
    v["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .map(|p| p["current"].as_u64().unwrap_or(0))
        .sum()
}

/// What a variant is waiting for, in a few words (`e` is the endpoint's explanation).
fn pending_cell(e: &Value, v: &Value, now: f64) -> String {
    if let Some(m) = v["statusMessage"].as_str() {
        return m.to_string();
    }
    if let Some(s) = v["stalled"].as_str() {
        return format!("gave up: {s}");
    }
    let preferred = &v["pools"][0];
    let on_fallback = on_fallback(v);
    if on_fallback > 0 {
        if let Some(next) = preferred["backoff"]["nextProbe"].as_f64().filter(|n| *n > now) {
            return format!(
                "{} backing off, next probe in {}",
                preferred["instanceType"].as_str().unwrap_or("?"),
                human_seconds(next - now)
            );
        }
        if e["rebalance"]["enabled"].as_bool().unwrap_or(false) {
            let next = v["rebalanceWaits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["eligibleAt"].as_f64())
                .filter(|t| *t > now)
                .fold(f64::INFINITY, f64::min);
            let to = preferred["instanceType"].as_str().unwrap_or("?");
            return if next.is_finite() {
                format!(
                    "{on_fallback} on fallback pools; returning to {to} in {}",
                    human_seconds(next - now)
                )
            } else {
                format!("{on_fallback} on fallback pools; returning to {to}")
            };
        }
        return format!("{on_fallback} on fallback pools (rebalancing off)");
    }
    String::new()
}

async fn status(connect: &Connect) -> Result<(), CliError> {
    let c = connect.client()?;
    let names = endpoint_names(&c).await?;
    let mut all = vec![];
    for n in &names {
        match explanation(&c, n).await {
            Ok(v) => all.push(v),
            Err(CliError::NotFound(_)) => {} // deleted since the listing
            Err(e) => return Err(e),
        }
    }
    let capacity = c.admin_get("/_spillway/capacity").await?;
    if connect.output == Output::Json {
        print_json(&json!({"endpoints": all, "capacity": capacity}));
        return Ok(());
    }
    if all.is_empty() {
        outln!("No endpoints on {}.", c.url());
    } else {
        let mut t = Table::new(&[
            "ENDPOINT",
            "STATUS",
            "VARIANT",
            "IN SERVICE",
            "FLEET (* = fallback)",
            "PENDING",
        ]);
        for e in &all {
            let now = e["generatedAt"].as_f64().unwrap_or(0.0);
            for v in e["variants"].as_array().into_iter().flatten() {
                t.row(vec![
                    e["endpointName"].as_str().unwrap_or("").into(),
                    e["status"].as_str().unwrap_or("").into(),
                    v["variantName"].as_str().unwrap_or("").into(),
                    format!("{}/{}", v["inService"], v["desiredCount"]),
                    fleet_cell(v),
                    pending_cell(e, v, now),
                ]);
            }
        }
        out!("{}", t.render());
    }
    let backing_off: Vec<String> = capacity["instanceTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["availability"] == "BackingOff")
        .map(|r| r["instanceType"].as_str().unwrap_or("?").to_string())
        .collect();
    if !backing_off.is_empty() {
        outln!(
            "\nBacking off after insufficient capacity: {} (spillway capacity for details).",
            backing_off.join(", ")
        );
    }
    Ok(())
}

async fn explain(connect: &Connect, endpoint: &str) -> Result<(), CliError> {
    let c = connect.client()?;
    let e = explanation(&c, endpoint).await?;
    if connect.output == Output::Json {
        print_json(&e);
        return Ok(());
    }
    for s in e["summary"].as_array().into_iter().flatten() {
        outln!("{}", s.as_str().unwrap_or(""));
    }
    let now = e["generatedAt"].as_f64().unwrap_or(0.0);
    outln!("\nEvidence ({}):", iso8601(now as i64));
    for v in e["variants"].as_array().into_iter().flatten() {
        outln!(
            "\nvariant {}: {} in service, {} launching, {} wanted",
            v["variantName"].as_str().unwrap_or(""),
            v["inService"],
            v["launching"],
            v["desiredCount"]
        );
        let mut t = Table::new(&[
            "PRIORITY",
            "INSTANCE TYPE",
            "MODEL",
            "HERE",
            "PIN",
            "AVAILABILITY",
            "LAST ATTEMPT",
            "HARDWARE",
            "$/H",
        ]);
        for p in v["pools"].as_array().into_iter().flatten() {
            let pin = match p["slots"].as_u64() {
                Some(n) => format!(
                    "{n} ({}; {} in use)",
                    p["pinnedBy"].as_str().unwrap_or("config"),
                    p["inUse"]
                ),
                None => "-".into(),
            };
            let availability = match (p["availability"].as_str(), p["backoff"]["nextProbe"].as_f64()) {
                (Some("BackingOff"), Some(next)) => {
                    format!(
                        "BackingOff ×{}, probe in {}",
                        p["backoff"]["consecutiveFailures"],
                        human_seconds(next - now)
                    )
                }
                (Some(a), _) => a.to_string(),
                _ => "?".into(),
            };
            let attempt = match p["lastAttempt"].as_object() {
                Some(a) => format!(
                    "{} {} ago",
                    a.get("result").and_then(Value::as_str).unwrap_or(""),
                    human_seconds(now - a.get("time").and_then(Value::as_f64).unwrap_or(now))
                ),
                None => "-".into(),
            };
            let hw = &p["hardware"];
            let hardware = if hw["accelerators"].as_u64().unwrap_or(0) > 0 {
                format!(
                    "{} vCPU, {} GiB, {}×{} GiB accel",
                    hw["vcpus"], hw["memoryGib"], hw["accelerators"], hw["acceleratorMemoryGib"]
                )
            } else {
                format!("{} vCPU, {} GiB", hw["vcpus"], hw["memoryGib"])
            };
            t.row(vec![
                p["priority"].to_string(),
                p["instanceType"].as_str().unwrap_or("").into(),
                p["modelName"].as_str().unwrap_or("").into(),
                p["current"].to_string(),
                pin,
                availability,
                attempt,
                hardware,
                p["priceUsdPerHour"].as_f64().map_or("?".into(), |x| format!("{x:.3}")),
            ]);
        }
        out!("{}", t.render());
    }
    let events = c
        .admin_get(&format!("/_spillway/endpoints/{}/events", encode(endpoint)))
        .await?;
    let list = events["events"].as_array().cloned().unwrap_or_default();
    if !list.is_empty() {
        outln!("\nLast events (spillway events {endpoint} for all):");
        out!("{}", events_table(&list[list.len().saturating_sub(8)..]).render());
    }
    Ok(())
}

fn events_table(events: &[Value]) -> Table {
    let mut t = Table::new(&["TIME", "KIND", "VARIANT", "INSTANCE TYPE", "RESULT", "MESSAGE"]);
    for e in events {
        t.row(event_cells(e));
    }
    t
}

fn event_cells(e: &Value) -> Vec<String> {
    vec![
        iso8601(e["time"].as_f64().unwrap_or(0.0) as i64),
        e["kind"].as_str().unwrap_or("").into(),
        e["variantName"].as_str().unwrap_or("").into(),
        e["instanceType"].as_str().unwrap_or("").into(),
        e["result"].as_str().unwrap_or("").into(),
        e["message"].as_str().unwrap_or("").into(),
    ]
}

async fn events(connect: &Connect, endpoint: &str, follow: bool, since: Option<&str>) -> Result<(), CliError> {
    let c = connect.client()?;
    let path = format!("/_spillway/endpoints/{}/events", encode(endpoint));
    let first = c.admin_get(&path).await?;
    let list = first["events"].as_array().cloned().unwrap_or_default();
    let from = match since {
        Some(s) => {
            let window =
                crate::core::cost::parse_duration(s).map_err(|e| CliError::Invalid(format!("--since: {e}")))?;
            let latest = list.last().and_then(|e| e["time"].as_f64()).unwrap_or(0.0);
            // The server's clock is the reference: the newest event, or the explain answer's time.
            let now = match explanation(&c, endpoint).await {
                Ok(v) => v["generatedAt"].as_f64().unwrap_or(latest),
                Err(_) => latest,
            };
            now - window
        }
        None => f64::MIN,
    };
    let shown: Vec<Value> = list
        .iter()
        .filter(|e| e["time"].as_f64().unwrap_or(0.0) >= from)
        .cloned()
        .collect();
    if !follow {
        if connect.output == Output::Json {
            print_json(&json!({"events": shown}));
        } else {
            out!("{}", events_table(&shown).render());
        }
        return Ok(());
    }
    // Following: one line (or one JSON object) per event, flushed as it comes.
    let mut seen = list.len();
    // Widths fixed up front (a stream cannot be aligned afterwards): the message takes the rest.
    const WIDTHS: [usize; 5] = [20, 18, 12, 16, 20];
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            match WIDTHS.get(i) {
                Some(w) => l.push_str(&format!("{c:<w$}  ")),
                None => l.push_str(&c),
            }
        }
        l.trim_end().to_string()
    };
    if connect.output != Output::Json {
        outln!(
            "{}",
            line(
                ["TIME", "KIND", "VARIANT", "INSTANCE TYPE", "RESULT", "MESSAGE"]
                    .map(String::from)
                    .to_vec()
            )
        );
    }
    let print = |e: &Value| {
        if connect.output == Output::Json {
            outln!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            outln!("{}", line(event_cells(e)));
        }
    };
    for e in &shown {
        print(e);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let page = match c.admin_get(&path).await {
            Ok(p) => p,
            Err(CliError::NotFound(_)) => {
                eprintln!("spillway: endpoint {endpoint} is gone; stopped following");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let list = page["events"].as_array().cloned().unwrap_or_default();
        for e in list.iter().skip(seen) {
            print(e);
        }
        seen = seen.max(list.len());
    }
}

async fn capacity(connect: &Connect, action: Option<CapacityAction>) -> Result<(), CliError> {
    let c = connect.client()?;
    let answer = match &action {
        None => c.admin_get("/_spillway/capacity").await?,
        Some(CapacityAction::Set { instance_type, slots }) => {
            c.admin(
                "PUT",
                &format!("/_spillway/capacity/{}", encode(instance_type)),
                json!({"slots": slots}).to_string().as_bytes(),
            )
            .await?
        }
        Some(CapacityAction::Clear { instance_type }) => {
            c.admin("DELETE", &format!("/_spillway/capacity/{}", encode(instance_type)), b"")
                .await?
        }
        Some(CapacityAction::Reclaim {
            instance_type,
            endpoint,
        }) => {
            let mut path = format!("/_spillway/capacity/{}/reclaim", encode(instance_type));
            if let Some(e) = endpoint {
                path.push_str(&format!("?endpoint={}", encode(e)));
            }
            c.admin("POST", &path, b"").await?
        }
    };
    if connect.output == Output::Json {
        print_json(&answer);
        return Ok(());
    }
    match action {
        None => {
            let list = answer["instanceTypes"].as_array().cloned().unwrap_or_default();
            outln!("provider: {}", answer["provider"].as_str().unwrap_or("?"));
            if list.is_empty() {
                outln!("No instance type is pinned, in use or backing off.");
                return Ok(());
            }
            let mut t = Table::new(&[
                "INSTANCE TYPE",
                "PIN",
                "IN USE",
                "AVAILABILITY",
                "NEXT PROBE",
                "LAST ANSWER",
            ]);
            for r in &list {
                let pin = match r["slots"].as_u64() {
                    Some(n) => format!("{n} ({})", r["pinnedBy"].as_str().unwrap_or("config")),
                    None => "-".into(),
                };
                t.row(vec![
                    r["instanceType"].as_str().unwrap_or("").into(),
                    pin,
                    r["inUse"].to_string(),
                    r["availability"].as_str().unwrap_or("").into(),
                    r["nextProbe"].as_f64().map_or("-".into(), |n| iso8601(n.ceil() as i64)),
                    r["reason"].as_str().unwrap_or("").into(),
                ]);
            }
            out!("{}", t.render());
        }
        Some(CapacityAction::Set { instance_type, slots }) => {
            outln!("{instance_type} pinned to {slots} slot(s); {} in use.", answer["inUse"])
        }
        Some(CapacityAction::Clear { instance_type }) => outln!(
            "{instance_type}: run-time pin removed; now {}.",
            match answer["slots"].as_u64() {
                Some(n) => format!("{n} slot(s) from the config file"),
                None => "decided by what this host's hardware fits".into(),
            }
        ),
        Some(CapacityAction::Reclaim { instance_type, .. }) => outln!(
            "{instance_type}: {} instance(s) taken away; each is replaced through its pools (spillway events ENDPOINT).",
            answer["reclaimed"]
        ),
    }
    Ok(())
}

async fn cost(connect: &Connect, endpoint: Option<&str>, since: &str) -> Result<(), CliError> {
    crate::core::cost::parse_duration(since).map_err(|e| CliError::Invalid(format!("--since: {e}")))?;
    let c = connect.client()?;
    let mut path = format!("/_spillway/cost?since={}", encode(since));
    if let Some(e) = endpoint {
        path.push_str(&format!("&endpoint={}", encode(e)));
    }
    let answer = c.admin_get(&path).await?;
    if connect.output == Output::Json {
        print_json(&answer);
        return Ok(());
    }
    let list = answer["endpoints"].as_array().cloned().unwrap_or_default();
    outln!(
        "From {} to {} (fleet sampled every {} s; on-demand prices of the catalog, us-east-1).",
        iso8601(answer["since"].as_f64().unwrap_or(0.0) as i64),
        iso8601(answer["until"].as_f64().unwrap_or(0.0) as i64),
        answer["sampleSeconds"]
    );
    if list.is_empty() {
        outln!("No endpoint held instances in that window.");
    }
    for e in &list {
        outln!("\n{}", e["endpointName"].as_str().unwrap_or(""));
        let mut t = Table::new(&["INSTANCE TYPE", "INSTANCE-HOURS", "$/H", "COST $", "NOW"]);
        for ty in e["types"].as_array().into_iter().flatten() {
            t.row(vec![
                ty["instanceType"].as_str().unwrap_or("").into(),
                format!("{:.3}", ty["instanceHours"].as_f64().unwrap_or(0.0)),
                ty["priceUsdPerHour"].as_f64().map_or("?".into(), |p| format!("{p:.3}")),
                format!("{:.2}", ty["costUsd"].as_f64().unwrap_or(0.0)),
                ty["current"].to_string(),
            ]);
        }
        out!("{}", t.render());
        let f = |k: &str| e[k].as_f64().unwrap_or(0.0);
        outln!(
            "total ${:.2} for {:.3} instance-hours; on preferred types only ${:.2}; fallback cost {}${:.2}",
            f("costUsd"),
            f("instanceHours"),
            f("allPreferredCostUsd"),
            if f("fallbackCostUsd") < 0.0 { "-" } else { "+" },
            f("fallbackCostUsd").abs()
        );
        let mut now = format!("now ${:.2}/h", f("hourlyCostUsd"));
        if let Some(m) = e["maxHourlyCostUsd"].as_f64() {
            now.push_str(&format!(" (ceiling ${m:.2}/h)"));
        }
        if f("unpricedInstanceHours") > 0.0 {
            now.push_str(&format!(
                "; {:.3} instance-hours have no known price (not in the total)",
                f("unpricedInstanceHours")
            ));
        }
        if f("uncomparedInstanceHours") > f("unpricedInstanceHours") {
            now.push_str(&format!(
                "; {:.3} instance-hours are left out of the comparison (their preferred type has no known price)",
                f("uncomparedInstanceHours") - f("unpricedInstanceHours")
            ));
        }
        outln!("{now}");
    }
    Ok(())
}
