//! The running server's shared state and its start-up recovery.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;
use tokio::sync::{Notify, watch};

use crate::audit::AuditLog;
use crate::auth::Auth;
use crate::auth::directory::Identities;
use crate::clock::Clock;
use crate::config::{CapacitySource, Config, HostPolicy};
use crate::control::autoscaler::AutoscalerState;
use crate::control::controller;
use crate::control::identity::{self, IamState};
use crate::core::capacity::{BackoffPolicy, IceMemory};
use crate::core::endpoint::{EndpointRecord, Event, InstanceRecord};
use crate::core::iam::Arns;
use crate::core::model::RoutingStrategy;
use crate::dataplane::DataPlane;
use crate::dataplane::routes::RouteTable;
use crate::logs::store::LogStore;
use crate::notify::Notifier;
use crate::provider::local::{Host, LocalProvider};
use crate::provider::slurm::SlurmProvider;
use crate::provider::{CapacityProvider, TrackedInstance};
use crate::store::{Kind, Store, StoreError};
use crate::telemetry::metrics::{Metrics, Select, Statistic};

/// Start-up failures.
#[derive(Debug, Error)]
pub enum StartError {
    /// The data directory cannot be created.
    #[error("cannot create data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log cannot be opened.
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// Another spillway serves this data directory.
    #[error(
        "another spillway (pid {1}) is serving the data directory {0}; stop it, or give this one another --data-dir"
    )]
    Locked(String, String),
    /// The data directory's lock file cannot be used.
    #[error("cannot lock the data directory {0}: {1}")]
    Lock(String, std::io::Error),
    /// The model logs' directory cannot be opened.
    #[error("cannot open the model logs' directory: {0}")]
    Logs(std::io::Error),
    /// The asynchronous endpoints' request queue cannot be opened.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// The object store (`[storage]`) cannot be opened.
    #[error("cannot open the object store: {0}")]
    Objects(#[from] crate::objects::ObjectError),
    /// The notification outbox cannot be opened.
    #[error("cannot open the notification outbox: {0}")]
    Notify(#[from] crate::notify::NotifyError),
}

/// The data directory's lock (`<data_dir>/spillway.lock`, holding the pid): two servers on one
/// data directory would both manage its instances, so the second refuses to start. The lock is
/// the kernel's (`flock`), released when the process ends however it ends; model processes do
/// not inherit it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir`, or says who holds it.
    pub fn acquire(data_dir: &std::path::Path) -> Result<Self, StartError> {
        use std::io::{Read, Seek, Write};
        let path = data_dir.join("spillway.lock");
        let shown = || data_dir.display().to_string();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StartError::Lock(shown(), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(StartError::Locked(
                    shown(),
                    if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_string()
                    },
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StartError::Lock(shown(), e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| StartError::Lock(shown(), e))?;
        Ok(Self { _file: file })
    }
}

/// What the controller and the API share about one endpoint.
pub struct EndpointRuntime {
    /// The durable record.
    pub record: EndpointRecord,
    /// Its instances.
    pub instances: Vec<InstanceRecord>,
    /// Set once the endpoint is gone; the controller stops.
    pub deleted: bool,
    /// What the controller last reported for a situation that lasts (a rebalance waiting out
    /// `min_runtime_seconds`, a cost ceiling biting), by key: an event is recorded when the
    /// situation starts or changes, not every tick. Not durable: a restart reports afresh.
    pub reported: BTreeMap<String, String>,
    /// The inference components placed on this endpoint, by name (also in the store).
    pub components: BTreeMap<String, crate::core::component::ComponentRecord>,
    /// Their copies (also in the store).
    pub copies: Vec<crate::core::component::CopyRecord>,
    /// Per component: consecutive failed copies of its current version, and when the last one
    /// failed. Not durable.
    pub copy_failures: BTreeMap<String, (u32, crate::core::model::Timestamp)>,
    /// Per components-hosting variant with copies that wait for new instances: the pool types
    /// that can hold them. The fleet planner launches only those (the others are passed over
    /// as if backing off). Not durable: the next pass recomputes it.
    pub launch_types: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// An endpoint's state plus the bell that wakes its controller.
pub struct EndpointHandle {
    /// Guarded state. Held briefly; never across a launch, ping or termination.
    pub state: tokio::sync::Mutex<EndpointRuntime>,
    /// Wakes the controller after a change.
    pub notify: Notify,
}

/// The server.
pub struct App {
    /// Configuration.
    pub cfg: Config,
    /// Durable state.
    pub store: Store,
    /// Where instances run.
    pub provider: Arc<dyn CapacityProvider>,
    /// What the data plane reads: routes (published by the controllers), the router
    /// configuration, metrics and the clock.
    pub dataplane: Arc<DataPlane>,
    /// Live endpoints by name.
    pub endpoints: Mutex<HashMap<String, Arc<EndpointHandle>>>,
    /// HTTP client to instances (pings and invocations).
    pub http: Client<HttpConnector, Body>,
    /// Flips to `true` on shutdown.
    pub shutdown: watch::Sender<bool>,
    /// What spillway has learned about types that answered insufficient capacity.
    pub ice: Mutex<IceMemory>,
    /// When each instance type's instances were last taken away (`controller::reclaim`): a
    /// launch of the type that began before then is taken away too when it lands.
    pub reclaimed: Mutex<HashMap<String, crate::core::model::Timestamp>>,
    /// Invocation and fleet metrics.
    pub metrics: Arc<Metrics>,
    /// Autoscaler state.
    pub autoscaler: AutoscalerState,
    /// The one clock: every time-dependent decision and timestamp reads it.
    pub clock: Clock,
    /// The identities access keys resolve to: the snapshot authentication reads, published by
    /// `control::identity` after every IAM change.
    pub identities: Arc<Identities>,
    /// The identities as stored (users, keys, groups, policies): what IAM commands check
    /// against and IAM queries read.
    pub iam: IamState,
    /// Held while the server runs.
    pub data_dir_lock: DataDirLock,
    /// The instances' logs (`<data_dir>/logs`), read by the CloudWatch Logs API and quoted in
    /// launch failures.
    pub logs: Arc<LogStore>,
    /// Asynchronous endpoints' durable request queue (`<data_dir>/queue.db`); the data plane
    /// holds the same one to accept `InvokeEndpointAsync`.
    pub queue: Arc<crate::queue::Queue>,
    /// Where `s3://` objects live (`[storage]`): asynchronous inference's input and output.
    pub objects: Arc<dyn crate::objects::ObjectStore>,
    /// SNS notifications of asynchronous inference: the durable outbox
    /// (`<data_dir>/notifications.db`) and its delivery task, started with the server and
    /// stopped on shutdown.
    pub notifier: Arc<Notifier>,
}

impl App {
    /// Opens the store, recovers instances that survived a crash, and starts a controller per
    /// endpoint.
    pub async fn start(cfg: Config) -> Result<Arc<App>, StartError> {
        Self::start_inner(cfg, None, Clock::wall()).await
    }

    /// Like [`App::start`], with `provider` instead of the configured one and `clock` instead
    /// of the wall clock (tests and simulations: an in-memory provider on a paused
    /// [`Clock::tokio`]). The asynchronous workers do not run: such a provider's instances serve
    /// no HTTP, so a simulation fills and drains `App::queue` itself.
    pub async fn start_with_provider(
        cfg: Config,
        provider: Arc<dyn CapacityProvider>,
        clock: Clock,
    ) -> Result<Arc<App>, StartError> {
        Self::start_inner(cfg, Some(provider), clock).await
    }

    async fn start_inner(
        cfg: Config,
        provider: Option<Arc<dyn CapacityProvider>>,
        clock: Clock,
    ) -> Result<Arc<App>, StartError> {
        let simulated = provider.is_some();
        let data_dir = cfg.data_dir.clone();
        // A data directory spillway creates is private to its user (it holds the store, whose
        // access keys are secrets, and the credentials file); one that exists is left as it is
        // (the store file itself is made private by `Store::open`).
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&data_dir)
                .map_err(|e| StartError::DataDir(data_dir.display().to_string(), e))?;
        }
        // Canonical so that processes can be recognised by their SPILLWAY_DATA_DIR.
        let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
        let lock = DataDirLock::acquire(&data_dir)?;
        let store = Store::open(&data_dir.join("spillway.db"))?;
        let logs = Arc::new(LogStore::open(&data_dir).map_err(StartError::Logs)?);
        let objects = crate::objects::open(&cfg.storage, &data_dir)?;
        let log_settings = crate::logs::Settings {
            root: logs.root().to_path_buf(),
            max_bytes_per_instance: cfg.logs.max_bytes_per_instance,
        };
        let provider: Arc<dyn CapacityProvider> = if let Some(provider) = provider {
            provider
        } else if cfg.provider.kind == "slurm" {
            tracing::info!(
                types = cfg.provider.slurm.instance_types.len(),
                "Slurm provider: instances are Slurm jobs"
            );
            Arc::new(SlurmProvider::new(&data_dir, &cfg.provider.slurm).with_logs(log_settings))
        } else {
            let host = Host::detect(cfg.provider.local.gpus);
            tracing::info!(
                cpus = host.cpus,
                memory_gib = format!("{:.1}", host.memory_gib),
                gpus = host.gpus.len(),
                "local provider host"
            );
            Arc::new(
                LocalProvider::new(&data_dir, &cfg.provider.local, host)
                    .with_stop_grace(Duration::from_secs(cfg.provisioning.termination_grace_seconds))
                    .with_logs(log_settings),
            )
        };
        for (t, slots) in store.capacity_overrides()? {
            tracing::info!(instance_type = %t, slots, "run-time capacity override from the store");
            provider.set_slots(&t, Some(slots));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let mut cfg = cfg;
        cfg.data_dir = data_dir;
        let retention = cfg.metrics.retention_seconds as i64;
        let metrics = Arc::new(if cfg.metrics.enabled {
            Metrics::with_retention(retention)
        } else {
            Metrics::disabled(retention)
        });
        let audit = if cfg.audit.enabled {
            let path = cfg.data_dir.join("audit.db");
            Some(Arc::new(AuditLog::open(&path, cfg.audit.retention())?))
        } else {
            tracing::warn!("[audit] enabled = false: calls are not recorded");
            None
        };
        let notifier = Arc::new(Notifier::open(&cfg.notifications, &cfg.data_dir, clock)?);
        let iam_rows = store.iam_rows()?;
        let identities = Arc::new(Identities::new(identity::directory(&iam_rows, &cfg.account_id)));
        let iam = IamState::new(iam_rows);
        // Asynchronous endpoints' requests (`<data_dir>/queue.db`). Leases belonged to the
        // workers of a previous process, which are gone: their requests go back to the queue.
        let queue = Arc::new(crate::queue::Queue::open(&cfg.data_dir.join("queue.db"))?);
        let released = {
            let q = queue.clone();
            tokio::task::spawn_blocking(move || q.release_leases())
                .await
                .map_err(|e| crate::queue::QueueError::Storage(e.to_string()))??
        };
        if released > 0 {
            tracing::info!(
                released,
                "asynchronous requests held by the previous run go back to the queue"
            );
        }
        let dataplane = Arc::new(DataPlane {
            router: cfg.router.clone(),
            account_id: cfg.account_id.clone(),
            routes: RouteTable::default(),
            metrics: metrics.clone(),
            freed: Arc::new(Notify::new()),
            clock,
            hosts: HostPolicy::new(&cfg.allowed_hosts),
            auth: Arc::new(Auth::new(&cfg, identities.clone())),
            audit,
            request_ids: Default::default(),
            queue: queue.clone(),
            async_wake: Arc::new(Notify::new()),
        });
        let app = Arc::new(App {
            cfg,
            store,
            provider,
            dataplane,
            endpoints: Mutex::new(HashMap::new()),
            http,
            shutdown: watch::channel(false).0,
            ice: Mutex::new(IceMemory::default()),
            reclaimed: Mutex::new(HashMap::new()),
            metrics,
            autoscaler: AutoscalerState::default(),
            clock,
            identities,
            iam,
            data_dir_lock: lock,
            logs,
            queue,
            objects,
            notifier,
        });
        app.recover().await?;
        tokio::spawn(sweep_logs(app.clone()));
        tokio::spawn(sample_fleet(app.clone()));
        tokio::spawn(sample_usage(app.clone()));
        tokio::spawn(crate::control::ledger::run(app.clone()));
        tokio::spawn(crate::control::autoscaler::run(app.clone()));
        if simulated {
            tracing::debug!("asynchronous workers off: the provider's instances serve no HTTP");
        } else {
            tokio::spawn(crate::control::asyncq::run(app.clone()));
        }
        {
            // Delivery outcomes are the endpoint's events; a weak reference, so the task does
            // not keep the server alive.
            let weak = Arc::downgrade(&app);
            let events: crate::notify::EventSink = Arc::new(move |e| {
                if let Some(app) = weak.upgrade() {
                    app.event(e);
                }
            });
            tokio::spawn(app.notifier.clone().run(events, app.shutdown.subscribe()));
        }
        Ok(app)
    }

    async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        use crate::core::component::{ComponentRecord, CopyPhase, CopyRecord};
        let instances = self.store.instances()?;
        let copies: Vec<CopyRecord> = self.store.list(Kind::ComponentCopy)?;
        let mut tracked: Vec<TrackedInstance> = instances
            .iter()
            .map(|i| TrackedInstance {
                instance_id: i.instance_id.clone(),
                instance_type: i.instance_type.clone(),
                handle: i.handle.clone(),
                host: None,
            })
            .collect();
        // A copy still `Placing` was recorded but its start never answered: whatever process
        // it may have is not tracked, so recovery stops it, and the record goes below.
        tracked.extend(
            copies
                .iter()
                .filter(|c| c.state != CopyPhase::Placing && !c.handle.is_null())
                .map(|c| TrackedInstance {
                    instance_id: c.copy_id.clone(),
                    instance_type: c.instance_type.clone(),
                    handle: c.handle.clone(),
                    host: Some(c.host_instance_id.clone()),
                }),
        );
        let recovery = self.provider.recover(&tracked).await;
        let mut copies_by_endpoint: HashMap<String, Vec<CopyRecord>> = HashMap::new();
        let grace = std::time::Duration::from_secs(self.cfg.provisioning.termination_grace_seconds);
        for c in copies {
            let alive = recovery.alive.contains(&c.copy_id);
            let host_alive = recovery.alive.contains(&c.host_instance_id);
            if alive && host_alive {
                tracing::info!(copy = %c.copy_id, component = %c.component, "adopted a running copy");
                copies_by_endpoint.entry(c.endpoint_name.clone()).or_default().push(c);
                continue;
            }
            if alive {
                // Its instance is gone: the copy has no share to run on.
                self.provider.terminate(&c.copy_id, &c.handle, grace).await;
            }
            self.event(Event {
                time: self.clock.now(),
                endpoint_name: c.endpoint_name.clone(),
                variant_name: Some(c.variant_name.clone()),
                kind: "CopyLost".into(),
                instance_type: Some(c.instance_type.clone()),
                priority: Some(c.priority),
                instance_id: Some(c.copy_id.clone()),
                result: Some(c.component.clone()),
                message: match (c.state, alive) {
                    (CopyPhase::Placing, _) => format!(
                        "copy {} of {} was being placed on {} when spillway stopped; any process it had was stopped, and it is placed again",
                        c.copy_id, c.component, c.host_instance_id
                    ),
                    (_, true) => format!(
                        "copy {} of {} was running but its instance {} is gone; stopped it",
                        c.copy_id, c.component, c.host_instance_id
                    ),
                    _ => format!(
                        "copy {} of {} was not running when spillway started",
                        c.copy_id, c.component
                    ),
                },
            });
            self.store.delete(Kind::ComponentCopy, &c.copy_id, "")?;
        }
        let mut components_by_endpoint: HashMap<String, BTreeMap<String, ComponentRecord>> = HashMap::new();
        for rec in self.store.list::<ComponentRecord>(Kind::InferenceComponent)? {
            components_by_endpoint
                .entry(rec.endpoint_name.clone())
                .or_default()
                .insert(rec.name.clone(), rec);
        }
        for s in &recovery.stopped_untracked {
            tracing::warn!(process = %s, "stopped a model process that no record tracks");
        }
        let mut by_endpoint: HashMap<String, Vec<InstanceRecord>> = HashMap::new();
        let mut lost: HashMap<String, Vec<String>> = HashMap::new();
        for inst in instances {
            if recovery.alive.contains(&inst.instance_id) {
                tracing::info!(instance = %inst.instance_id, endpoint = %inst.endpoint_name, "adopted a running instance");
                by_endpoint.entry(inst.endpoint_name.clone()).or_default().push(inst);
            } else {
                self.event(Event {
                    time: self.clock.now(),
                    endpoint_name: inst.endpoint_name.clone(),
                    variant_name: Some(inst.variant_name.clone()),
                    kind: "InstanceLost".into(),
                    instance_type: Some(inst.instance_type.clone()),
                    priority: Some(inst.priority),
                    instance_id: Some(inst.instance_id.clone()),
                    result: None,
                    message: "the instance's process was not running when spillway started".into(),
                });
                lost.entry(inst.endpoint_name.clone())
                    .or_default()
                    .push(inst.instance_id.clone());
                self.store.delete_instance(&inst.instance_id)?;
            }
        }
        for mut record in self.store.list::<EndpointRecord>(Kind::Endpoint)? {
            // A start is a new attempt: a variant whose replacements gave up before the stop
            // (a capacity shortfall, a crash loop) is provisioned again.
            for v in &mut record.active.variants {
                v.stalled = None;
                v.health_failures = 0;
            }
            let instances = by_endpoint.remove(&record.name).unwrap_or_default();
            let adopted: Vec<String> = instances
                .iter()
                .filter(|i| i.state != crate::core::planner::InstancePhase::Terminating)
                .map(|i| i.instance_id.clone())
                .collect();
            let desired: u32 = record.active.variants.iter().map(|v| v.desired_count).sum();
            self.event(Event {
                time: self.clock.now(),
                endpoint_name: record.name.clone(),
                variant_name: None,
                kind: "ServerStarted".into(),
                instance_type: None,
                priority: None,
                instance_id: None,
                result: None,
                message: crate::core::endpoint::server_started_message(
                    std::process::id(),
                    &adopted,
                    lost.get(&record.name).map_or(&[][..], Vec::as_slice),
                    desired,
                    recovery.stopped_untracked.len(),
                ),
            });
            super::publish_tags(self, &self.arn("endpoint", &record.name))?;
            let components = components_by_endpoint.remove(&record.name).unwrap_or_default();
            let copies = copies_by_endpoint.remove(&record.name).unwrap_or_default();
            self.register_with(record, instances, components, copies);
        }
        Ok(())
    }

    /// Adds an endpoint to the live set and starts its controller.
    pub fn register(self: &Arc<Self>, record: EndpointRecord, instances: Vec<InstanceRecord>) -> Arc<EndpointHandle> {
        self.register_with(record, instances, BTreeMap::new(), vec![])
    }

    /// [`App::register`] with the endpoint's inference components and their copies.
    pub fn register_with(
        self: &Arc<Self>,
        record: EndpointRecord,
        instances: Vec<InstanceRecord>,
        components: BTreeMap<String, crate::core::component::ComponentRecord>,
        copies: Vec<crate::core::component::CopyRecord>,
    ) -> Arc<EndpointHandle> {
        let name = record.name.clone();
        let handle = Arc::new(EndpointHandle {
            state: tokio::sync::Mutex::new(EndpointRuntime {
                record,
                instances,
                deleted: false,
                reported: BTreeMap::new(),
                components,
                copies,
                copy_failures: BTreeMap::new(),
                launch_types: BTreeMap::new(),
            }),
            notify: Notify::new(),
        });
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), handle.clone());
        controller::spawn(self.clone(), name, handle.clone());
        handle
    }

    /// The live endpoint of that name.
    pub fn endpoint(&self, name: &str) -> Option<Arc<EndpointHandle>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every live endpoint.
    pub fn all_endpoints(&self) -> Vec<Arc<EndpointHandle>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The names of the live endpoints.
    pub fn endpoint_names(&self) -> Vec<String> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets an endpoint (its controller finished deleting it).
    pub fn unregister(&self, name: &str) {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.dataplane.routes.remove(name);
    }

    /// The configured insufficient-capacity back-off.
    pub fn backoff(&self) -> BackoffPolicy {
        BackoffPolicy {
            initial_s: self.cfg.provisioning.ice_backoff_initial_ms as f64 / 1000.0,
            max_s: self.cfg.provisioning.ice_backoff_max_ms as f64 / 1000.0,
        }
    }

    /// The ICE memory, locked.
    pub fn ice(&self) -> std::sync::MutexGuard<'_, IceMemory> {
        self.ice.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event durably and in the log.
    pub fn event(&self, e: Event) {
        tracing::info!(
            endpoint = %e.endpoint_name,
            variant = e.variant_name.as_deref().unwrap_or(""),
            kind = %e.kind,
            instance_type = e.instance_type.as_deref().unwrap_or(""),
            result = e.result.as_deref().unwrap_or(""),
            "{}",
            e.message
        );
        if let Err(err) = self.store.append_event(&e) {
            tracing::error!(%err, "cannot record event");
        }
    }

    /// The ARNs of this server's resources (its region and account).
    pub fn arns(&self) -> Arns {
        Arns {
            region: self.cfg.region.clone(),
            account_id: self.cfg.account_id.clone(),
        }
    }

    /// The ARN of a resource (`kind` is `model`, `endpoint-config` or `endpoint`). AWS
    /// lower-cases the name in ARNs.
    pub fn arn(&self, kind: &str, name: &str) -> String {
        self.arns().sagemaker(kind, name)
    }

    /// Graceful shutdown: stop controllers, then every instance, and forget the instances (the
    /// next start provisions fresh ones).
    pub async fn stop_all_instances(&self) {
        self.shutdown.send_replace(true);
        let grace = Duration::from_secs(self.cfg.provisioning.termination_grace_seconds);
        let mut set = tokio::task::JoinSet::new();
        for h in self.all_endpoints() {
            let rt = h.state.lock().await;
            for inst in &rt.instances {
                let provider = self.provider.clone();
                let inst = inst.clone();
                set.spawn(async move {
                    provider.terminate(&inst.instance_id, &inst.handle, grace).await;
                    (inst.instance_id, false)
                });
            }
            // Inference components' copies go with their instances (the components stay: the
            // next start places them again).
            for c in rt.copies.iter().filter(|c| !c.handle.is_null()) {
                let provider = self.provider.clone();
                let c = c.clone();
                set.spawn(async move {
                    provider.terminate(&c.copy_id, &c.handle, grace).await;
                    (c.copy_id, true)
                });
            }
        }
        while let Some(done) = set.join_next().await {
            let forgotten = match done {
                Ok((id, true)) => self.store.delete(Kind::ComponentCopy, &id, "").map(|_| ()),
                Ok((id, false)) => self.store.delete_instance(&id),
                Err(_) => Ok(()),
            };
            if let Err(err) = forgotten {
                tracing::error!(%err, "cannot forget a stopped instance or copy");
            }
        }
        // Copies recorded but never started are forgotten too.
        if let Ok(left) = self
            .store
            .list::<crate::core::component::CopyRecord>(Kind::ComponentCopy)
        {
            for c in left {
                let _ = self.store.delete(Kind::ComponentCopy, &c.copy_id, "");
            }
        }
    }
}

