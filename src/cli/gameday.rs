//! `spillway gameday ENDPOINT --take TYPE`: the production checklist's negative test as a
//! command. It takes TYPE away (pins it to 0 slots and reclaims its instances, as a provider
//! losing that capacity), watches the fleet fall back through the pools, keeps the type away
//! for `--for`, gives it back, and (when the endpoint rebalances) watches the fleet return,
//! invoking the endpoint throughout. The verdict: the endpoint stayed `InService`, fell back
//! (and returned) within `--timeout`, and no more than `--max-error-rate` of the invocations
//! failed. It writes a Markdown report, tags the endpoint `spillway:last-gameday` with the
//! result (what `spillway runbook` shows) and exits 0 on PASS, 1 on FAIL.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::client::{CliError, Client, encode};
use super::{Connect, Output, explanation};
use crate::clock::Clock;
use crate::core::cost::parse_duration;
use crate::core::time::iso8601;

/// The tag a game day leaves on the endpoint: its verdict, when, and its timings.
pub const LAST_GAMEDAY_TAG: &str = "spillway:last-gameday";

/// `spillway gameday` arguments.
#[derive(Args, Debug, Clone)]
pub struct GamedayArgs {
    /// The endpoint.
    pub endpoint: String,
    /// The instance type to take away (usually the preferred one).
    #[arg(long)]
    pub take: String,
    /// How long the type stays away once the fleet has fallen back (e.g. 30s, 10m).
    #[arg(long = "for", default_value = "1m")]
    pub hold: String,
    /// The longest each wait (fall back, return) may take before the game day fails.
    #[arg(long, default_value = "15m")]
    pub timeout: String,
    /// Seconds between two invocations.
    #[arg(long, default_value_t = 0.25)]
    pub interval: f64,
    /// The share of failed invocations still accepted (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub max_error_rate: f64,
    /// The body each invocation sends (`application/json`).
    #[arg(long, default_value = r#"{"inputs": "spillway gameday"}"#)]
    pub body: String,
    /// Go on when other endpoints also list the type in their pools (the pin is server-wide:
    /// they cannot launch on it while it is away; only ENDPOINT's instances are reclaimed).
    #[arg(long)]
    pub force: bool,
    /// Where the Markdown report goes (default: gameday-ENDPOINT-TIME.md here).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Connection and output.
    #[command(flatten)]
    pub connect: Connect,
}

/// What the invoker saw.
#[derive(Debug, Default, Clone)]
struct Invocations {
    ok: u64,
    failed: u64,
    /// `(seconds since start, status, error code or answering type)` of the failures (first 20).
    failures: Vec<(f64, u16, String)>,
    /// Answers per instance type.
    by_type: Fleet,
}

/// One phase's timing.
#[derive(Debug, Clone)]
struct Phase {
    name: &'static str,
    seconds: Option<f64>,
    note: String,
}

/// A fleet: instance type → instances.
type Fleet = std::collections::BTreeMap<String, u64>;

/// The fleet of the explain answer over every variant: every instance (any phase), the
/// instances in service, and whether every variant has exactly its desired count in service
/// and nothing launching or stopping.
fn fleet(e: &Value) -> (Fleet, Fleet, bool) {
    let mut all = Fleet::new();
    let mut serving = Fleet::new();
    let mut settled = true;
    for v in e["variants"].as_array().into_iter().flatten() {
        let desired = v["desiredCount"].as_u64().unwrap_or(0);
        let mut held = 0;
        for p in v["pools"].as_array().into_iter().flatten() {
            let t = p["instanceType"].as_str().unwrap_or("?").to_string();
            let n = p["current"].as_u64().unwrap_or(0);
            let s = p["inService"].as_u64().unwrap_or(0);
            held += n;
            if n > 0 {
                *all.entry(t.clone()).or_insert(0) += n;
            }
            if s > 0 {
                *serving.entry(t).or_insert(0) += s;
            }
        }
        if v["inService"].as_u64().unwrap_or(0) != desired || held != desired {
            settled = false;
        }
    }
    (all, serving, settled)
}

fn fleet_text(f: &Fleet) -> String {
    if f.is_empty() {
        return "no instances".into();
    }
    f.iter().map(|(t, n)| format!("{t}×{n}")).collect::<Vec<_>>().join(" ")
}

