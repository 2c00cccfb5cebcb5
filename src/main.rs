//! The `spillway` binary: argument parsing and wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spillway::config::{AuthMode, Config};
use spillway::control::app::App;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "spillway",
    version,
    about = "Self-hosted SageMaker-compatible inference endpoints with ranked instance pools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: control plane, runtime and admin API on one listener.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "SPILLWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:7474).
        #[arg(long, env = "SPILLWAY_LISTEN")]
        listen: Option<SocketAddr>,
        /// Directory for the database and instance files (default ./.spillway).
        #[arg(long, env = "SPILLWAY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Create a demo endpoint whose preferred instance type has no capacity, and narrate it.
        #[arg(long)]
        demo: bool,
        /// Address of the embedded object store's S3 API (default 127.0.0.1:7475; port 0: any
        /// free port, printed at start).
        #[arg(long, env = "SPILLWAY_STORAGE_LISTEN")]
        storage_listen: Option<SocketAddr>,
    },
    /// Check or export the audit trail (`<data_dir>/audit.db`); safe while a server runs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Operator commands against a running server (signed like any client).
    #[command(flatten)]
    Operator(spillway::cli::OperatorCommand),
    /// Run a model server built into spillway (used by `Image = "builtin:<name>"`).
    #[command(hide = true)]
    BuiltinModel {
        /// Which built-in.
        name: String,
    },
    /// Supervise one model process for the local provider (see `spillway::provider::shim`).
    #[command(hide = true, name = spillway::provider::shim::SUBCOMMAND)]
    InstanceShim(spillway::provider::shim::ShimOptions),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; print the first gap or edit and exit non-zero if there is one.
    Verify {
        /// The server's data directory (default ./.spillway).
        #[arg(long, env = "SPILLWAY_DATA_DIR", default_value = ".spillway")]
        data_dir: PathBuf,
    },
    /// Write the records, oldest first, as JSON lines (one CloudTrail record per line) to stdout.
    Export {
        /// The server's data directory (default ./.spillway).
        #[arg(long, env = "SPILLWAY_DATA_DIR", default_value = ".spillway")]
        data_dir: PathBuf,
        /// Only records at or after this time: `YYYY-MM-DDTHH:MM:SSZ` or epoch seconds.
        #[arg(long)]
        since: Option<String>,
    },
}

/// The audit log's file in a data directory.
fn audit_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("audit.db")
}

