//! Webhooks in: the HTTP listeners the host owns for sources holding a `listen` grant, and
//! the host side of the `ingest:plugin/webhook` interface.
//!
//! - **One listener per address**, bound when the first endpoint opens on it and kept for
//!   the rest of the process, through retries of the run. It speaks HTTP/1.1 (hyper), with
//!   a deadline on request heads and bodies and a cap on open connections.
//! - **A queue per endpoint.** A request to one of the endpoint's paths is read within the
//!   body limit (413 past it), given the next id and held, connection open, until the
//!   plugin answers it. A full queue (requests or bytes) answers 429 with `Retry-After`:
//!   the pipeline's backpressure reaches the sender.
//! - **Answers come from the plugin**: a refusal at once (`reject`), 2xx once the epoch
//!   holding the request has committed (`accept`, from the reader's `ack`).
//! - **A dropped endpoint** (the reader closed, or its instance discarded after a fault)
//!   leaves its queue in place: requests keep arriving within the limits, and those it had
//!   taken without answering are taken again, first, by the next endpoint opened on the same
//!   paths. [`shutdown`] answers whatever is still held 503 when the run ends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::{oneshot, Semaphore};
use wasmtime::component::Resource;

use crate::metrics::WebhookLabel;
use crate::plugin::bindings::types::Error;
use crate::plugin::bindings::webhook::{self as wit, Limits};
use crate::sandbox::PluginState;

/// The largest body an endpoint may ask for.
pub const MAX_BODY_CAP: u32 = 64 << 20;
/// The most requests an endpoint may hold.
pub const MAX_IN_FLIGHT_CAP: u32 = 1_000_000;
/// The most body bytes one endpoint holds; past it requests are answered 429.
const HELD_BYTES_CAP: usize = 512 << 20;
/// The longest `take` waits.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Time for a request's head, and then for its body, to arrive.
const READ_DEADLINE: Duration = Duration::from_secs(10);
/// Open connections per listener at most; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 10_000;
/// What a 429 asks the sender to wait, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

/// An answer for a held request: status and text body.
type Reply = (u16, String);

fn too_many() -> Reply {
    (429, "too many requests in flight; retry later\n".into())
}

fn too_large(max_body: usize) -> Reply {
    (
        413,
        format!("the body is over the limit of {max_body} bytes\n"),
    )
}

fn unanswered() -> Reply {
    (
        503,
        "the pipeline stopped before answering; retry later\n".into(),
    )
}

/// A request received and held until answered.
struct Held {
    id: u64,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    received_us: i64,
    reply: oneshot::Sender<Reply>,
}

/// The requests of one endpoint's paths.
struct Queue {
    paths: Vec<String>,
    /// Whether an endpoint serves the queue now.
    attached: bool,
    limits: Limits,
    /// Received, not yet taken.
    waiting: VecDeque<Held>,
    /// Taken by the endpoint, not yet answered.
    taken: BTreeMap<u64, Held>,
    /// Body bytes of `waiting` and `taken`.
    bytes: usize,
    next_id: u64,
}

impl Queue {
    fn held(&self) -> usize {
        self.waiting.len() + self.taken.len()
    }

    /// Answer `held`, forgetting it.
    fn answer(&mut self, held: Held, status: u16, body: String) {
        self.bytes -= held.body.len();
        let _ = held.reply.send((status, body));
    }
}

/// A queue and the signal that it has requests waiting.
struct Route {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// One bound address and the paths it serves.
struct Listener {
    addr: SocketAddr,
    routes: Mutex<HashMap<String, Arc<Route>>>,
}

/// The process's listeners, by address.
fn listeners() -> &'static Mutex<HashMap<SocketAddr, Arc<Listener>>> {
    static LISTENERS: OnceLock<Mutex<HashMap<SocketAddr, Arc<Listener>>>> = OnceLock::new();
    LISTENERS.get_or_init(Mutex::default)
}

/// The listener on `addr`, bound now if it is not yet.
fn listener(addr: SocketAddr) -> Result<Arc<Listener>, String> {
    let mut all = listeners().lock().unwrap();
    if let Some(l) = all.get(&addr) {
        return Ok(l.clone());
    }
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "the webhook listener needs the host's runtime".to_string())?;
    let socket =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let listener = Arc::new(Listener {
        addr,
        routes: Mutex::default(),
    });
    let serving = listener.clone();
    let guard = runtime.enter();
    let socket = tokio::net::TcpListener::from_std(socket)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    runtime.spawn(accept_loop(serving, socket));
    drop(guard);
    tracing::info!("webhooks: listening on http://{addr}");
    all.insert(addr, listener.clone());
    Ok(listener)
}

