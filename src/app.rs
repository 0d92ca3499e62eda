//! Starting and stopping a gate: load the config, bind the listeners (proxy, admin, ICAP when configured), serve until the drain
//! signal, reload on `SIGHUP`. `main` calls [`run`]; tests can call [`start`] with their own
//! drain handle.

use crate::config::{Config, Diagnostic};
use crate::metrics::Metrics;
use crate::proxy::{self, Gate};
use crate::reload::{load, reload};
use crate::shutdown::{Drain, DrainWatch};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has errors (every one is listed).
    #[error("invalid configuration ({} problems)", .0.len())]
    Config(Vec<Diagnostic>),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another gate holds the data directory (or it cannot be locked).
    #[error(transparent)]
    Locked(#[from] crate::data_dir::LockError),
    /// The audit log could not be opened.
    #[error("cannot open audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS proxy listener's certificate, key or client CA could not be loaded.
    #[error("{0}")]
    ProxyTls(String),
    /// The ledger (or its hash key) could not be opened.
    #[error("ledger: {0}")]
    Ledger(String),
    /// Building the runtime state failed.
    #[error(transparent)]
    Build(#[from] proxy::BuildError),
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The proxy's worker threads could not be started.
    #[error("cannot start the proxy workers: {0}")]
    Workers(std::io::Error),
}

/// A started gate: its state and the addresses it listens on.
pub struct Running {
    /// The shared state.
    pub gate: Arc<Gate>,
    /// The proxy listener's address.
    pub proxy_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The ICAP listener's address, when `gate.icap_listen` is set.
    pub icap_addr: Option<SocketAddr>,
    /// The TLS proxy listener's address, when `gate.proxy_tls_listen` is set.
    pub proxy_tls_addr: Option<SocketAddr>,
    /// Resolves when both listeners have stopped and the drain is over.
    pub done: tokio::task::JoinHandle<()>,
}

/// Binds the listeners of `cfg` and starts serving on the wall clock; stops when `drain`
/// fires.
///
/// # Errors
/// See [`StartError`].
pub async fn start(cfg: Config, drain: &Drain) -> Result<Running, StartError> {
    start_with_clock(cfg, drain, Arc::new(crate::model::SystemClock)).await
}

/// [`start`] on `clock`: every date the gate uses (counting windows, months, approval
/// validity) comes from it. For in-process tests of the calendar; the binary always runs on
/// the wall clock.
///
/// # Errors
/// See [`StartError`].
pub async fn start_with_clock(
    cfg: Config,
    drain: &Drain,
    clock: Arc<dyn crate::model::Clock>,
) -> Result<Running, StartError> {
    std::fs::create_dir_all(&cfg.gate.data_dir).map_err(|source| StartError::DataDir {
        path: cfg.gate.data_dir.clone(),
        source,
    })?;
    // Before anything in it is opened: a second gate on the same directory stops here.
    let dir_lock = crate::data_dir::lock(&cfg.gate.data_dir)?;
    let data_dir = cfg.gate.data_dir.clone();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry)?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let proxy_l = bind(cfg.gate.proxy_listen).await?;
    let admin_l = bind(cfg.gate.admin_listen).await?;
    let proxy_addr = proxy_l.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.gate.proxy_listen,
        source,
    })?;
    let admin_addr = admin_l.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.gate.admin_listen,
        source,
    })?;
    let proxy_tls = match &cfg.gate.proxy_tls {
        Some(t) => {
            let tls = crate::identity::tls::server_config(t)
                .map_err(|e| StartError::ProxyTls(e.to_string()))?;
            let l = bind(t.listen).await?;
            let addr = l.local_addr().map_err(|source| StartError::Bind {
                addr: t.listen,
                source,
            })?;
            Some((l, addr, Arc::new(tls)))
        }
        None => None,
    };
    let proxy_tls_addr = proxy_tls.as_ref().map(|(_, a, _)| *a);
    let icap_l = match cfg.gate.icap_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let icap_addr = match (&icap_l, cfg.gate.icap_listen) {
        (Some(l), Some(addr)) => Some(
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        _ => None,
    };
    let audit = crate::audit::Audit::start(cfg.gate.audit_log.clone()).map_err(|source| {
        StartError::Audit {
            path: cfg.gate.audit_log.clone().unwrap_or_default(),
            source,
        }
    })?;
    let hasher = load_hasher(&cfg)?;
    let ledger = open_ledger(&cfg, clock.clone(), &hasher).await?;
    let gate = Gate::new(cfg, metrics, audit, ledger, hasher, clock).await?;
    gate.own.add_listener(proxy_addr);
    gate.own.add_listener(admin_addr);
    if let Some(a) = proxy_tls_addr {
        gate.own.add_listener(a);
    }
    if let Some(a) = icap_addr {
        gate.own.add_listener(a);
    }
    let listening = crate::data_dir::Listening {
        pid: std::process::id(),
        proxy: proxy_addr,
        proxy_tls: proxy_tls_addr,
        admin: admin_addr,
        icap: icap_addr,
    };
    if let Err(e) = crate::data_dir::write_listening(&data_dir, &listening) {
        tracing::warn!(error = %e, "cannot write {}", crate::data_dir::LISTEN_FILE);
    }
    let refresher = {
        let gate = gate.clone();
        let mut drain = drain.watcher();
        tokio::spawn(async move {
            // Counts reported by every replica are at most a second old (SPEC §4): with the
            // Redis backend, other replicas' reservations only show up through this refresh.
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The ledger servers' addresses (target rules) are looked up again every 15 ticks.
            let mut ticks: u64 = 0;
            let sample_every = crate::report::history::INTERVAL.as_secs().max(1);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let snap = gate.snapshot();
                        snap.gauges.refresh(gate.ledger.as_ref(), gate.clock.now()).await;
                        gate.ledger_up();
                        if ticks.is_multiple_of(15) {
                            gate.own.refresh_ledger().await;
                        }
                        // The report's activity reaches its store (Redis: every replica's
                        // report) within a second; the daily samples every 30 s.
                        if ticks.is_multiple_of(sample_every) {
                            gate.history.sample(gate.history_sources()).await;
                        } else {
                            gate.history.flush(gate.history_sources()).await;
                        }
                        ticks = ticks.wrapping_add(1);
                        gate.publish_ledger_counters();
                    }
                    _ = drain.signaled() => break,
                }
            }
        })
    };
    let workers = Arc::new(
        crate::workers::Workers::start(crate::workers::count()).map_err(StartError::Workers)?,
    );
    let t = proxy_tls.map(|(l, _, tls)| {
        tokio::spawn(proxy::serve(
            gate.clone(),
            l,
            Some(tls),
            workers.clone(),
            drain.watcher(),
        ))
    });
    // The workers stop when the last listener serving on them has drained.
    let p = tokio::spawn(proxy::serve(
        gate.clone(),
        proxy_l,
        None,
        workers,
        drain.watcher(),
    ));
    let a = tokio::spawn(crate::admin::serve(gate.clone(), admin_l, drain.watcher()));
    let i = icap_l.map(|l| tokio::spawn(crate::icap::serve(gate.clone(), l, drain.watcher())));
    let g = gate.clone();
    let done = tokio::spawn(async move {
        // Held until the gate has stopped.
        let _dir_lock = dir_lock;
        let _ = p.await;
        if let Some(t) = t {
            let _ = t.await;
        }
        let _ = a.await;
        if let Some(i) = i {
            let _ = i.await;
        }
        let _ = refresher.await;
        // What the drained requests counted last reaches the report's store.
        g.history.sample(g.history_sources()).await;
        g.audit.flush().await;
    });
    Ok(Running {
        gate,
        proxy_addr,
        admin_addr,
        icap_addr,
        proxy_tls_addr,
        done,
    })
}

