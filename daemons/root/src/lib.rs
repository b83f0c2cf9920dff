//! `oakestra-root`: the root orchestrator (DESIGN.md §4.1–4.3): the Oakestra-compatible REST
//! API users and the dashboard talk to, the gRPC endpoint clusters dial, root scheduling and
//! root IPAM.
//!
//! Library first: [`start`] runs a root inside any tokio runtime (tests, `oak up`) and
//! returns its bound addresses; [`run`] is what the binary calls.
//!
//! * [`config`] — flags, environment, TOML file.
//! * [`api`] — the REST API (axum), with [`auth`] (passwords, tokens) and [`error`].
//! * [`openapi`] — the API documentation pages; [`metrics`] — Prometheus metrics.
//! * [`dashboard`] — the web dashboard and the docs' files, embedded and served at `/`.

#![deny(missing_docs)]

pub mod addresses;
pub mod api;
pub mod auth;
pub mod cluster_link;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod grpc;
pub mod instances;
pub mod metrics;
pub mod monitor;
pub mod openapi;
mod placement;
pub mod sealing;
pub mod tables;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use oakestra_store::{
    Member, OrganizationRecord, SigningKey, Store, StoreError, UserRecord, new_object_id,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

pub use config::{Config, StoreLocation};

use crate::api::AppState;
use crate::api::lifecycle::ServiceLifecycle;
use crate::auth::{TokenService, hash_password, random_bytes, roles};
use crate::cluster_link::{ClusterLink, LinkConfig};
use crate::metrics::Metrics;

/// Name of the token signing key in the store.
pub const SIGNING_KEY_NAME: &str = "jwt-hs256";

/// The algorithm tag of the stored token signing key: an HS256 key sealed with the key file
/// ([`sealing`]). Stores written before kept `"HS256"`, the key in clear.
pub const SEALED_SIGNING_KEY: &str = "HS256+A256GCM";

/// What a sealed signing key is bound to (the AEAD's associated data).
const SIGNING_KEY_PURPOSE: &str = "oakestra-root signing_key/jwt-hs256";

/// Default account created on first start.
pub const DEFAULT_ADMIN: &str = "Admin";

/// An argon2 hash of a random password, checked against when a login names an unknown user,
/// so that the answer time does not reveal which user names exist.
pub(crate) static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("no user has this password"));

/// Why the root could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The store could not be opened or failed during start-up.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A listening address is in use or not allowed.
    #[error("cannot listen on {addr} for the {what}: {source}; pick another address with --{flag}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The flag that sets its address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data directory cannot be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is missing, unreadable, or not the one the store was sealed with.
    #[error("key file {path}: {message}")]
    KeyFile {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// A server task failed.
    #[error("{what} failed: {message}")]
    Server {
        /// Which server.
        what: &'static str,
        /// What happened.
        message: String,
    },
}