async fn accept_loop(listener: Arc<Listener>, socket: tokio::net::TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            // Out of descriptors, say: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let listener = listener.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let listener = listener.clone();
                async move { Ok::<_, Infallible>(handle(&listener, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_DEADLINE)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

fn response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == 429 || status == 503 {
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, RETRY_AFTER_SECS.into());
    }
    r
}

/// Answer one request: hold it for its endpoint, or refuse it.
async fn handle(listener: &Listener, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let route = listener.routes.lock().unwrap().get(&path).cloned();
    let (status, body) = match route {
        None => (404, format!("no webhook is served at {path}\n")),
        Some(route) => hold(&route, req).await,
    };
    let m = crate::metrics::get();
    let label = WebhookLabel {
        path: if status == 404 {
            "(unknown)".into()
        } else {
            path
        },
        status,
    };
    m.webhook_requests.get_or_create(&label).inc();
    m.webhook_seconds.observe(started.elapsed().as_secs_f64());
    response(status, body)
}

/// Read `req` into `route`'s queue and wait for its answer.
async fn hold(route: &Route, req: Request<Incoming>) -> Reply {
    let method = req.method().as_str().to_string();
    if method != "POST" && method != "PUT" {
        return (405, format!("{method} is not accepted; send POST or PUT\n"));
    }
    let (max_body, no_room) = {
        let q = route.queue.lock().unwrap();
        (q.limits.max_body_bytes as usize, full(&q))
    };
    if no_room {
        return too_many();
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return too_large(max_body);
    }
    let (parts, incoming) = req.into_parts();
    let body = match tokio::time::timeout(READ_DEADLINE, Limited::new(incoming, max_body).collect())
        .await
    {
        Err(_) => return (408, "the body did not arrive in time\n".into()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(max_body),
        Ok(Err(e)) => return (400, format!("the body could not be read: {e}\n")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let (tx, rx) = oneshot::channel();
    {
        let mut q = route.queue.lock().unwrap();
        if full(&q) {
            return too_many();
        }
        let id = q.next_id;
        q.next_id += 1;
        q.bytes += body.len();
        q.waiting.push_back(Held {
            id,
            method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers,
            body,
            received_us: now_us(),
            reply: tx,
        });
    }
    route.ready.notify_all();
    rx.await.unwrap_or_else(|_| unanswered())
}

fn full(q: &Queue) -> bool {
    q.held() >= q.limits.max_in_flight as usize || q.bytes >= HELD_BYTES_CAP
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Answer 503 to every request still held, on every listener: the run is ending.
pub fn shutdown() {
    let all: Vec<Arc<Listener>> = listeners().lock().unwrap().values().cloned().collect();
    for listener in all {
        let routes: Vec<Arc<Route>> = listener.routes.lock().unwrap().values().cloned().collect();
        for route in routes {
            let mut q = route.queue.lock().unwrap();
            let taken = std::mem::take(&mut q.taken);
            let held: Vec<Held> = q.waiting.drain(..).chain(taken.into_values()).collect();
            for h in held {
                let (status, body) = unanswered();
                q.answer(h, status, body);
            }
        }
    }
}

/// An endpoint a plugin opened: the resource behind `webhook.endpoint`.
pub struct Endpoint {
    route: Arc<Route>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let mut q = self.route.queue.lock().unwrap();
        q.attached = false;
        // Taken and not answered: first in line for the next endpoint.
        let taken = std::mem::take(&mut q.taken);
        for (_, held) in taken.into_iter().rev() {
            q.waiting.push_front(held);
        }
    }
}

/// Open an endpoint on `paths` of the listener at `addr`.
fn open(addr: SocketAddr, mut paths: Vec<String>, limits: Limits) -> Result<Endpoint, Error> {
    if paths.is_empty() {
        return Err(Error::InvalidConfig(
            "a webhook endpoint needs at least one path".into(),
        ));
    }
    if let Some(bad) = paths
        .iter()
        .find(|p| !p.starts_with('/') || p.contains(['?', '#', ' ']))
    {
        return Err(Error::InvalidConfig(format!(
            "webhook path {bad:?} is not a path; write e.g. \"/hooks/github\""
        )));
    }
    let limits = Limits {
        max_body_bytes: limits.max_body_bytes.clamp(1, MAX_BODY_CAP),
        max_in_flight: limits.max_in_flight.clamp(1, MAX_IN_FLIGHT_CAP),
    };
    let listener = listener(addr).map_err(Error::Fatal)?;
    let mut routes = listener.routes.lock().unwrap();
    paths.sort();
    paths.dedup();
    let sorted = paths;
    // The queue a dropped endpoint left on exactly these paths is taken over.
    let mut reused: Option<Arc<Route>> = None;
    for path in &sorted {
        let Some(route) = routes.get(path) else {
            continue;
        };
        let q = route.queue.lock().unwrap();
        if q.attached {
            return Err(Error::InvalidConfig(format!(
                "webhook path {path} on {} is served by another endpoint already",
                listener.addr
            )));
        }
        if q.paths == sorted {
            reused = Some(route.clone());
        }
    }
    let route = match reused {
        Some(route) => {
            let mut q = route.queue.lock().unwrap();
            q.attached = true;
            q.limits = limits;
            drop(q);
            route
        }
        None => {
            // Paths a dropped endpoint served with others: its held requests are refused.
            for path in &sorted {
                if let Some(old) = routes.remove(path) {
                    let mut q = old.queue.lock().unwrap();
                    let held: Vec<Held> = q.waiting.drain(..).collect();
                    for h in held {
                        q.answer(h, 503, "the endpoint was reconfigured; retry\n".into());
                    }
                }
            }
            let route = Arc::new(Route {
                queue: Mutex::new(Queue {
                    paths: sorted.clone(),
                    attached: true,
                    limits,
                    waiting: VecDeque::new(),
                    taken: BTreeMap::new(),
                    bytes: 0,
                    // Ids keep growing across runs: they start at the time in microseconds.
                    next_id: now_us().max(1) as u64,
                }),
                ready: Condvar::new(),
            });
            for path in &sorted {
                routes.insert(path.clone(), route.clone());
            }
            route
        }
    };
    tracing::info!(
        "webhooks: serving {} on http://{}",
        sorted.join(", "),
        listener.addr
    );
    Ok(Endpoint { route })
}

impl Endpoint {
    /// Up to `max` requests, waiting at most `wait` for the first.
    fn take(&self, max: u32, wait: Duration) -> Vec<wit::Request> {
        let mut q = self.route.queue.lock().unwrap();
        if q.waiting.is_empty() && !wait.is_zero() {
            q = self
                .route
                .ready
                .wait_timeout(q, wait.min(MAX_WAIT))
                .unwrap()
                .0;
        }
        let n = q.waiting.len().min(max as usize);
        let mut out = Vec::with_capacity(n);
        for held in q.waiting.drain(..n).collect::<Vec<_>>() {
            out.push(wit::Request {
                id: held.id,
                method: held.method.clone(),
                path: held.path.clone(),
                query: held.query.clone(),
                headers: held.headers.clone(),
                body: held.body.to_vec(),
                received_us: held.received_us,
            });
            q.taken.insert(held.id, held);
        }
        out
    }

    fn reject(&self, id: u64, status: u16, reason: String) {
        let mut q = self.route.queue.lock().unwrap();
        if let Some(held) = q.taken.remove(&id) {
            let status = if (400..=599).contains(&status) {
                status
            } else {
                400
            };
            q.answer(held, status, reason + "\n");
        }
    }

    fn accept(&self, up_to: u64, status: u16) {
        let mut q = self.route.queue.lock().unwrap();
        let status = if (200..=299).contains(&status) {
            status
        } else {
            200
        };
        let later = q.taken.split_off(&(up_to.saturating_add(1)));
        let done = std::mem::replace(&mut q.taken, later);
        for (_, held) in done {
            q.answer(held, status, "accepted\n".into());
        }
    }
}

impl wit::Host for PluginState {}

impl wit::HostEndpoint for PluginState {
    fn open(
        &mut self,
        paths: Vec<String>,
        limits: Limits,
    ) -> wasmtime::Result<Result<Resource<Endpoint>, Error>> {
        let Some(addr) = self.listen else {
            return Ok(Err(Error::AccessDenied(format!(
                "{} has no `listen` grant; add e.g. `listen = \"127.0.0.1:8088\"` to its stage in pipeline.toml",
                self.label
            ))));
        };
        match open(addr, paths, limits) {
            Ok(endpoint) => Ok(Ok(self.table.push(endpoint)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn take(
        &mut self,
        endpoint: Resource<Endpoint>,
        max: u32,
        wait_ms: u32,
    ) -> wasmtime::Result<Vec<wit::Request>> {
        let endpoint = self.table.get(&endpoint)?;
        Ok(endpoint.take(max, Duration::from_millis(wait_ms as u64)))
    }

    fn reject(
        &mut self,
        endpoint: Resource<Endpoint>,
        id: u64,
        status: u16,
        reason: String,
    ) -> wasmtime::Result<()> {
        self.table.get(&endpoint)?.reject(id, status, reason);
        Ok(())
    }

    fn accept(
        &mut self,
        endpoint: Resource<Endpoint>,
        up_to: u64,
        status: u16,
    ) -> wasmtime::Result<()> {
        self.table.get(&endpoint)?.accept(up_to, status);
        Ok(())
    }

    fn drop(&mut self, endpoint: Resource<Endpoint>) -> wasmtime::Result<()> {
        self.table.delete(endpoint)?;
        Ok(())
    }
}