/// Runs a game day.
pub async fn run(args: GamedayArgs) -> Result<(), CliError> {
    let hold = parse_duration(&args.hold).map_err(|e| CliError::Invalid(format!("--for: {e}")))?;
    let timeout = parse_duration(&args.timeout).map_err(|e| CliError::Invalid(format!("--timeout: {e}")))?;
    if !(0.01..=60.0).contains(&args.interval) {
        return Err(CliError::Invalid("--interval: expected 0.01 to 60 seconds".into()));
    }
    if !(0.0..=1.0).contains(&args.max_error_rate) {
        return Err(CliError::Invalid("--max-error-rate: expected 0 to 1".into()));
    }
    let client = Arc::new(args.connect.client()?);
    let clock = Clock::wall();
    let started_at = clock.now();
    let t0 = clock.instant();
    let endpoint = args.endpoint.clone();
    let ty = args.take.clone();

    // Before: the endpoint must serve, and TYPE must be one of its pools.
    let before = explanation(&client, &endpoint).await?;
    if before["status"] != "InService" {
        return Err(CliError::Invalid(format!(
            "{endpoint} is {} before the game day; it must be InService (nothing was changed)",
            before["status"].as_str().unwrap_or("?")
        )));
    }
    let pools: Vec<String> = before["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["pools"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["instanceType"].as_str().map(str::to_string))
        .collect();
    if !pools.contains(&ty) {
        return Err(CliError::Invalid(format!(
            "--take {ty}: not a pool of {endpoint} (its pools: {})",
            pools.join(", ")
        )));
    }
    // The pin is server-wide: other endpoints that list TYPE cannot launch on it while it is
    // away (their running instances are not touched). Say so, and go on only if asked to.
    let mut others = vec![];
    for name in super::endpoint_names(&client).await? {
        if name == endpoint {
            continue;
        }
        if let Ok(e) = explanation(&client, &name).await
            && e["variants"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|v| v["pools"].as_array().cloned().unwrap_or_default())
                .any(|p| p["instanceType"] == ty.as_str())
        {
            others.push(name);
        }
    }
    if !others.is_empty() && !args.force {
        return Err(CliError::Invalid(format!(
            "--take {ty}: the pin to 0 slots is server-wide, and {} also list {ty} in their pools: while it is away they cannot launch on it either (their running instances are not touched). Run it where {endpoint} is alone on {ty}, or add --force (nothing was changed)",
            others.join(", ")
        )));
    }
    let (_, fleet_before, _) = fleet(&before);
    if !fleet_before.contains_key(&ty) {
        return Err(CliError::Invalid(format!(
            "--take {ty}: none of {endpoint}'s instances runs on it ({}), so taking it away would test nothing; take a type it runs on (nothing was changed)",
            fleet_text(&fleet_before)
        )));
    }
    let rebalances = before["rebalance"]["enabled"].as_bool().unwrap_or(false);
    let min_runtime = before["rebalance"]["minRuntimeSeconds"].as_f64().unwrap_or(0.0);
    if rebalances && min_runtime - hold + 60.0 > timeout {
        let say = format!(
            "gameday: note: fallback instances are replaced only once they have run [rebalance] min_runtime_seconds = {min_runtime:.0}s, so the return takes about {:.0}s after the type is given back; --timeout {} may be too short for it",
            (min_runtime - hold).max(0.0),
            args.timeout
        );
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{say}");
    }
    let capacity = client.admin_get("/_spillway/capacity").await?;
    let original_pin = capacity["instanceTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["instanceType"] == ty.as_str())
        .and_then(|r| match r["pinnedBy"].as_str() {
            Some("runtime") => r["slots"].as_u64(),
            _ => None,
        });

    // Interrupted (Ctrl-C), the type is given back before the command exits.
    let play = play(PlayArgs {
        args: &args,
        client: &client,
        endpoint: &endpoint,
        ty: &ty,
        hold,
        timeout,
        started_at,
        clock,
        t0,
        fleet_before: &fleet_before,
        rebalances,
        original_pin,
    });
    // SIGTERM (a CI job's timeout) and SIGHUP (a closed terminal) too.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(t), Ok(h)) => (t, h),
        _ => return Err(CliError::Io("cannot install the signal handlers".into())),
    };
    tokio::select! {
        r = play => r,
        _ = tokio::signal::ctrl_c() => interrupted(&client, &ty, original_pin, "Ctrl-C").await,
        _ = term.recv() => interrupted(&client, &ty, original_pin, "SIGTERM").await,
        _ = hup.recv() => interrupted(&client, &ty, original_pin, "SIGHUP").await,
    }
}

/// Gives the type back after a signal; the error the command ends with.
async fn interrupted(client: &Client, ty: &str, pin: Option<u64>, what: &str) -> Result<(), CliError> {
    restore(client, ty, pin).await;
    Err(CliError::Interrupted(format!(
        "game day interrupted ({what}): {ty} given back; no verdict"
    )))
}

/// What the game day's main part works with.
struct PlayArgs<'a> {
    args: &'a GamedayArgs,
    client: &'a Arc<Client>,
    endpoint: &'a str,
    ty: &'a str,
    hold: f64,
    timeout: f64,
    started_at: f64,
    clock: Clock,
    t0: tokio::time::Instant,
    fleet_before: &'a Fleet,
    rebalances: bool,
    original_pin: Option<u64>,
}