fn audit(command: AuditCommand) -> anyhow::Result<()> {
    use spillway::audit::AuditLog;
    match command {
        AuditCommand::Verify { data_dir } => {
            let path = audit_path(&data_dir);
            let log = AuditLog::open_read_only(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let report = log.verify()?;
            println!("{report}");
            if !report.is_ok() {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Export { data_dir, since } => {
            let since = match since {
                None => None,
                Some(s) => Some(
                    s.parse::<f64>()
                        .ok()
                        .filter(|t| t.is_finite())
                        .or_else(|| spillway::audit::record::parse_time(&s).map(|t| t as f64))
                        .with_context(|| format!("--since {s:?}: expected YYYY-MM-DDTHH:MM:SSZ or epoch seconds"))?,
                ),
            };
            let path = audit_path(&data_dir);
            let log = AuditLog::open_read_only(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = log.export_since(&mut out, since)?;
            eprintln!("spillway: exported {n} audit records");
            Ok(())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The shim takes its signals through a signalfd, which needs them blocked in every
        // thread: it runs before any runtime would start threads, and starts its log threads
        // only once it has blocked them.
        Command::InstanceShim(opts) => std::process::exit(spillway::provider::shim::run(&opts)),
        Command::Audit { command } => audit(command),
        Command::Operator(command) => std::process::exit(spillway::cli::main(command)),
        Command::BuiltinModel { name } => {
            runtime()?.block_on(async { spillway::builtin::run(&name).await.context("built-in model server") })
        }
        Command::Serve {
            config,
            listen,
            data_dir,
            demo,
            storage_listen,
        } => runtime()?.block_on(serve(config, listen, data_dir, demo, storage_listen)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    demo: bool,
    storage_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let default_filter = if demo { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(quiet_s3s(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        ))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let fd_limit = raise_fd_limit();
    let mut cfg = match &config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = storage_listen {
        cfg.storage.listen = l;
    }
    if demo {
        spillway::demo::prepare_config(&mut cfg);
    }
    let unauthenticated = cfg.auth.mode == AuthMode::None;
    if unauthenticated && !cfg.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} with [auth] mode = \"none\": it is not a loopback address, and anyone who reaches it \
             could create models, whose Image is a command line run on this host. Remove [auth] mode = \"none\" \
             (requests are then signed with AWS Signature Version 4 by keys of spillway's IAM), or listen on 127.0.0.1.",
            cfg.listen
        );
    }
    let embedded_storage = cfg.storage.backend == spillway::config::StorageBackend::Embedded;
    if unauthenticated && embedded_storage && !cfg.storage.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the object store on {} with [auth] mode = \"none\": it is not a loopback address. \
             Remove [auth] mode = \"none\", or set [storage] listen (--storage-listen) to 127.0.0.1.",
            cfg.storage.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| listen_error(cfg.listen, &cfg.data_dir, &e))?;
    let addr = listener.local_addr()?;
    // The embedded object store's S3 API (`[storage] listen`); none with `backend = "s3"`.
    let storage_listener = match embedded_storage {
        true => Some(
            tokio::net::TcpListener::bind(cfg.storage.listen)
                .await
                .map_err(|e| storage_listen_error(cfg.storage.listen, &e))?,
        ),
        false => None,
    };
    let app = App::start(cfg).await.context("cannot start")?;
    let url = format!("http://{addr}");
    tracing::info!(%url, data_dir = %app.cfg.data_dir.display(), "spillway listening");
    say(&format!(
        "spillway listening on {url} (data in {})",
        app.cfg.data_dir.display()
    ));
    let storage = match (storage_listener, app.objects.embedded()) {
        (Some(l), Some(store)) => {
            let cx = spillway::objects::api::ApiContext {
                store,
                auth: app.dataplane.auth.clone(),
                audit: app.dataplane.audit.clone(),
                clock: app.clock,
                hosts: app.dataplane.hosts.clone(),
                region: app.cfg.region.clone(),
                account_id: app.cfg.account_id.clone(),
            };
            let server = spillway::objects::api::serve(l, cx).context("cannot start the storage listener")?;
            let storage_url = format!("http://{}", server.local_addr());
            tracing::info!(url = %storage_url, "spillway storage (S3 API) listening");
            say(&format!(
                "spillway storage (S3 API) listening on {storage_url} (objects in {})",
                app.cfg.data_dir.join("objects").display()
            ));
            Some(server)
        }
        _ => None,
    };
    let storage_url = storage.as_ref().map(|s| format!("http://{}", s.local_addr()));
    if unauthenticated {
        tracing::warn!("[auth] mode = \"none\": requests are not authenticated; every caller is the administrator");
        tokio::spawn(warn_unauthenticated(addr));
    } else {
        let credentials = first_start_credentials(&app)?;
        say(&client_setup(
            &credentials,
            &url,
            storage_url.as_deref(),
            &app.cfg.region,
        ));
    }
    if demo {
        tokio::spawn(spillway::demo::run(app.clone(), url.clone(), storage_url.clone()));
    }
    if let Some(log) = &app.dataplane.audit {
        tokio::spawn(prune_audit(log.clone(), app.clock));
    }
    let router = spillway::api::router(app.clone());
    let threads = match app.cfg.router.io_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let max_connections = match app.cfg.router.max_client_connections {
        0 => spillway::dataplane::server::connection_budget(fd_limit),
        n => n,
    };
    tracing::info!(
        open_file_limit = fd_limit,
        max_client_connections = max_connections,
        "connection budget"
    );
    let server =
        spillway::dataplane::server::Server::start(app.dataplane.clone(), router, listener, threads, max_connections)
            .context("cannot start the listener")?;
    shutdown_signal().await;
    // Nothing from here on may fail before every model process is stopped: the terminal's
    // Ctrl-C also ended a `| tee` reading our output, so writes to stdout or stderr fail (EPIPE),
    // and `eprintln!` would panic and leave the models running (`say` ignores such errors).
    // In-flight requests get a bounded time to finish; a client that keeps a connection busy
    // (e.g. still uploading a rejected payload) must not keep the server from stopping.
    say("spillway: stopping every model process ...");
    if !server.shutdown(std::time::Duration::from_secs(10)).await {
        say("spillway: connections still open 10 s after the stop signal; closed them");
    }
    if let Some(storage) = storage
        && !storage.shutdown(std::time::Duration::from_secs(5)).await
    {
        say("spillway: storage connections still open 5 s after the stop signal; closed them");
    }
    app.stop_all_instances().await;
    say("spillway: stopped");
    Ok(())
}

/// The `s3s` crate logs every refused S3 request (a missing key, a 404) at ERROR; spillway
/// records those in the audit trail and logs its own failures, so `s3s` is silenced unless
/// `RUST_LOG` names it.
fn quiet_s3s(filter: EnvFilter) -> EnvFilter {
    if std::env::var("RUST_LOG").is_ok_and(|v| v.contains("s3s")) {
        return filter;
    }
    match "s3s=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// Writes a line to stderr, ignoring errors: a closed stderr (the reader of `2>&1 | tee` went
/// away with the Ctrl-C) must not stop the server, or its shutdown, half-way.
fn say(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// The error for an address `spillway serve` cannot listen on, with what to do about it.
fn listen_error(addr: SocketAddr, data_dir: &std::path::Path, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another process (another spillway?) listens on {addr} already. Stop it, or listen elsewhere: \
             `spillway serve --listen {other}` (or SPILLWAY_LISTEN={other}, or `listen` in the config file); \
             a second server also needs its own data directory (--data-dir or SPILLWAY_DATA_DIR; this one \
             would use {})",
            std::path::absolute(data_dir)
                .unwrap_or_else(|_| data_dir.to_path_buf())
                .display(),
            other = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1024)),
        ),
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges; choose another with --listen or SPILLWAY_LISTEN".to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!(
                "{} is not an address of this host; choose another with --listen or SPILLWAY_LISTEN",
                addr.ip()
            )
        }
        _ => "choose another address with --listen or SPILLWAY_LISTEN".to_string(),
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}: {hint}")
}