/// Opens the configured store (creating the directory of an embedded store file).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, RootError> {
    let location = match &config.store {
        StoreLocation::Redb(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = dir {
                oakestra_daemon::private::dir(dir).map_err(|source| RootError::DataDir {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            format!("redb:{}", path.display())
        }
        StoreLocation::Mongo(url) => url.clone(),
        StoreLocation::Memory => "memory:".to_owned(),
    };
    Ok(oakestra_store::open(&location).await?)
}

/// The key that seals the store's secrets: read from `key_file`, or created there when the
/// file does not exist and the store holds no sealed key yet (first start, or a store that
/// kept its signing key in clear). `None` (a store that is not persisted): a key that lives
/// as long as the process.
pub async fn load_sealing_key(
    store: &Arc<dyn Store>,
    key_file: Option<&std::path::Path>,
) -> Result<sealing::SealingKey, RootError> {
    let Some(path) = key_file else {
        return Ok(sealing::SealingKey::ephemeral());
    };
    let key_error = |message: String| RootError::KeyFile {
        path: path.to_owned(),
        message,
    };
    match sealing::SealingKey::read(path) {
        Ok(key) => Ok(key),
        Err(sealing::SealError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let stored = store.signing_key(SIGNING_KEY_NAME).await?;
            if stored.is_some_and(|k| k.algorithm != "HS256") {
                return Err(key_error(
                    "does not exist, and the token signing key in the store is sealed with a \
                     key file: give the file the store was sealed with (--key-file, \
                     OAKESTRA_ROOT_KEY_FILE or key_file in the configuration file)"
                        .into(),
                ));
            }
            let key = sealing::SealingKey::create(path).map_err(|e| key_error(e.to_string()))?;
            tracing::info!(
                file = %path.display(),
                "created the key file that seals the secrets in the store; keep it with the \
                 store's backups, the store cannot be used without it"
            );
            Ok(key)
        }
        Err(e) => Err(key_error(e.to_string())),
    }
}

/// The token signing key, kept sealed with `sealing` in the store: created once
/// (insert-if-absent, so concurrent starts agree) and opened. A key a store kept in clear
/// (written before keys were sealed) could be read by whoever read the store file, and stays
/// in its free pages: it is replaced by a new sealed key, so tokens signed with it stop
/// working (users log in again once).
pub async fn token_signing_key(
    store: &Arc<dyn Store>,
    sealing: &sealing::SealingKey,
    key_file: Option<&std::path::Path>,
) -> Result<Vec<u8>, RootError> {
    let candidate = SigningKey {
        algorithm: SEALED_SIGNING_KEY.into(),
        key: sealing.seal(SIGNING_KEY_PURPOSE, &random_bytes::<32>()),
        created_at: api::auth::created_at_now(),
    };
    let mut stored = store
        .get_or_insert_signing_key(SIGNING_KEY_NAME, &candidate)
        .await?;
    if stored.algorithm == "HS256" {
        stored = store
            .replace_signing_key(SIGNING_KEY_NAME, &stored, &candidate)
            .await?;
        tracing::warn!(
            "the token signing key was stored in clear; it is replaced by a new key sealed \
             with the key file, so the tokens issued before stop working: users log in again"
        );
    }
    let path = key_file.map_or_else(
        || std::path::PathBuf::from("(in memory)"),
        std::path::Path::to_path_buf,
    );
    if stored.algorithm != SEALED_SIGNING_KEY {
        return Err(RootError::KeyFile {
            path,
            message: format!(
                "the store's token signing key is of an unknown kind {:?} (a newer version?)",
                stored.algorithm
            ),
        });
    }
    sealing
        .open(SIGNING_KEY_PURPOSE, &stored.key)
        .map_err(|_| RootError::KeyFile {
            path,
            message: "does not open the token signing key in the store: it is not the key file \
                      the store was sealed with; give that file (--key-file, \
                      OAKESTRA_ROOT_KEY_FILE or key_file in the configuration file)"
                .into(),
        })
}

/// First-start set-up, idempotent: the key file and the token signing key sealed with it
/// ([`load_sealing_key`], [`token_signing_key`]), the `Admin` account and the `root`
/// organization. Access tokens live `access_token_ttl`.
pub async fn bootstrap(
    store: &Arc<dyn Store>,
    key_file: Option<&std::path::Path>,
    access_token_ttl: std::time::Duration,
) -> Result<TokenService, RootError> {
    let sealing = load_sealing_key(store, key_file).await?;
    let key = token_signing_key(store, &sealing, key_file).await?;
    let admin = match store.user_by_name(DEFAULT_ADMIN).await? {
        Some(u) => {
            let hash = u.password_hash.clone();
            let default_password =
                tokio::task::spawn_blocking(move || auth::verify_password("Admin", &hash))
                    .await
                    .unwrap_or(false);
            if default_password {
                tracing::warn!(
                    "the account Admin still has the default password \"Admin\": change it \
                     (POST /api/user/Admin {{\"oldPassword\":\"Admin\",\"newPassword\":…}})"
                );
            }
            u
        }
        None => {
            let password_hash = tokio::task::spawn_blocking(|| hash_password("Admin"))
                .await
                .map_err(|e| RootError::Server {
                    what: "password hashing",
                    message: e.to_string(),
                })?;
            let user = UserRecord {
                id: new_object_id(),
                name: DEFAULT_ADMIN.into(),
                email: String::new(),
                password_hash,
                created_at: api::auth::created_at_now(),
                token_version: 0,
                extra: serde_json::Map::new(),
            };
            match store.create_user(&user).await {
                Ok(()) => {
                    tracing::warn!(
                        "created the default account Admin with password \"Admin\": change it now \
                         (POST /api/user/Admin {{\"oldPassword\":\"Admin\",\"newPassword\":…}})"
                    );
                    user
                }
                // Another root process on the same store was faster.
                Err(e) if e.is_conflict() => store.user_by_name(DEFAULT_ADMIN).await?.ok_or(e)?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if store
        .organization_by_name(api::auth::DEFAULT_ORGANIZATION)
        .await?
        .is_none()
    {
        let org = OrganizationRecord {
            id: new_object_id(),
            name: api::auth::DEFAULT_ORGANIZATION.into(),
            members: vec![Member {
                user_id: admin.id.to_string(),
                roles: roles::ALL.iter().map(|r| (*r).to_owned()).collect(),
            }],
            extra: serde_json::Map::new(),
        };
        match store.create_organization(&org).await {
            Ok(()) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(TokenService::with_lifetimes(
        &key,
        access_token_ttl,
        auth::REFRESH_TOKEN_TTL,
    ))
}

/// A root running in the background.
#[derive(Debug)]
pub struct RunningRoot {
    /// Where the REST API listens.
    pub rest_addr: SocketAddr,
    /// Where clusters dial (gRPC), when the cluster link runs.
    pub grpc_addr: Option<SocketAddr>,
    /// The second address of the dashboard (`Config::dashboard_listen`), if any.
    pub dashboard_addr: Option<SocketAddr>,
    /// Whether the REST API (and dashboard) speak TLS (`https://`).
    pub tls: bool,
    /// The store.
    pub store: Arc<dyn Store>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<(), RootError>>>,
}

impl RunningRoot {
    /// Stops serving and waits for the servers to finish.
    pub async fn stop(self) -> Result<(), RootError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the servers stop (after [`RunningRoot::stop`] or a shutdown handle, or
    /// when one fails: then the others are stopped too and its error is returned).
    pub async fn wait(self) -> Result<(), RootError> {
        let mut servers = self.servers;
        let mut result = Ok(());
        while !servers.is_empty() {
            let (done, _, rest) = futures_select_all(servers).await;
            servers = rest;
            let outcome = match done {
                Ok(r) => r,
                Err(e) => Err(RootError::Server {
                    what: "a server task",
                    message: e.to_string(),
                }),
            };
            if let Err(e) = outcome {
                let _ = self.shutdown.send(true);
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// A handle that stops the root when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Waits for the first of several tasks (a tiny `select_all`, to avoid a futures dependency).
async fn futures_select_all<T>(
    mut handles: Vec<JoinHandle<T>>,
) -> (Result<T, tokio::task::JoinError>, usize, Vec<JoinHandle<T>>) {
    let (result, index) = std::future::poll_fn(|cx| {
        for (i, h) in handles.iter_mut().enumerate() {
            if let std::task::Poll::Ready(r) = std::pin::Pin::new(h).poll(cx) {
                return std::task::Poll::Ready((r, i));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    handles.remove(index);
    (result, index, handles)
}

/// Starts a root: opens the store, bootstraps it, binds the REST API and the cluster gRPC
/// endpoint and serves both in the background. Returns once both accept connections.
pub async fn start(config: Config) -> Result<RunningRoot, RootError> {
    let files = oakestra_daemon::http::raise_file_limit();
    tracing::debug!(?files, "open-file limit");
    oakestra_daemon::private::dir(&config.data_dir).map_err(|source| RootError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let store = monitor::timed_store::timed(open_store(&config).await?);
    tracing::info!(store = %store.describe(), "store opened");
    let report = store.repair().await?;
    if !report.is_clean() {
        tracing::warn!(
            ?report,
            "repaired what an interrupted write left in the store"
        );
    }
    let released = addresses::release_orphans(store.as_ref()).await?;
    if released > 0 {
        tracing::warn!(
            released,
            "released addresses held for services that do not exist (an interrupted create)"
        );
    }
    let key_file = match config.store {
        StoreLocation::Memory => None,
        _ => Some(config.key_file.as_path()),
    };
    let tokens = bootstrap(&store, key_file, config.access_token_ttl).await?;
    match tokens::ensure_bootstrap_token(store.as_ref(), &config.data_dir).await {
        Ok(tokens::Bootstrap::Created { path, .. }) => tracing::info!(
            file = %path.display(),
            "created the cluster join token `bootstrap`; clusters on this machine read it from that file, \
             others need it (or one from `oakestra-root token create`)"
        ),
        Ok(tokens::Bootstrap::Existing) => {}
        Err(e) => tracing::warn!("no bootstrap join token: {e}"),
    }
    let link = ClusterLink::new(
        Arc::clone(&store),
        LinkConfig {
            inactive_after: config.cluster_timeout,
            worker_subnet_prefix: config.worker_subnet_prefix,
            ..LinkConfig::default()
        },
    );
    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| RootError::Bind {
            what: "cluster gRPC endpoint",
            flag: "grpc-listen",
            addr: config.grpc_listen,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| RootError::Bind {
            what: "cluster gRPC endpoint",
            flag: "grpc-listen",
            addr: config.grpc_listen,
            source,
        })?;
    let lifecycle: Arc<dyn ServiceLifecycle> = link.clone();
    let mut root = start_with(config, store, tokens, lifecycle).await?;
    let mut stop = root.shutdown.subscribe();
    root.servers.push(tokio::spawn(async move {
        grpc::serve(grpc_listener, link, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| RootError::Server {
            what: "the cluster gRPC endpoint",
            message: e.to_string(),
        })
    }));
    tracing::info!(%grpc_addr, "cluster gRPC endpoint listening");
    root.grpc_addr = Some(grpc_addr);
    Ok(root)
}

/// Like [`start`] without the cluster link, with the parts given (API tests, and `oak up`
/// variants with their own lifecycle).
pub async fn start_with(
    config: Config,
    store: Arc<dyn Store>,
    tokens: TokenService,
    lifecycle: Arc<dyn ServiceLifecycle>,
) -> Result<RunningRoot, RootError> {
    let mut state = AppState::new(
        Arc::clone(&store),
        tokens,
        lifecycle,
        config.cluster_timeout,
    );
    state.metrics_token = config.metrics_token.as_deref().map(Arc::from);
    let loaded = monitor::persist::load(store.as_ref(), &state.monitor)
        .await
        .map_err(RootError::from)?;
    if loaded != monitor::persist::Loaded::default() {
        tracing::info!(
            events = loaded.events,
            histories = loaded.histories,
            expired = loaded.expired,
            "events and usage history read from the store"
        );
    }
    let monitor = Arc::clone(&state.monitor);
    let mut metrics = Metrics::new();
    state.monitor.metrics.register(metrics.registry_mut());
    monitor::timed_store::register(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RootError::Bind {
            what: "REST API",
            flag: "listen",
            addr: config.listen,
            source,
        })?;
    let rest_addr = listener.local_addr().map_err(|source| RootError::Bind {
        what: "REST API",
        flag: "listen",
        addr: config.listen,
        source,
    })?;
    let dashboard_listener = match config.dashboard_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| RootError::Bind {
                    what: "dashboard",
                    flag: "dashboard-listen",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let tls = match &config.tls {
        Some(files) => Some(
            oakestra_daemon::tls::acceptor(&files.cert, &files.key).map_err(|message| {
                RootError::Server {
                    what: "TLS set-up",
                    message,
                }
            })?,
        ),
        None => None,
    };
    let (shutdown, stop) = watch::channel(false);
    let replicas = api::replicas::spawn(state.clone(), stop.clone());
    let app = NormalizePathLayer::trim_trailing_slash().layer(api::router(state, metrics));
    let mut servers = vec![serve_app(
        listener,
        app.clone(),
        config.http,
        tls.clone(),
        stop.clone(),
        "the REST API",
    )];
    servers.push(tokio::spawn(async move {
        let _ = replicas.await;
        Ok(())
    }));
    {
        let store = Arc::clone(&store);
        let stop = stop.clone();
        servers.push(tokio::spawn(async move {
            monitor::persist::run(store, monitor, loaded, stop).await;
            Ok(())
        }));
    }
    let mut dashboard_addr = None;
    if let Some(listener) = dashboard_listener {
        let addr = listener.local_addr().map_err(|source| RootError::Server {
            what: "the dashboard",
            message: source.to_string(),
        })?;
        dashboard_addr = Some(addr);
        // The same application: the dashboard's scripts call the API on their own origin.
        servers.push(serve_app(
            listener,
            app,
            config.http,
            tls.clone(),
            stop,
            "the dashboard",
        ));
        tracing::info!(%addr, "dashboard listening");
    }
    tracing::info!(%rest_addr, "REST API listening; dashboard at /, docs at /api/docs");
    Ok(RunningRoot {
        rest_addr,
        grpc_addr: None,
        dashboard_addr,
        tls: tls.is_some(),
        store,
        shutdown,
        servers,
    })
}

/// Serves `app` on `listener` with the configured limits until `stop` turns true.
fn serve_app(
    listener: TcpListener,
    app: tower_http::normalize_path::NormalizePath<axum::Router>,
    limits: oakestra_daemon::http::HttpLimits,
    tls: Option<oakestra_daemon::tls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) -> JoinHandle<Result<(), RootError>> {
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        oakestra_daemon::http::serve_tls(listener, app, limits, tls, stopped, what).await;
        Ok(())
    })
}

/// Runs a root until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), RootError> {
    let root = start(config).await?;
    // Machine-readable line for scripts and tests that start the binary on port 0.
    let scheme = if root.tls { "https" } else { "http" };
    println!(
        "oakestra-root: REST API listening on {scheme}://{}",
        root.rest_addr
    );
    if let Some(grpc) = root.grpc_addr {
        println!("oakestra-root: cluster gRPC listening on {grpc}");
    }
    if let Some(dashboard) = root.dashboard_addr {
        println!("oakestra-root: dashboard also on {scheme}://{dashboard}");
    }
    let stopper = root.shutdown_handle();
    tokio::spawn(async move {
        oakestra_daemon::shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stopper.send(true);
    });
    root.wait().await
}