/// Takes the type away, watches, gives it back, judges and reports.
async fn play(p: PlayArgs<'_>) -> Result<(), CliError> {
    let PlayArgs {
        args,
        client,
        endpoint,
        ty,
        hold,
        timeout,
        started_at,
        clock,
        t0,
        fleet_before,
        rebalances,
        original_pin,
    } = p;
    let elapsed = move || clock.since(t0).as_secs_f64();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let say = |bar: &indicatif::ProgressBar, line: String| {
        if bar.is_hidden() {
            // A closed stderr (a pipe whose reader died) must not stop the game day before it
            // gives the type back.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "gameday: {line}");
        } else {
            bar.println(format!("gameday: {line}"));
        }
    };
    say(
        &bar,
        format!(
            "{endpoint} is InService on {}; taking {ty} away",
            fleet_text(fleet_before)
        ),
    );

    // The invoker runs from now to the end.
    let stop = Arc::new(AtomicBool::new(false));
    let invoker = {
        let client = client.clone();
        let stop = stop.clone();
        let path = format!("/endpoints/{}/invocations", encode(endpoint));
        let body = args.body.clone().into_bytes();
        let interval = Duration::from_secs_f64(args.interval);
        tokio::spawn(async move {
            let mut seen = Invocations::default();
            while !stop.load(Ordering::Relaxed) {
                let a = client
                    .send(
                        "POST",
                        &path,
                        "sagemaker",
                        &[("content-type", "application/json")],
                        &body,
                    )
                    .await;
                match a {
                    Ok(a) if a.status == 200 => {
                        seen.ok += 1;
                        let t = a
                            .headers
                            .get("x-spillway-instance-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("?")
                            .to_string();
                        *seen.by_type.entry(t).or_insert(0) += 1;
                    }
                    Ok(a) => {
                        seen.failed += 1;
                        if seen.failures.len() < 20 {
                            let code = a
                                .headers
                                .get("x-amzn-errortype")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            seen.failures.push((elapsed(), a.status, code));
                        }
                    }
                    Err(e) => {
                        seen.failed += 1;
                        if seen.failures.len() < 20 {
                            seen.failures.push((elapsed(), 0, e.to_string()));
                        }
                    }
                }
                tokio::time::sleep(interval).await;
            }
            seen
        })
    };

    let mut statuses: Vec<(f64, String)> = vec![(0.0, "InService".into())];
    let mut phases: Vec<Phase> = vec![];
    let mut verdict: Result<(), String> = Ok(());

    // Take the type away.
    let took = async {
        client
            .admin(
                "PUT",
                &format!("/_spillway/capacity/{}", encode(ty)),
                json!({"slots": 0}).to_string().as_bytes(),
            )
            .await?;
        client
            .admin(
                "POST",
                &format!(
                    "/_spillway/capacity/{}/reclaim?endpoint={}",
                    encode(ty),
                    encode(endpoint)
                ),
                b"",
            )
            .await
    }
    .await;
    let taken_at = elapsed();
    let reclaimed = match took {
        Ok(v) => v["reclaimed"].as_u64().unwrap_or(0),
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            let _ = invoker.await;
            restore(client, ty, original_pin).await;
            return Err(e);
        }
    };
    say(
        &bar,
        format!("{ty} pinned to 0 slots; {reclaimed} instance(s) reclaimed"),
    );

    // Wait until the fleet is whole again without TYPE.
    let fell_back = watch(
        client,
        endpoint,
        &bar,
        &mut statuses,
        &elapsed,
        timeout,
        &format!("waiting for the fleet to fall back from {ty}"),
        |all, _, settled| settled && !all.contains_key(ty),
    )
    .await;
    let fallback_fleet = match &fell_back {
        Ok(f) => {
            let s = elapsed() - taken_at;
            say(&bar, format!("fell back in {s:.1}s: {}", fleet_text(f)));
            phases.push(Phase {
                name: "fall back",
                seconds: Some(s),
                note: fleet_text(f),
            });
            Some(f.clone())
        }
        Err(why) => {
            phases.push(Phase {
                name: "fall back",
                seconds: None,
                note: why.clone(),
            });
            verdict = Err(format!("the fleet did not fall back: {why}"));
            None
        }
    };

    // Keep the type away, still invoking.
    if verdict.is_ok() && hold > 0.0 {
        bar.set_message(format!("holding {ty} away for {}", args.hold));
        let until = elapsed() + hold;
        while elapsed() < until {
            if let Ok(e) = explanation(client, endpoint).await {
                note_status(&mut statuses, elapsed(), &e);
            }
            tokio::time::sleep(Duration::from_secs(1).min(Duration::from_secs_f64((until - elapsed()).max(0.01))))
                .await;
        }
    }

    // Give it back.
    let restored_at = elapsed();
    restore(client, ty, original_pin).await;
    say(
        &bar,
        format!(
            "{ty} given back ({})",
            original_pin.map_or("run-time pin removed".into(), |n| format!("pinned to {n} again"))
        ),
    );
    let had_type = fleet_before.get(ty).copied().unwrap_or(0);
    if verdict.is_ok() {
        if !rebalances {
            phases.push(Phase {
                name: "return",
                seconds: None,
                note: "not checked: rebalancing is off for this endpoint (tag spillway:rebalance=enabled)".into(),
            });
        } else if had_type == 0 {
            phases.push(Phase {
                name: "return",
                seconds: None,
                note: format!("not checked: no instance ran on {ty} before the game day"),
            });
        } else {
            let back = watch(
                client,
                endpoint,
                &bar,
                &mut statuses,
                &elapsed,
                timeout,
                &format!("waiting for the fleet to return to {ty} (rebalancing)"),
                |_, serving, settled| settled && serving.get(ty).copied().unwrap_or(0) >= had_type,
            )
            .await;
            match back {
                Ok(f) => {
                    let s = elapsed() - restored_at;
                    say(&bar, format!("returned in {s:.1}s: {}", fleet_text(&f)));
                    phases.push(Phase {
                        name: "return",
                        seconds: Some(s),
                        note: fleet_text(&f),
                    });
                }
                Err(why) => {
                    phases.push(Phase {
                        name: "return",
                        seconds: None,
                        note: why.clone(),
                    });
                    verdict = Err(format!("the fleet did not return to {ty}: {why}"));
                }
            }
        }
    }

    stop.store(true, Ordering::Relaxed);
    let seen = invoker.await.unwrap_or_default();
    bar.finish_and_clear();
    let total = seen.ok + seen.failed;
    let error_rate = if total == 0 {
        1.0
    } else {
        seen.failed as f64 / total as f64
    };
    if verdict.is_ok() {
        if total == 0 {
            verdict = Err("no invocation was made".into());
        } else if error_rate > args.max_error_rate {
            verdict = Err(format!(
                "{} of {total} invocations failed ({:.2}%, more than --max-error-rate {})",
                seen.failed,
                error_rate * 100.0,
                args.max_error_rate
            ));
        }
    }
    if let Some((t, s)) = statuses.iter().find(|(_, s)| s != "InService")
        && verdict.is_ok()
    {
        verdict = Err(format!("the endpoint left InService: {s} at +{t:.1}s"));
    }
    // Every failed criterion is named, not only the first.
    if let Err(why) = &mut verdict
        && total > 0
        && error_rate > args.max_error_rate
        && !why.contains("invocations failed")
    {
        why.push_str(&format!(
            "; also {} of {total} invocations failed (--max-error-rate {})",
            seen.failed, args.max_error_rate
        ));
    }

    let passed = verdict.is_ok();
    let report = Report {
        endpoint,
        instance_type: ty,
        started_at,
        duration: elapsed(),
        fleet_before,
        fallback_fleet: fallback_fleet.as_ref(),
        phases: &phases,
        statuses: &statuses,
        invocations: &seen,
        verdict: &verdict,
        rebalances,
    };
    let markdown = report.markdown();
    let path = args.report.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "gameday-{endpoint}-{}.md",
            iso8601(started_at as i64).replace(':', "")
        ))
    });
    std::fs::write(&path, &markdown).map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    let summary = report.tag_value();
    let tagged = tag_result(client, endpoint, &summary).await;

    if args.connect.output == Output::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report.json(&path, tagged.as_ref().err())).unwrap_or_default()
        );
    } else {
        outln!("{summary}");
        outln!("report: {}", path.display());
        if let Err(e) = &tagged {
            outln!("(the result was not tagged on the endpoint: {e})");
        }
    }
    match verdict {
        Ok(()) => {
            debug_assert!(passed);
            Ok(())
        }
        Err(why) => Err(CliError::CheckFailed(format!("game day FAILED: {why}"))),
    }
}