/// Deletes model logs past their retention (`[logs] retention_seconds` after their instance is
/// gone; `LogStore::sweep`), every quarter of the retention (at least every second, at most every
/// minute), on a blocking thread. The instances the store tracks and the live endpoints' groups
/// are kept whatever their age.
async fn sweep_logs(app: Arc<App>) {
    let retention = Duration::from_secs(app.cfg.logs.retention_seconds);
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut shutdown = app.shutdown.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let copies = app
            .store
            .list::<crate::core::component::CopyRecord>(Kind::ComponentCopy)
            .unwrap_or_default();
        let live: std::collections::HashSet<String> = match app.store.instances() {
            // A copy's stream is kept while the copy runs, as an instance's.
            Ok(all) => all
                .into_iter()
                .map(|i| i.instance_id)
                .chain(copies.into_iter().map(|c| c.copy_id))
                .collect(),
            Err(err) => {
                tracing::warn!(%err, "cannot list instances; no model logs deleted this round");
                continue;
            }
        };
        let endpoints: std::collections::HashSet<String> = app.endpoint_names().into_iter().collect();
        let now = app.clock.system_time();
        let logs = app.logs.clone();
        match tokio::task::spawn_blocking(move || logs.sweep(&live, &endpoints, now, retention)).await {
            Ok(done) if done.streams + done.groups > 0 => {
                tracing::info!(
                    streams = done.streams,
                    groups = done.groups,
                    "deleted model logs past their retention"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "the model logs' retention sweep failed"),
        }
    }
}

