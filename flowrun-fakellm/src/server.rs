//! The `FakeLlm` handle and its hand-rolled accept loop.
//!
//! Each connection is served by hyper's HTTP/1 connection driver in its own
//! task. The task keeps a second handle on the socket so that a handler can
//! ask for the connection to be reset: the task then sets `SO_LINGER` to 0
//! and drops the socket, and the kernel sends a TCP RST instead of any
//! HTTP response.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::config::FakeConfig;
use crate::handler;
use crate::record::{RecordedRequest, ReplyCounts};
use crate::reply::Reply;
use crate::state::Shared;

/// Lets a request handler reset the TCP connection it arrived on.
#[derive(Debug, Clone)]
pub(crate) struct ConnControl(Arc<Notify>);

impl ConnControl {
    /// Asks the connection task to abort the connection with a RST.
    pub(crate) fn reset(&self) {
        self.0.notify_one();
    }
}

/// A running fake LLM server on loopback.
///
/// Start one per test with [`FakeLlm::start`]; each binds its own port, so
/// tests may run in parallel. The server stops on [`FakeLlm::shutdown`] or
/// when the handle is dropped. Must be used inside a Tokio runtime.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use flowrun_fakellm::{FakeConfig, FakeLlm, Reply};
///
/// let fake = FakeLlm::start(FakeConfig::default()).await?;
/// fake.push(Reply::text("hi"));
/// fake.push_for_model("gpt-a", Reply::error(500, "boom"));
/// let base = fake.openai_base_url(); // http://127.0.0.1:PORT/v1
/// // ... point a client at `base` ...
/// assert_eq!(fake.request_count(), 0);
/// fake.shutdown().await;
/// # let _ = base;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl FakeLlm {
    /// Starts a server on `127.0.0.1` with a free port.
    pub async fn start(config: FakeConfig) -> io::Result<FakeLlm> {
        FakeLlm::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a server on `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, config: FakeConfig) -> io::Result<FakeLlm> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let stop = CancellationToken::new();
        let router = handler::router(Arc::clone(&shared));
        let accept_task = tokio::spawn(accept_loop(listener, router, stop.clone()));
        Ok(FakeLlm {
            addr,
            shared,
            stop,
            accept_task: Mutex::new(Some(accept_task)),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://IP:PORT/v1`: the base URL OpenAI clients expect (they append
    /// `/chat/completions`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://IP:PORT`: the base URL Anthropic clients expect (they append
    /// `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        self.base_url()
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &FakeConfig {
        &self.shared.config
    }

    /// Queues a reply for the next request of any model.
    pub fn push(&self, reply: Reply) {
        self.shared.lock().script.push(reply);
    }

    /// Queues several replies, in order, for requests of any model.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        let mut inner = self.shared.lock();
        for reply in replies {
            inner.script.push(reply);
        }
    }

    /// Queues a reply for the next request of `model`; it is served before
    /// anything in the global queue.
    pub fn push_for_model(&self, model: &str, reply: Reply) {
        self.shared.lock().script.push_for_model(model, reply);
    }

    /// Number of scripted replies not yet served.
    pub fn pending_replies(&self) -> usize {
        self.shared.lock().script.len()
    }

    /// Drops every scripted reply not yet served.
    pub fn clear_script(&self) {
        self.shared.lock().script.clear();
    }

    /// Every chat request received so far (both APIs), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Number of chat requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// The requests whose body named `model`.
    pub fn requests_for_model(&self, model: &str) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.model.as_deref() == Some(model))
            .cloned()
            .collect()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().requests.last().cloned()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// How many replies of each kind were served.
    pub fn reply_counts(&self) -> ReplyCounts {
        self.shared.lock().counts
    }

    /// How many error replies of each HTTP status were served (injected faults, scripted
    /// errors and request validation errors).
    pub fn error_counts(&self) -> std::collections::BTreeMap<u16, u64> {
        self.shared.lock().statuses.clone()
    }

    /// Stops accepting, closes every open connection (hung requests
    /// included) and waits for the connection tasks to end. Idempotent.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, router: Router, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, router.clone(), stop.clone()));
                }
                // Out of file descriptors and the like: back off a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection(stream: TcpStream, router: Router, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    // A second handle on the same socket, kept to set SO_LINGER on reset.
    let Ok((stream, socket)) = with_socket_handle(stream) else {
        return;
    };
    let reset = Arc::new(Notify::new());
    let control = ConnControl(Arc::clone(&reset));
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(control.clone());
        // `Router` is always ready, so `call` may be used without `poll_ready`.
        router.clone().call(request)
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = reset.notified() => {
            // Dropping both handles with a zero linger sends RST, not FIN.
            let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
        }
        () = stop.cancelled() => {}
    }
}

/// Splits `stream` into the stream to serve and a duplicate handle on the
/// same socket.
fn with_socket_handle(stream: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let handle = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, handle))
}