/// Raises the soft open-file limit to the hard limit (a server that holds connections and model
/// processes needs them; the soft default of 1,024 is for interactive shells) and says so. The
/// limit it started with is recorded for model processes, whose shim sets it back.
/// Returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    // Model processes start with the limit spillway was given, not the raised one.
    spillway::provider::shim::set_model_nofile(soft);
    // An unlimited hard limit is not a value the kernel takes for the soft one.
    let want = hard.min(1 << 20);
    if soft >= want {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = want, "raised the open-file limit to the hard limit");
            want
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            soft
        }
    }
}

/// Deletes audit records past their retention now and every hour.
async fn prune_audit(log: std::sync::Arc<spillway::audit::AuditLog>, clock: spillway::clock::Clock) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match log.prune_async(clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "audit: deleted records past their retention"),
            Err(e) => tracing::error!(error = %e, "audit: cannot delete records past their retention"),
        }
    }
}

/// Says every minute that requests are not authenticated.
async fn warn_unauthenticated(addr: SocketAddr) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        tracing::warn!(
            %addr,
            "[auth] mode = \"none\": requests are not authenticated; anyone who can reach this address (every local user) can run commands on this host"
        );
    }
}

/// The administrator's credentials file, `<data_dir>/credentials`: written (mode 0600) with a
/// new key on the first start, when there is no such file and no identity yet.
fn first_start_credentials(app: &App) -> anyhow::Result<PathBuf> {
    let path = app.cfg.data_dir.join("credentials");
    let path = std::path::absolute(&path).unwrap_or(path);
    // Once written, the file marks the first start as done: a server whose identities were all
    // deleted does not make itself a new administrator (remove the file to ask for one).
    if path.exists() {
        return Ok(path);
    }
    if let Some((key_id, secret)) =
        spillway::control::identity::bootstrap_admin(app).context("cannot create the administrator")?
    {
        spillway::auth::write_credentials(&path, &key_id, &secret)
            .with_context(|| format!("cannot write {}", path.display()))?;
        tracing::info!(path = %path.display(), access_key_id = %key_id, "created the administrator and its access key");
    }
    Ok(path)
}

/// The lines that make boto3 and the aws CLI talk to this server with no flags (S3 calls go
/// to the embedded object store's listener, when it runs).
fn client_setup(credentials: &std::path::Path, url: &str, storage_url: Option<&str>, region: &str) -> String {
    let s3 = storage_url.map_or_else(String::new, |u| format!("\n  export AWS_ENDPOINT_URL_S3={u}"));
    format!(
        "To use it with boto3 or the aws CLI (profile \"spillway\" is the administrator):\n\
         \x20 export AWS_SHARED_CREDENTIALS_FILE={}\n\
         \x20 export AWS_PROFILE=spillway\n\
         \x20 export AWS_ENDPOINT_URL={url}{s3}\n\
         \x20 export AWS_DEFAULT_REGION={region}",
        credentials.display()
    )
}

/// The error for a storage address `spillway serve` cannot listen on.
fn storage_listen_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot listen on {addr} for the object store's S3 API: {e}: choose another address with --storage-listen, \
         SPILLWAY_STORAGE_LISTEN or [storage] listen (port 0 picks a free one), or use [storage] backend = \"s3\""
    )
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