/// Seconds of model latency that capacity-aware routing's measurement looks at.
const CAPACITY_WINDOW_S: f64 = 30.0;

/// Once a second, records each serving type's instance count and requests in flight
/// (`InstanceCount`, `ConcurrentRequestsPerModel`) and each asynchronous endpoint's backlog
/// (`crate::control::backlog`).
async fn sample_fleet(app: Arc<App>) {
    let mut shutdown = app.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut backlog_endpoints = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let t = app.clock.now();
        // Asynchronous endpoints' backlog metrics, on the same tick.
        crate::control::backlog::sample(&app, t, &mut backlog_endpoints).await;
        let names = app.endpoint_names();
        for name in names {
            let Some(routes) = app.dataplane.routes.get(&name) else {
                continue;
            };
            // Inference components' `ConcurrentRequestsPerCopy`, per host instance type.
            for c in routes.components.values() {
                let mut by_type: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
                for i in &c.copies {
                    let e = by_type.entry(i.instance_type.as_str()).or_default();
                    e.0 += 1;
                    e.1 += i.load();
                }
                let measure = c.strategy == RoutingStrategy::CapacityAware
                    && app.cfg.router.capacity_source == CapacitySource::Measured;
                for (ty, (n, outstanding)) in by_type {
                    app.metrics
                        .record_component_fleet(&name, &c.name, ty, n, outstanding, t);
                    if measure {
                        // As for instances: the recent mean model latency of the component's
                        // copies on this host type.
                        let latency = app
                            .metrics
                            .aggregate(
                                Select::component(&c.name, Some(ty)),
                                "ModelLatency",
                                Statistic::Average,
                                t - CAPACITY_WINDOW_S,
                                t,
                            )
                            .map_or(0, |us| us.round().max(1.0) as u64);
                        for i in c.copies.iter().filter(|i| i.instance_type == ty) {
                            i.measured_latency_us
                                .store(latency, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
            for v in &routes.variants {
                let mut by_type: HashMap<&str, (usize, usize)> = HashMap::new();
                for i in &v.instances {
                    let e = by_type.entry(i.instance_type.as_str()).or_default();
                    e.0 += 1;
                    e.1 += i.outstanding.load(std::sync::atomic::Ordering::Relaxed);
                }
                let measure = v.strategy == RoutingStrategy::CapacityAware
                    && app.cfg.router.capacity_source == CapacitySource::Measured;
                for (ty, (n, outstanding)) in by_type {
                    let series = crate::telemetry::metrics::Series {
                        endpoint: &name,
                        variant: &v.name,
                        instance_type: ty,
                    };
                    app.metrics.record_fleet(series, n, outstanding, t);
                    if measure {
                        // What this type can carry, measured: its recent mean model latency.
                        let latency = app
                            .metrics
                            .aggregate(
                                Select::new(&name, &v.name, Some(ty)),
                                "ModelLatency",
                                Statistic::Average,
                                t - CAPACITY_WINDOW_S,
                                t,
                            )
                            .map_or(0, |us| us.round().max(1.0) as u64);
                        for i in v.instances.iter().filter(|i| i.instance_type == ty) {
                            i.measured_latency_us
                                .store(latency, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

/// Every `[metrics] usage_interval_seconds` (0: never), samples the CPU, memory and GPU use of
/// every instance whose provider can say where it runs on this host (`crate::usage`) and records
/// it per instance (`CPUUtilization`, `MemoryUtilization`, `GPUUtilization`,
/// `GPUMemoryUtilization`). `/proc` and `nvidia-smi` are read on a blocking thread, never on the
/// async workers that serve requests.
#[allow(clippy::disallowed_methods)] // CPU-time rates divide by real elapsed time, not the Clock's.
async fn sample_usage(app: Arc<App>) {
    let interval = app.cfg.metrics.usage_interval_seconds;
    if interval == 0 {
        return;
    }
    let mut shutdown = app.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = Some(crate::telemetry::usage::Sampler::default());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let targets = usage_targets(&app).await;
        let mut s = sampler.take().unwrap_or_default();
        if s.idle(&targets) {
            sampler = Some(s);
            continue;
        }
        let round = tokio::task::spawn_blocking(move || {
            let round = s.sample(&targets, std::time::Instant::now());
            (s, round)
        })
        .await;
        let round = match round {
            Ok((s, round)) => {
                sampler = Some(s);
                round
            }
            Err(e) => {
                tracing::error!(error = %e, "utilization sampling failed; starting afresh");
                continue;
            }
        };
        let t = app.clock.now();
        for (instance, sample) in &round.samples {
            app.metrics.record_usage(instance, sample, t);
        }
        for instance in &round.gone {
            app.metrics.forget_usage(instance);
        }
    }
}

/// The instances of every live endpoint that the provider can sample.
async fn usage_targets(app: &App) -> Vec<crate::telemetry::usage::InstanceTarget> {
    let mut targets = vec![];
    for h in app.all_endpoints() {
        let rt = h.state.lock().await;
        if rt.deleted {
            continue;
        }
        for i in &rt.instances {
            let Some(target) = app.provider.usage_target(&i.handle) else {
                continue;
            };
            // The copies it hosts count as its own use.
            let copies = rt
                .copies
                .iter()
                .filter(|c| c.host_instance_id == i.instance_id && !c.handle.is_null())
                .filter_map(|c| app.provider.usage_target(&c.handle))
                .collect();
            targets.push(crate::telemetry::usage::InstanceTarget {
                series: crate::telemetry::metrics::UsageSeries {
                    endpoint: i.endpoint_name.clone(),
                    variant: i.variant_name.clone(),
                    instance_type: i.instance_type.clone(),
                    instance: i.instance_id.clone(),
                },
                target,
                copies,
            });
        }
    }
    targets
}
