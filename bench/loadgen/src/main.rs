//! Open-loop, fixed-rate HTTP/1.1 load generator (what `wrk2 -R` does; Debian has no wrk2).
//!
//! A pacer thread releases one "ticket" per request at its *intended* send time
//! `t0 + i / rate`, independently of how fast the server answers. A pool of keep-alive
//! connections (one tokio task each, on one thread) takes tickets in order. Latency is
//! recorded from the ticket's intended time to the end of the response body, so a slow
//! response delays the requests queued behind it and that delay is counted: no coordinated
//! omission. The latency from the actual send is recorded too ("service time", what a
//! closed-loop tool reports), and the schedule lag (actual send minus intended) shows how far
//! the generator itself fell behind.
//!
//! Usage: spillway-loadgen --url http://127.0.0.1:8080/invocations --rate 5000 --duration 10
//!        [--connections 32] [--warmup 2] [--body '{"x":1}'] [--content-type application/json]
//!
//! Prints one line of `key=value` pairs (latencies in microseconds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, Mutex};

struct Args {
    host: String,
    port: u16,
    path: String,
    rate: f64,
    duration: f64,
    warmup: f64,
    connections: usize,
    body: Bytes,
    content_type: String,
    /// SigV4 headers bench/run.sh computed (`BENCH_AUTHORIZATION`, `BENCH_AMZ_DATE`).
    headers: Vec<(String, String)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        host: String::new(),
        port: 80,
        path: "/".into(),
        rate: 1000.0,
        duration: 10.0,
        warmup: 2.0,
        connections: 32,
        body: Bytes::from_static(br#"{"instances":[[0.1,0.2,0.3,0.4]],"id":"bench-0001"}"#),
        content_type: "application/json".into(),
        headers: [("authorization", "BENCH_AUTHORIZATION"), ("x-amz-date", "BENCH_AMZ_DATE")]
            .iter()
            .filter_map(|(h, var)| std::env::var(var).ok().map(|v| (h.to_string(), v)))
            .collect(),
    };
    let mut url = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--url" => url = Some(v),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--duration" => a.duration = v.parse().expect("--duration"),
            "--warmup" => a.warmup = v.parse().expect("--warmup"),
            "--connections" => a.connections = v.parse().expect("--connections"),
            "--body" => a.body = Bytes::from(v.into_bytes()),
            "--content-type" => a.content_type = v,
            _ => panic!("unknown argument {k}"),
        }
    }
    let url = url.expect("--url http://host:port/path");
    let rest = url.strip_prefix("http://").expect("only http:// URLs");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().expect("port")),
        None => (authority.to_string(), 80),
    };
    a.host = host;
    a.port = port;
    a.path = path.to_string();
    a
}

#[derive(Default)]
struct Stats {
    corrected: Option<Histogram<u64>>,
    service: Option<Histogram<u64>>,
    lag: Option<Histogram<u64>>,
    ok: u64,
    errors: u64,
    non_2xx: u64,
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

async fn connect(args: &Args) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect((args.host.as_str(), args.port)).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn main() {
    let args = Arc::new(parse_args());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

async fn run(args: Arc<Args>) {
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(connect(&args).await.expect("connect"));
    }
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let stats = Arc::new(std::sync::Mutex::new(Stats {
        corrected: Some(hist()),
        service: Some(hist()),
        lag: Some(hist()),
        ..Stats::default()
    }));

    let t0 = Instant::now() + Duration::from_millis(20);
    let measure_from = t0 + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let interval = 1.0 / args.rate;

    // The pacer: a plain thread with nanosleep, finer than tokio's 1 ms timer wheel.
    let pacer = std::thread::spawn(move || {
        // Wake on time: the default 50 µs timer slack would delay every send.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
        let mut i: u64 = 0;
        loop {
            let intended = t0 + Duration::from_secs_f64(i as f64 * interval);
            if intended >= end {
                break;
            }
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if tx.send(intended).is_err() {
                break;
            }
            i += 1;
        }
    });

    let mut tasks = Vec::new();
    for mut sender in senders {
        let rx = rx.clone();
        let stats = stats.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let authority = format!("{}:{}", args.host, args.port);
            loop {
                let intended = {
                    let mut rx = rx.lock().await;
                    match rx.recv().await {
                        Some(t) => t,
                        None => break,
                    }
                };
                let sent = Instant::now();
                let mut req = hyper::Request::post(args.path.as_str())
                    .header("host", authority.as_str())
                    .header("content-type", args.content_type.as_str());
                for (k, v) in &args.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let req = req.body(Full::new(args.body.clone())).expect("request");
                let result = async {
                    if sender.ready().await.is_err() {
                        return Err(());
                    }
                    let resp = sender.send_request(req).await.map_err(|_| ())?;
                    let status = resp.status();
                    resp.into_body().collect().await.map_err(|_| ())?;
                    Ok(status)
                }
                .await;
                let done = Instant::now();
                let failed = {
                    let mut s = stats.lock().unwrap();
                    match result {
                        Ok(status) if intended >= measure_from => {
                            if !status.is_success() {
                                s.non_2xx += 1;
                            }
                            s.ok += 1;
                            let us = |d: Duration| (d.as_micros() as u64).max(1);
                            let _ = s.corrected.as_mut().unwrap().record(us(done - intended));
                            let _ = s.service.as_mut().unwrap().record(us(done - sent));
                            let _ = s
                                .lag
                                .as_mut()
                                .unwrap()
                                .record(us(sent.saturating_duration_since(intended)));
                            false
                        }
                        Ok(_) => false,
                        Err(()) => {
                            s.errors += 1;
                            true
                        }
                    }
                };
                if failed {
                    match connect(&args).await {
                        Ok(c) => sender = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = pacer.join();
    let elapsed = args.duration;
    let s = stats.lock().unwrap();
    let c = s.corrected.as_ref().unwrap();
    let sv = s.service.as_ref().unwrap();
    let lag = s.lag.as_ref().unwrap();
    println!(
        "target_rps={:.0} achieved_rps={:.0} requests={} errors={} non2xx={} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={} \
         svc_p50_us={} svc_p99_us={} svc_p999_us={} lag_p50_us={} lag_p99_us={}",
        args.rate,
        s.ok as f64 / elapsed,
        s.ok,
        s.errors,
        s.non_2xx,
        c.value_at_quantile(0.50),
        c.value_at_quantile(0.90),
        c.value_at_quantile(0.99),
        c.value_at_quantile(0.999),
        c.max(),
        sv.value_at_quantile(0.50),
        sv.value_at_quantile(0.99),
        sv.value_at_quantile(0.999),
        lag.value_at_quantile(0.50),
        lag.value_at_quantile(0.99),
    );
}
