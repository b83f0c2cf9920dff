//! The one HTTP server loop of every daemon's API (root REST API and dashboard, the cluster's
//! worker API), with the limits an orchestrator reachable from a network needs:
//!
//! * **header read timeout** ([`HttpLimits::header_read_timeout`]): a client must send a whole
//!   request head within it, the first one and each one after on a kept-alive connection;
//!   otherwise the connection is closed. Half-open "slow loris" requests hold nothing for long.
//! * **body read timeout** ([`HttpLimits::body_read_timeout`]): the gap allowed between two
//!   pieces of a request body; a stalled upload fails instead of holding its handler.
//! * **at most [`HttpLimits::max_connections`] connections at once**: one more is answered
//!   `503` with a JSON body that says the limit and is closed, instead of running the process
//!   out of file descriptors (which would stop it accepting anyone, workers and users alike).
//!   [`HttpLimits::effective_max_connections`] keeps the limit below the process's file limit.
//!
//! * **JSON everywhere**: the answers hyper writes itself to a request it cannot parse (414,
//!   431, 400) carry the same `{code, status, message}` body as every other error
//!   ([`crate::json_parse_errors`]).
//!
//! [`raise_file_limit`] lifts the soft `RLIMIT_NOFILE` to the hard one at start, as Go's runtime
//! does; the systemd units in `deploy/` set `LimitNOFILE` too.

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};
use tower_http::timeout::TimeoutBody;

/// Timeouts and the connection limit of one HTTP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client may take to send a request head (also the idle time allowed between
    /// two requests on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// How long a request body may stall between two of its pieces.
    pub body_read_timeout: Duration,
    /// Connections served at once; one more is refused with `503`.
    pub max_connections: usize,
}

impl HttpLimits {
    /// Default [`HttpLimits::header_read_timeout`]: 10 s.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`HttpLimits::body_read_timeout`]: 30 s.
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`HttpLimits::max_connections`]: 4,096.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// File descriptors kept out of the connection limit for everything else a daemon opens
    /// (store files, gRPC and MQTT sessions, the broker's clients, logs).
    pub const RESERVED_FILES: u64 = 256;

    /// The connection limit that fits in `open_files` file descriptors (the soft
    /// `RLIMIT_NOFILE`): at most half of what is left after [`HttpLimits::RESERVED_FILES`], so
    /// that two listeners in one process (`oak up`) and the rest of the daemon still have
    /// descriptors when every connection slot is taken. At least 16.
    pub fn effective_max_connections(&self, open_files: Option<u64>) -> usize {
        let Some(files) = open_files else {
            return self.max_connections;
        };
        let fits = files.saturating_sub(Self::RESERVED_FILES) / 2;
        let fits = usize::try_from(fits).unwrap_or(usize::MAX).max(16);
        self.max_connections.min(fits)
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Raises the soft limit of open files to the hard limit and returns the soft limit in force
/// afterwards (`None` where it cannot be read).
pub fn raise_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The body of the refusal when every connection slot is taken.
pub fn busy_body(max_connections: usize) -> String {
    serde_json::json!({
        "code": 503,
        "status": "Service Unavailable",
        "message": format!(
            "too many connections: this server serves {max_connections} at once; retry in a \
             moment (operators: raise --max-connections and the open-file limit)"
        ),
    })
    .to_string()
}

/// Serves `service` on `listener` with `limits` until `shutdown` resolves, then lets open
/// requests finish (at most 10 s). `what` names the listener in logs ("the REST API").
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    what: &'static str,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    serve_tls(listener, service, limits, None, shutdown, what).await;
}

