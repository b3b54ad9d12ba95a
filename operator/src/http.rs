//! The operator's small HTTP endpoint: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! the kubelet's probes.
//!
//! Plain hyper 1 rather than axum: hyper, hyper-util and http-body-util are already compiled for
//! kube's client, so serving three fixed paths costs only their server halves, while axum would
//! add its router, extractors and their dependencies (matchit, serde_urlencoded, sync_wrapper,
//! ...) to a binary that has no other use for them. A `match` on the path is the whole router.

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::net::TcpListener;

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};

/// A client that opens a connection and sends nothing must not hold a task forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutdown waits for scrapes in flight before dropping them: well inside the
/// default 30 s termination grace period, which the leader hand-over needs more.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Readiness shared between the endpoint and whoever decides it (main, once this replica leads
/// and its caches are synced). Clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Not ready until [`set_ready(true)`](Self::set_ready).
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Serves until `shutdown` resolves, then lets requests in flight finish for a few seconds.
///
/// Errors accepting a connection (a peer that reset before accept, or running out of file
/// descriptors) are logged and retried: a metrics endpoint that exits on them would take the
/// liveness probe, and with it the operator, down for a transient condition.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    if !is_connection_error(&error) {
                        // EMFILE and friends: give in-flight connections time to close.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let health = health.clone();
        let service = service_fn(move |request| {
            let response = respond(&request, &metrics, &health);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(grace = ?SHUTDOWN_GRACE, "HTTP connections still open at shutdown were dropped");
    }
    Ok(())
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

fn respond(request: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            // Prometheus asks for OpenMetrics in its Accept header; curl and older scrapers
            // do not, and get the classic format they can read.
            let (body, content_type) = if accepts_openmetrics(request) {
                (metrics.encode(), OPENMETRICS_CONTENT_TYPE)
            } else {
                (metrics.encode_prometheus(), PROMETHEUS_CONTENT_TYPE)
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        "/readyz" if !health.is_ready() => plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => plain(StatusCode::OK, "ok\n"),
    }
}

fn accepts_openmetrics(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::oneshot,
        task::JoinHandle,
    };

    use super::*;
    use crate::metrics::StateCounts;

    const IO_TIMEOUT: Duration = Duration::from_secs(5);

    struct Counts;

    impl StateCounts for Counts {
        fn sessions_by_state(&self) -> Vec<(String, i64)> {
            vec![("Opened".into(), 7)]
        }
        fn jobs_by_state(&self) -> Vec<(String, i64)> {
            Vec::new()
        }
    }

    struct Server {
        addr: SocketAddr,
        health: Health,
        metrics: Arc<Metrics>,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let health = Health::new();
            let metrics = Arc::new(Metrics::new(Arc::new(Counts)));
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, metrics.clone(), health.clone(), async move {
                let _ = stopped.await;
            }));
            Self {
                addr,
                health,
                metrics,
                stop: Some(stop),
                task,
            }
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            tokio::time::timeout(IO_TIMEOUT, self.task)
                .await
                .expect("serve returns after shutdown")
                .expect("serve task")
                .expect("serve result");
        }
    }

    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim())
            })
        }
    }

    /// One HTTP/1.1 request over a fresh connection, read until the server closes it.
    async fn request(addr: SocketAddr, method: &str, path: &str, extra_headers: &str) -> Reply {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra_headers}\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            raw
        };
        let raw = tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .expect("reply within the timeout");
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete HTTP reply");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply {
            status,
            head: head.replace("\r\n", "\n"),
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn healthz_is_ok_while_running() {
        let server = Server::start().await;
        let reply = request(server.addr, "GET", "/healthz", "").await;
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert_eq!(reply.body, "ok\n");
        server.stop().await;
    }

    #[tokio::test]
    async fn readyz_follows_the_flag() {
        let server = Server::start().await;
        assert_eq!(request(server.addr, "GET", "/readyz", "").await.status, 503);
        server.health.set_ready(true);
        assert_eq!(request(server.addr, "GET", "/readyz", "").await.status, 200);
        // Losing leadership, say, makes it unready again.
        server.health.set_ready(false);
        assert_eq!(request(server.addr, "GET", "/readyz", "").await.status, 503);
        server.stop().await;
    }

    #[tokio::test]
    async fn metrics_in_openmetrics_when_asked() {
        let server = Server::start().await;
        server.metrics.status_write("PSSession");
        let reply = request(
            server.addr,
            "GET",
            "/metrics",
            "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert_eq!(reply.header("content-type"), Some(OPENMETRICS_CONTENT_TYPE));
        assert!(
            reply
                .body
                .contains("pssession_operator_sessions{state=\"Opened\"} 7\n"),
            "{}",
            reply.body
        );
        assert!(
            reply
                .body
                .contains("pssession_operator_status_writes_total{kind=\"PSSession\"} 1\n"),
            "{}",
            reply.body
        );
        assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);
        server.stop().await;
    }

    #[tokio::test]
    async fn metrics_in_prometheus_text_by_default() {
        let server = Server::start().await;
        let reply = request(server.addr, "GET", "/metrics", "").await;
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert_eq!(reply.header("content-type"), Some(PROMETHEUS_CONTENT_TYPE));
        assert!(
            reply
                .body
                .contains("pssession_operator_sessions{state=\"Opened\"} 7\n"),
            "{}",
            reply.body
        );
        assert!(!reply.body.contains("# EOF"), "{}", reply.body);
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_refused() {
        let server = Server::start().await;
        assert_eq!(request(server.addr, "GET", "/", "").await.status, 404);
        let reply = request(server.addr, "POST", "/metrics", "Content-Length: 0\r\n").await;
        assert_eq!(reply.status, 405, "{}", reply.head);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        server.stop().await;
    }

    #[tokio::test]
    async fn shutdown_ends_serve_with_an_idle_connection_open() {
        let server = Server::start().await;
        // A keep-alive connection that never sends a request must not hold the shutdown.
        let idle = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(request(server.addr, "GET", "/healthz", "").await.status, 200);
        server.stop().await;
        drop(idle);
    }
}