/// Puts TYPE's pin back as it was: the run-time pin it had, or none.
async fn restore(client: &Client, ty: &str, pin: Option<u64>) {
    let path = format!("/_spillway/capacity/{}", encode(ty));
    let r = match pin {
        Some(n) => {
            client
                .admin("PUT", &path, json!({"slots": n}).to_string().as_bytes())
                .await
        }
        None => client.admin("DELETE", &path, b"").await,
    };
    if let Err(e) = r {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "gameday: cannot give {ty} back ({e}); run `spillway capacity clear {ty}`"
        );
    }
}

fn note_status(statuses: &mut Vec<(f64, String)>, t: f64, e: &Value) {
    let s = e["status"].as_str().unwrap_or("?").to_string();
    if statuses.last().map(|(_, l)| l) != Some(&s) {
        statuses.push((t, s));
    }
}

/// Polls the explanation each second until `done(fleet, complete)` or `timeout` seconds pass.
#[allow(clippy::too_many_arguments)]
async fn watch(
    client: &Client,
    endpoint: &str,
    bar: &indicatif::ProgressBar,
    statuses: &mut Vec<(f64, String)>,
    elapsed: &dyn Fn() -> f64,
    timeout: f64,
    what: &str,
    done: impl Fn(&Fleet, &Fleet, bool) -> bool,
) -> Result<Fleet, String> {
    let start = elapsed();
    let mut last = String::new();
    loop {
        let e = explanation(client, endpoint).await.map_err(|e| e.to_string())?;
        note_status(statuses, elapsed(), &e);
        let (all, f, settled) = fleet(&e);
        if done(&all, &f, settled) {
            return Ok(f);
        }
        if e["status"] == "Failed" {
            return Err(format!(
                "the endpoint failed: {}",
                e["failureReason"].as_str().unwrap_or("")
            ));
        }
        let waited = elapsed() - start;
        if waited > timeout {
            // What the server says the fleet waits for (rebalancing's minimum runtime, a
            // ceiling, back-off), from the explanation's sentences.
            let why: Vec<&str> = e["summary"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|l| l.starts_with("Rebalancing") || l.starts_with("Provisioning"))
                .collect();
            let mut msg = format!("still {} after {waited:.0}s (--timeout)", fleet_text(&f));
            if !why.is_empty() {
                msg.push_str(&format!("; the server says: {}", why.join(" ")));
            }
            return Err(msg);
        }
        let now_text = fleet_text(&f);
        if now_text != last {
            last = now_text;
        }
        bar.set_message(format!("{what}: {last} ({waited:.0}s)"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tags the endpoint with the result; the error when it cannot (e.g. no `sagemaker:AddTags`).
async fn tag_result(client: &Client, endpoint: &str, summary: &str) -> Result<(), CliError> {
    let d = client
        .sagemaker("DescribeEndpoint", json!({"EndpointName": endpoint}))
        .await?;
    let arn = d["EndpointArn"].as_str().unwrap_or_default();
    let value: String = summary.chars().take(256).collect();
    client
        .sagemaker(
            "AddTags",
            json!({"ResourceArn": arn, "Tags": [{"Key": LAST_GAMEDAY_TAG, "Value": value}]}),
        )
        .await
        .map(|_| ())
}

struct Report<'a> {
    endpoint: &'a str,
    instance_type: &'a str,
    started_at: f64,
    duration: f64,
    fleet_before: &'a Fleet,
    fallback_fleet: Option<&'a Fleet>,
    phases: &'a [Phase],
    statuses: &'a [(f64, String)],
    invocations: &'a Invocations,
    verdict: &'a Result<(), String>,
    rebalances: bool,
}

impl Report<'_> {
    fn word(&self) -> &'static str {
        if self.verdict.is_ok() { "PASS" } else { "FAIL" }
    }

    fn phase_seconds(&self, name: &str) -> String {
        self.phases
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.seconds)
            .map_or("-".into(), |s| format!("{s:.1}s"))
    }

    /// One line, also the tag's value: `PASS 2026-11-30T13:00:00Z take ml.g6e.2xlarge fallback 12.3s return 40.1s errors 0/480`.
    fn tag_value(&self) -> String {
        format!(
            "{} {} take {} fallback {} return {} errors {}/{}",
            self.word(),
            iso8601(self.started_at as i64),
            self.instance_type,
            self.phase_seconds("fall back"),
            self.phase_seconds("return"),
            self.invocations.failed,
            self.invocations.ok + self.invocations.failed
        )
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "# Game day: {} without {}\n\n**{}**{}\n\n",
            self.endpoint,
            self.instance_type,
            self.word(),
            match self.verdict {
                Ok(()) => String::new(),
                Err(why) => format!(": {why}"),
            }
        );
        s.push_str(&format!(
            "- started {} and took {:.1}s\n- fleet before: {}\n- fleet without {}: {}\n- rebalancing: {}\n\n",
            iso8601(self.started_at as i64),
            self.duration,
            fleet_text(self.fleet_before),
            self.instance_type,
            self.fallback_fleet.map_or("-".into(), fleet_text),
            if self.rebalances { "on" } else { "off" }
        ));
        s.push_str("| phase | took | fleet / note |\n|---|---|---|\n");
        for p in self.phases {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                p.name,
                p.seconds.map_or("-".into(), |x| format!("{x:.1}s")),
                p.note
            ));
        }
        let i = self.invocations;
        s.push_str(&format!(
            "\n## Invocations\n\n{} answered, {} failed.\n\n",
            i.ok, i.failed
        ));
        if !i.by_type.is_empty() {
            s.push_str("| answered by | invocations |\n|---|---|\n");
            for (t, n) in &i.by_type {
                s.push_str(&format!("| {t} | {n} |\n"));
            }
        }
        if !i.failures.is_empty() {
            s.push_str("\nFailures (first 20):\n\n");
            for (t, status, what) in &i.failures {
                s.push_str(&format!("- +{t:.1}s HTTP {status} {what}\n"));
            }
        }
        s.push_str("\n## Endpoint status\n\n");
        for (t, st) in self.statuses {
            s.push_str(&format!("- +{t:.1}s {st}\n"));
        }
        s.push_str(&format!(
            "\nThe evidence: `spillway events {}` and `spillway explain {}`.\n",
            self.endpoint, self.endpoint
        ));
        s
    }

    fn json(&self, path: &std::path::Path, tag_error: Option<&CliError>) -> Value {
        json!({
            "result": self.word(),
            "reason": self.verdict.as_ref().err(),
            "endpointName": self.endpoint,
            "instanceType": self.instance_type,
            "startedAt": self.started_at,
            "durationSeconds": self.duration,
            "fleetBefore": self.fleet_before,
            "fallbackFleet": self.fallback_fleet,
            "phases": self.phases.iter().map(|p| json!({"phase": p.name, "seconds": p.seconds, "note": p.note})).collect::<Vec<_>>(),
            "statuses": self.statuses.iter().map(|(t, s)| json!({"at": t, "status": s})).collect::<Vec<_>>(),
            "invocations": {"ok": self.invocations.ok, "failed": self.invocations.failed, "byInstanceType": self.invocations.by_type},
            "report": path.display().to_string(),
            "tagged": tag_error.is_none(),
            "summary": self.tag_value(),
        })
    }
}