/// Like [`serve`], with TLS when `tls` is given ([`crate::tls::acceptor`]): each connection's
/// handshake must finish within the header read timeout; HTTP/2 is offered by ALPN.
pub async fn serve_tls<S>(
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    what: &'static str,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let max = limits.effective_max_connections(current_file_limit());
    if max < limits.max_connections {
        tracing::warn!(
            max_connections = max,
            asked = limits.max_connections,
            "{what}: the open-file limit allows {max} connections only; raise it (ulimit -n, \
             LimitNOFILE) to serve more"
        );
    }
    let slots = Arc::new(Semaphore::new(max));
    let busy = Arc::<str>::from(busy_reply(max));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_error: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: the connection waits in the backlog; try again shortly.
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!("{what}: cannot accept a connection: {e}");
                    last_accept_error = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            let busy = Arc::clone(&busy);
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    stream.write_all(busy.as_bytes()).await?;
                    stream.shutdown().await
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_read_timeout;
        let svc = service
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                req.map(|b| Body::new(TimeoutBody::new(body_timeout, b)))
            });
        let watcher = graceful.watcher();
        let header_timeout = limits.header_read_timeout;
        match tls.clone() {
            None => {
                let conn = connection(stream, svc, header_timeout);
                tokio::spawn(async move {
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::trace!("connection ended: {e}");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = connection(stream, svc, header_timeout);
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::trace!("connection ended: {e}");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("{what}: requests still open after 10 s were cut");
    }
}

/// One connection's HTTP/1.1 or HTTP/2 server, with the timeouts of [`HttpLimits`].
fn connection<I, S>(
    io: I,
    svc: S,
    header_timeout: Duration,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = impl std::fmt::Display> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<hyper::Request<Incoming>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    builder
        .serve_connection_with_upgrades(
            TokioIo::new(crate::json_parse_errors::JsonParseErrors::new(io)),
            TowerToHyperService::new(svc),
        )
        .into_owned()
}

fn busy_reply(max: usize) -> String {
    let body = busy_body(max);
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The soft limit of open files in force (`None` where it cannot be read).
pub fn current_file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    fn limits(max: usize) -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            max_connections: max,
        }
    }

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "hello" }))
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            app,
            limits,
            async move {
                let _ = rx.await;
            },
            "test",
        ));
        (addr, tx)
    }

    /// Reads until the peer closes or 3 s pass; returns what came and whether it closed.
    async fn read_to_close(stream: &mut TcpStream) -> (String, bool) {
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out))
            .await
            .is_ok();
        (String::from_utf8_lossy(&out).into_owned(), closed)
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut s).await.0
    }

    #[tokio::test]
    async fn requests_hyper_cannot_parse_get_json_errors() {
        let (addr, _stop) = start(limits(8)).await;
        let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
        let big_head = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "b".repeat(500_000)
        );
        for (request, code) in [
            (long_uri, 414),
            (big_head, 431),
            ("GET / HTTP/1.1\r\nbad header\r\n\r\n".to_owned(), 400),
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(request.as_bytes()).await;
            let (answer, closed) = read_to_close(&mut s).await;
            assert!(closed, "{answer}");
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {code} ")), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["code"], code);
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
        // The server still answers normally.
        assert!(get(addr).await.ends_with("hello"));
    }

    #[tokio::test]
    async fn a_half_sent_request_head_is_closed_after_the_timeout() {
        let (addr, _stop) = start(limits(64)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let (_, closed) = read_to_close(&mut s).await;
        assert!(
            closed,
            "the server kept a half-open request past its timeout"
        );
        assert!(get(addr).await.ends_with("hello"));
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_after_the_timeout() {
        let (addr, _stop) = start(limits(64)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (reply, closed) = read_to_close(&mut s).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(closed, "an idle kept-alive connection stayed open");
    }

    #[tokio::test]
    async fn a_stalled_body_fails_instead_of_holding_the_handler() {
        let (addr, _stop) = start(limits(64)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let (reply, closed) = read_to_close(&mut s).await;
        assert!(closed, "a stalled body held its connection: {reply}");
        assert!(!reply.contains("200 OK"), "{reply}");
    }

    #[tokio::test]
    async fn one_connection_over_the_limit_gets_a_json_503_and_slots_come_back() {
        let (addr, _stop) = start(limits(16)).await;
        let mut held = Vec::new();
        for _ in 0..16 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // Each sends part of a head so that it is really being served.
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let (reply, closed) = read_to_close(&mut extra).await;
        assert!(closed);
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        let body = reply.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], 503);
        assert!(json["message"].as_str().unwrap().contains("16 at once"));
        // The held ones time out, their slots come back, and a request is served again.
        for mut s in held {
            assert!(read_to_close(&mut s).await.1);
        }
        assert!(get(addr).await.ends_with("hello"));
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let (addr, stop) = start(limits(64)).await;
        assert!(get(addr).await.ends_with("hello"));
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn the_connection_limit_fits_in_the_file_limit() {
        let l = HttpLimits::default();
        assert_eq!(l.effective_max_connections(None), 4096);
        assert_eq!(l.effective_max_connections(Some(1_048_576)), 4096);
        assert_eq!(l.effective_max_connections(Some(1024)), 384);
        assert_eq!(l.effective_max_connections(Some(100)), 16);
    }
}