/// Loads the subject hash key. The local backend creates it (0600) on first run; a shared
/// (Redis) backend never does: every replica must use the same key, and a replica that made
/// its own would count the same people under other keys.
///
/// # Errors
/// [`StartError::Ledger`] when the key cannot be loaded (or is missing with Redis).
pub fn load_hasher(cfg: &Config) -> Result<crate::ledger::SubjectHasher, StartError> {
    let path = &cfg.ledger.hash_key_file;
    if cfg.ledger.backend != crate::config::Backend::Local && !path.exists() {
        return Err(StartError::Ledger(format!(
            "hash key file {} does not exist; with backend = \"redis\" every replica must use the same key, so the gate does not create one: create it once (head -c 32 /dev/urandom > {0}; chmod 600 {0}) and give the same file to every replica",
            path.display()
        )));
    }
    crate::ledger::SubjectHasher::load_or_create(path)
        .map_err(|e| StartError::Ledger(e.to_string()))
}

/// Opens the configured ledger backend (recovering the local one from its files; connecting
/// to Redis and checking that it was created with the same hash key).
///
/// # Errors
/// [`StartError::Ledger`] when it cannot be opened.
pub async fn open_ledger(
    cfg: &Config,
    clock: Arc<dyn crate::model::Clock>,
    hasher: &crate::ledger::SubjectHasher,
) -> Result<Arc<dyn crate::ledger::Ledger>, StartError> {
    use crate::config::Backend;
    use crate::ledger::{LocalLedger, LocalOptions, RedisTarget};
    match &cfg.ledger.backend {
        Backend::Local => {
            let dir = cfg.gate.data_dir.clone();
            let opts = LocalOptions {
                clock,
                ..LocalOptions::default()
            };
            let l = tokio::task::spawn_blocking(move || LocalLedger::open_in_data_dir(&dir, opts))
                .await
                .map_err(|e| StartError::Ledger(e.to_string()))?
                .map_err(|e| StartError::Ledger(e.to_string()))?;
            let r = l.recovery();
            tracing::info!(
                snapshot_seq = r.snapshot_seq,
                frames_replayed = r.frames_replayed,
                bytes_cut = r.bytes_cut,
                "local ledger recovered"
            );
            Ok(Arc::new(l))
        }
        Backend::Redis { url } => open_redis(cfg, RedisTarget::Server(url.clone()), hasher).await,
        Backend::RedisCluster { nodes } => {
            open_redis(cfg, RedisTarget::Cluster(nodes.clone()), hasher).await
        }
    }
}

