//! The plane's I/O: threads that accept on the balancer's port and proxy, each on an event loop
//! of its own (a current-thread Tokio runtime), with its own upstream connections, sharing
//! only the published table and their counts. Nothing here holds Python's GIL.
//!
//! The Python control plane learns what it must act on through `Shared::events`, and is woken
//! by a byte on a socket it reads: a replica that failed a request (it counts it and wakes the
//! heartbeats), a retry, a 503, and every connection handed over to its front end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::TcpListener as StdListener;
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::http::{self, Head, Limits, Reply};
use crate::route::Table;

/// Fixed when the plane starts.
pub struct Config {
    pub limits: Limits,
    pub not_proxied: Vec<Vec<u8>>,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub bounds_ns: Vec<u64>,
    pub reasons: Vec<Vec<u8>>,         // status -> reason phrase (empty: "Unknown")
    pub not_found: (Vec<u8>, Vec<u8>), // the 404 -> 400 body, around the JSON-escaped path
    pub unavailable: Vec<u8>,          // the 503 body when no replica answered
    pub too_many: Vec<u8>,             // the whole 503 answer past max_connections
    pub json: Vec<u8>,
}

/// What a thread counted: answers by (replica, status), the latency histogram, in flight.
#[derive(Default)]
pub struct Counts {
    pub answers: HashMap<(Arc<str>, u16), u64>,
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
    pub in_flight: HashMap<Arc<str>, i64>,
}

pub enum Event {
    Failed { replica: Arc<str>, error: String },
    Retried,
    Unavailable,
    Handover { fd: RawFd, data: Vec<u8> },
}

pub struct Shared {
    pub config: Config,
    pub table: RwLock<Arc<Table>>,
    pub generation: AtomicU64,
    pub counts: Vec<Mutex<Counts>>,
    pub events: Mutex<Vec<Event>>,
    pub wake_fd: RawFd,
    pub connections: AtomicUsize,
}

impl Shared {
    pub fn publish(&self, table: Table) {
        *self.table.write().unwrap() = Arc::new(table);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn tell(&self, event: Event) {
        let mut events = self.events.lock().unwrap();
        let was_empty = events.is_empty();
        events.push(event);
        drop(events);
        if was_empty {
            // Non-blocking: when the socket is full, a wake-up is pending already.
            unsafe { libc::send(self.wake_fd, b"!".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
        }
    }
}

/// One thread's event loop, until `stop` fires: then every connection it holds is dropped.
pub fn run_thread(index: usize, listener: StdListener, shared: Arc<Shared>,
                  stop: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()
        .expect("a Tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::from_std(listener).expect("the listener joins the loop");
        let thread = Rc::new(Thread::new(index, shared));
        tokio::select! {
            _ = stop => {}
            _ = accept(listener, thread) => {}
        }
    });
}

async fn accept(listener: TcpListener, thread: Rc<Thread>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let shared = &thread.shared;
                if shared.connections.load(Ordering::Relaxed) >= shared.config.max_connections {
                    tokio::task::spawn_local(refuse(stream, thread.clone()));
                } else {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::task::spawn_local(serve(stream, thread.clone()));
                }
            }
            // Out of descriptors, say: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Past `max_connections`: the 503 goes out, the sending side is shut, what the client still
/// sends is drained for a second (a close with unread input would reset the answer away).
async fn refuse(mut stream: TcpStream, thread: Rc<Thread>) {
    if stream.write_all(&thread.shared.config.too_many).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    }).await;
}