async fn open_redis(
    cfg: &Config,
    target: crate::ledger::RedisTarget,
    hasher: &crate::ledger::SubjectHasher,
) -> Result<Arc<dyn crate::ledger::Ledger>, StartError> {
    use crate::ledger::{RedisLedger, RedisOptions};
    let opts = RedisOptions {
        target,
        timeout: cfg.ledger.timeout,
        entity: cfg.entity.name.clone(),
        cache_entries: crate::ledger::redis::DEFAULT_CACHE_ENTRIES,
        journal_dir: Some(cfg.gate.data_dir.join(crate::ledger::redis::JOURNAL_DIR)),
    };
    let auth = redis_auth(cfg)?;
    match RedisLedger::open_with_auth(opts, auth, hasher).await {
        Ok(l) => Ok(l),
        Err(e) => Err(StartError::Ledger(e.to_string())),
    }
}

/// The Redis password (`ledger.redis_password_file`) and extra trust roots
/// (`ledger.redis_ca_file`) of `cfg`.
///
/// # Errors
/// [`StartError::Ledger`] when a file cannot be used.
pub fn redis_auth(cfg: &Config) -> Result<crate::ledger::RedisAuth, StartError> {
    crate::ledger::RedisAuth::load(
        cfg.ledger.redis_password_file.as_deref(),
        cfg.ledger.redis_ca_file.as_deref(),
    )
    .map_err(|e| StartError::Ledger(e.to_string()))
}

/// Runs the gate on the config file at `path` until SIGTERM or SIGINT; SIGHUP reloads.
///
/// # Errors
/// See [`StartError`].
pub async fn run(path: PathBuf) -> Result<(), StartError> {
    let (cfg, warnings) = load(path.clone()).await.map_err(StartError::Config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let (drain, _watch) = Drain::new();
    let running = start(cfg, &drain).await?;
    tracing::info!(
        proxy = %running.proxy_addr,
        admin = %running.admin_addr,
        proxy_tls = ?running.proxy_tls_addr,
        icap = ?running.icap_addr,
        "transfer-gate listening"
    );
    signals(running.gate.clone(), path, drain, _watch).await;
    let _ = running.done.await;
    tracing::info!("transfer-gate stopped");
    Ok(())
}

#[cfg(unix)]
async fn signals(gate: Arc<Gate>, path: PathBuf, drain: Drain, _watch: DrainWatch) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        drain.trigger();
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // logrotate moved the audit file: reopen it (a failure keeps the old file and
                // is logged by the writer).
                let _ = gate.audit.reopen().await;
                hup_reload(&gate, &path).await;
            }
        }
    }
    tracing::info!("shutdown signal: draining");
    drain.trigger();
}

/// The configuration reload of `SIGHUP`.
#[cfg(unix)]
async fn hup_reload(gate: &Gate, path: &Path) {
    match reload(gate, path).await {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            tracing::info!("configuration reloaded");
        }
        Err(errors) => crate::reload::log_refused(&errors),
    }
}