struct Counted(Rc<Thread>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.shared.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(mut stream: TcpStream, thread: Rc<Thread>) {
    let counted = Counted(thread.clone());
    let config = &thread.shared.config;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if buf.is_empty() {
            // No request begun: a connection idle this long is closed without a word.
            match tokio::time::timeout(config.idle_timeout, stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        let get = match http::read_request(&buf, &config.limits, &config.not_proxied) {
            Head::Proxy(get) => get,
            Head::Handover => {
                drop(counted); // the front end counts it from now on
                hand_over(stream, buf, &thread.shared);
                return;
            }
        };
        out.clear();
        let (keep_alive, len) = (get.keep_alive, get.len);
        thread.proxy(&get, &mut out).await;
        if stream.write_all(&out).await.is_err() {
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
        buf.drain(..len);
    }
}

fn hand_over(stream: TcpStream, data: Vec<u8>, shared: &Shared) {
    if let Ok(stream) = stream.into_std() {
        shared.tell(Event::Handover { fd: stream.into_raw_fd(), data });
    }
}

/// A thread's state: its counts, its upstream connections, its copy of the current table.
struct Thread {
    shared: Arc<Shared>,
    index: usize,
    table: RefCell<(u64, Arc<Table>)>,
    idle: RefCell<HashMap<Arc<str>, Pool>>,
    random: RefCell<u64>,
}

struct Pool {
    address: (String, u16),
    idle: Vec<Upstream>,
}

const MAX_IDLE: usize = 256;
const MAX_TRIES: usize = 3;

enum Failure {
    /// A kept connection the replica had closed: nothing was answered, worth a new one.
    ClosedIdle,
    Failed(String),
}

impl Thread {
    fn new(index: usize, shared: Arc<Shared>) -> Self {
        let table = shared.table.read().unwrap().clone();
        let generation = shared.generation.load(Ordering::Acquire);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = now ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Thread { shared, index, table: RefCell::new((generation, table)),
                 idle: RefCell::new(HashMap::new()), random: RefCell::new(seed | 1) }
    }

    fn current_table(&self) -> Arc<Table> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut cached = self.table.borrow_mut();
        if cached.0 != generation {
            let table = self.shared.table.read().unwrap().clone();
            // Connections to replicas that left are closed; the others stay.
            self.idle.borrow_mut().retain(|name, pool| {
                table.replicas.iter().any(|r| &r.name == name
                                          && r.address.as_ref() == Some(&pool.address))
            });
            *cached = (generation, table);
        }
        cached.1.clone()
    }

    /// A random 6-digit id, as the Python proxy draws one (xorshift: not for secrets).
    fn random_id(&self) -> Vec<u8> {
        let mut x = self.random.borrow_mut();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (100_000 + *x % 900_000).to_string().into_bytes()
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.shared.counts[self.index].lock().unwrap());
    }

    /// The answer to `get`, into `out`: the owner's, else the next replica's along the walk.
    async fn proxy(&self, get: &http::Get<'_>, out: &mut Vec<u8>) {
        let config = &self.shared.config;
        let drawn;
        let request_id = match crate::route::request_id(get.request_id, get.uri) {
            Some(id) => id,
            None => {
                drawn = self.random_id();
                &drawn[..]
            }
        };
        let table = self.current_table();
        let started = Instant::now();
        let mut raw = Vec::with_capacity(64 + get.uri.len() + request_id.len());
        let mut failed = false;
        for &index in table.walk(request_id).iter().take(MAX_TRIES) {
            let replica = &table.replicas[index as usize];
            raw.clear();
            http::write_get(&mut raw, get.uri, replica.name.as_bytes(), request_id);
            self.count(|c| *c.in_flight.entry(replica.name.clone()).or_default() += 1);
            let result = match &replica.address {
                Some(address) => self.exchange(&replica.name, address, &raw).await,
                None => Err(format!("replica {} left the set", replica.name)),
            };
            self.count(|c| *c.in_flight.entry(replica.name.clone()).or_default() -= 1);
            match result {
                Ok((answer_buf, answer)) => {
                    let elapsed = started.elapsed().as_nanos() as u64;
                    let bucket = config.bounds_ns.partition_point(|&b| b < elapsed);
                    self.count(|c| {
                        *c.answers.entry((replica.name.clone(), answer.status)).or_default() += 1;
                        c.buckets[bucket] += 1;
                        c.sum_ns += elapsed;
                    });
                    if failed {
                        self.shared.tell(Event::Retried);
                    }
                    self.write(out, get, &replica.name, &answer_buf, &answer);
                    return;
                }
                Err(error) => {
                    failed = true;
                    self.shared.tell(Event::Failed { replica: replica.name.clone(), error });
                }
            }
        }
        self.shared.tell(Event::Unavailable);
        http::write_answer(out, 503, self.reason(503), Some(&config.json), b"",
                           &config.unavailable, get.keep_alive, get.http10);
    }

    fn reason(&self, status: u16) -> &[u8] {
        match self.shared.config.reasons.get(status as usize) {
            Some(reason) if !reason.is_empty() => reason,
            _ => b"Unknown",
        }
    }

    fn write(&self, out: &mut Vec<u8>, get: &http::Get<'_>, name: &str, buf: &[u8],
             answer: &http::Answer) {
        let config = &self.shared.config;
        if answer.status == 404 {
            // The contract: a path no replica serves is the client's mistake.
            let path = get.uri.split(|&b| b == b'?').next().unwrap_or(get.uri);
            let mut body = config.not_found.0.clone();
            http::push_json_latin1(&mut body, path);
            body.extend_from_slice(&config.not_found.1);
            http::write_answer(out, 400, self.reason(400), Some(&config.json), name.as_bytes(),
                               &body, get.keep_alive, get.http10);
            return;
        }
        let content_type = answer.content_type.clone().map(|r| &buf[r]);
        http::write_answer(out, answer.status, self.reason(answer.status), content_type,
                           name.as_bytes(), &buf[answer.body.clone()], get.keep_alive,
                           get.http10);
    }

    /// One exchange with `name`, on a kept connection or a new one, within the request timeout.
    async fn exchange(&self, name: &Arc<str>, address: &(String, u16), raw: &[u8])
                      -> Result<(Vec<u8>, http::Answer), String> {
        let timeout = self.shared.config.request_timeout;
        let tries = async {
            loop {
                let kept = {
                    let mut idle = self.idle.borrow_mut();
                    let pool = idle.entry(name.clone())
                        .or_insert_with(|| Pool { address: address.clone(), idle: vec![] });
                    if pool.address != *address {
                        *pool = Pool { address: address.clone(), idle: vec![] };
                    }
                    pool.idle.pop()
                };
                let (mut upstream, reused) = match kept {
                    Some(upstream) => (upstream, true),
                    None => (Upstream::connect(address).await?, false),
                };
                match upstream.exchange(raw).await {
                    Ok((buf, answer)) => {
                        if answer.keep_alive {
                            self.keep(name, address, upstream);
                        }
                        return Ok((buf, answer));
                    }
                    Err(Failure::ClosedIdle) if reused => continue,
                    Err(Failure::ClosedIdle) => {
                        return Err("connection closed by replica".to_string())
                    }
                    Err(Failure::Failed(error)) => return Err(error),
                }
            }
        };
        match tokio::time::timeout(timeout, tries).await {
            Ok(result) => result,
            Err(_) => Err(format!("no response within {}s", timeout.as_secs_f64())),
        }
    }

    fn keep(&self, name: &Arc<str>, address: &(String, u16), upstream: Upstream) {
        let mut idle = self.idle.borrow_mut();
        if let Some(pool) = idle.get_mut(name) {
            if pool.address == *address && pool.idle.len() < MAX_IDLE {
                pool.idle.push(upstream);
            }
        }
    }
}

struct Upstream {
    stream: TcpStream,
}

impl Upstream {
    async fn connect(address: &(String, u16)) -> Result<Upstream, String> {
        let stream = TcpStream::connect((address.0.as_str(), address.1)).await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", address.0, address.1))?;
        let _ = stream.set_nodelay(true);
        Ok(Upstream { stream })
    }

    async fn exchange(&mut self, raw: &[u8]) -> Result<(Vec<u8>, http::Answer), Failure> {
        if let Err(e) = self.stream.write_all(raw).await {
            return Err(closed_or(e));
        }
        let mut buf = Vec::with_capacity(1024);
        loop {
            match self.stream.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return Err(Failure::ClosedIdle),
                Ok(0) => return Err(Failure::Failed("connection closed by replica".into())),
                Ok(_) => {}
                Err(e) if buf.is_empty() => return Err(closed_or(e)),
                Err(e) => return Err(Failure::Failed(format!("connection failed: {e}"))),
            }
            match http::read_answer(&buf) {
                Reply::Complete(answer) => {
                    if buf.len() > answer.body.end {
                        // More than one answer to one request: the connection is unusable.
                        return Err(Failure::Failed("bad response from replica: extra bytes"
                                                   .into()));
                    }
                    return Ok((buf, answer));
                }
                Reply::Partial => {
                    if buf.capacity() - buf.len() < 512 {
                        buf.reserve(buf.len());
                    }
                }
                Reply::Bad(error) => return Err(Failure::Failed(error)),
            }
        }
    }
}

fn closed_or(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Failure::ClosedIdle,
        _ => Failure::Failed(format!("connection failed: {e}")),
    }
}
