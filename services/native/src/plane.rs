//! The plane's I/O: threads that accept on the balancer's port and proxy, each on an event loop
//! of its own (a current-thread Tokio runtime), with its own upstream connections, sharing
//! only the published table and their counts. Nothing here holds Python's GIL.
//!
//! The Python control plane learns what it must act on through `Shared::events`, and is woken
//! by a byte on a socket it reads: replicas that failed requests (it counts them and wakes the
//! heartbeats), retries, 503s, descriptors run out, and every connection handed over to its
//! front end. Everything but the handovers is coalesced into counts (see `Events`).
//!
//! What a client may cost: a connection is admitted under `max_connections` (one count with
//! the connections handed over, until the front end closes them), each answer must leave
//! within `send_timeout` (a client that stops reading is disconnected, and one answer at a
//! time is held for it: nothing more is read off its connection meanwhile), and a panic in a
//! connection's task loses that connection only (Tokio catches it; the count is given back as
//! the task unwinds).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::TcpListener as StdListener;
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
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
    pub send_timeout: Duration,   // for one answer to leave for the client
    pub event_interval: Duration, // the least time between two wake-ups for counts alone
    pub panic_path: Option<Vec<u8>>, // a test hook: a GET of this path panics (see lib.rs)
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

/// What the control plane has not taken yet. Counts, not one entry per try: a dead replica
/// under full load costs it one wake-up per `event_interval` however many requests fail (the
/// control plane drains again an interval after a drain that found counts, so none is left
/// waiting). A handover wakes it at once (a client waits on it); there is one per connection.
#[derive(Default)]
pub struct Events {
    pub failed: HashMap<Arc<str>, (u64, String)>, // replica -> failed tries, the last error
    pub retried: u64,
    pub unavailable: u64,
    pub exhausted: u64, // accepts and upstream connects refused for want of descriptors
    pub handovers: Vec<(RawFd, Vec<u8>)>,
    pub wakeups: u64, // bytes sent on the wake-up socket, ever
    woken: bool,      // a wake-up not answered by a drain yet
    quiet_until: Option<Instant>,
}

impl Events {
    /// Everything pending, leaving none; the next change may wake the control plane again.
    fn take(&mut self) -> Events {
        let (wakeups, quiet_until) = (self.wakeups, self.quiet_until);
        let taken = std::mem::take(self);
        self.wakeups = wakeups;
        self.quiet_until = quiet_until;
        taken
    }

    fn has_counts(&self) -> bool {
        !self.failed.is_empty() || self.retried + self.unavailable + self.exhausted > 0
    }
}

/// A lock that a panic elsewhere does not poison for everyone after (none is held across
/// code that can panic, but a poisoned count must not take the plane down).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Shared {
    pub config: Config,
    pub table: RwLock<Arc<Table>>,
    pub generation: AtomicU64,
    pub counts: Vec<Mutex<Counts>>,
    pub events: Mutex<Events>,
    pub wake_fd: RawFd,
    pub connections: AtomicUsize,
}

impl Shared {
    pub fn publish(&self, table: Table) {
        *self.table.write().unwrap() = Arc::new(table);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Count something; wake the control plane unless it was woken in the last interval
    /// (its drain then re-arms a timer of its own for what comes after).
    fn count(&self, f: impl FnOnce(&mut Events)) {
        let mut events = lock(&self.events);
        f(&mut events);
        let now = Instant::now();
        if !events.woken && events.quiet_until.is_none_or(|t| now >= t) {
            events.quiet_until = Some(now + self.config.event_interval);
            self.wake(&mut events);
        }
    }

    /// What the control plane has not taken yet, for it. A drain that finds counts is as good
    /// as a wake-up: the control plane looks again an interval later, so none is sent before.
    pub fn take_events(&self) -> Events {
        let mut events = lock(&self.events);
        let taken = events.take();
        if taken.has_counts() {
            events.quiet_until = Some(Instant::now() + self.config.event_interval);
        }
        taken
    }

    fn hand_over(&self, fd: RawFd, data: Vec<u8>) {
        let mut events = lock(&self.events);
        events.handovers.push((fd, data));
        if !events.woken {
            self.wake(&mut events);
        }
    }

    fn wake(&self, events: &mut Events) {
        events.woken = true;
        events.wakeups += 1;
        // Non-blocking: when the socket is full, a wake-up is pending already.
        unsafe { libc::send(self.wake_fd, b"!".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
    }

    /// One more connection, if under `max_connections` (compare and increment in one step:
    /// threads cannot race past it).
    fn admit(&self) -> bool {
        self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < self.config.max_connections).then_some(n + 1)
        }).is_ok()
    }

    /// A connection closed: here, or by the front end that adopted it.
    pub fn release(&self) {
        let _ = self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire,
                                              |n| n.checked_sub(1));
    }
}

/// Out of descriptors (or of the kernel's memory for one): the proxy's own condition.
fn exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(500));

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
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                let _ = stream.set_nodelay(true);
                if thread.shared.admit() {
                    tokio::task::spawn_local(serve(stream, thread.clone()));
                } else {
                    tokio::task::spawn_local(refuse(stream, thread.clone()));
                }
            }
            // Out of descriptors, say: the connection waits in the backlog. Back off (doubling
            // while it lasts) rather than spin on a listener that stays readable.
            Err(e) => {
                if exhausted(&e) {
                    thread.shared.count(|events| events.exhausted += 1);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }
}

/// Past `max_connections`: the 503 goes out, the sending side is shut, what the client still
/// sends is drained for a second (a close with unread input would reset the answer away).
async fn refuse(mut stream: TcpStream, thread: Rc<Thread>) {
    let config = &thread.shared.config;
    if !send(&mut stream, &config.too_many, config.send_timeout).await {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    }).await;
}

/// `out` to the client within `timeout`; false: it did not take it (then it is dropped).
async fn send(stream: &mut TcpStream, out: &[u8], timeout: Duration) -> bool {
    // Most answers fit the socket's buffer at once: no timer is armed for those.
    let written = match stream.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    written == out.len()
        || matches!(tokio::time::timeout(timeout, stream.write_all(&out[written..])).await,
                    Ok(Ok(())))
}

/// A connection's place under `max_connections`, given back when it is dropped (a panic
/// unwinding the task included), or kept for the front end when the connection is handed over.
struct Counted(Option<Rc<Thread>>);

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            thread.shared.release();
        }
    }
}

async fn serve(mut stream: TcpStream, thread: Rc<Thread>) {
    let mut counted = Counted(Some(thread.clone()));
    let config = &thread.shared.config;
    let client = stream.peer_addr().map(|a| a.ip().to_string().into_bytes()).unwrap_or_default();
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
                if let Ok(stream) = stream.into_std() {
                    counted.0 = None; // still counted: the front end releases it (`release`)
                    thread.shared.hand_over(stream.into_raw_fd(), buf);
                }
                return;
            }
        };
        if config.panic_path.as_deref() == Some(get.uri) {
            panic!("a GET of DSLAB_PLANE_TEST_PANIC_PATH: this connection's task panics");
        }
        out.clear();
        let (keep_alive, len) = (get.keep_alive, get.len);
        thread.proxy(&get, &client, &mut out).await;
        // A client that does not read its answer in time is disconnected; until then nothing
        // more is read off its connection (one answer held per connection).
        if !send(&mut stream, &out, config.send_timeout).await {
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
        buf.drain(..len);
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

/// Why a try got no answer.
enum TryError {
    /// No descriptor for a connection to the replica: this process's condition, not the
    /// replica's, so it is suspected of nothing and no other replica is tried.
    Exhausted,
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
        f(&mut lock(&self.shared.counts[self.index]));
    }

    /// The answer to `get`, into `out`: the owner's, else the next replica's along the walk.
    async fn proxy(&self, get: &http::Get<'_>, client: &[u8], out: &mut Vec<u8>) {
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
            http::write_get(&mut raw, get.uri, replica.name.as_bytes(), request_id, client);
            let in_flight = InFlight::new(self, &replica.name);
            let result = match &replica.address {
                Some(address) => self.exchange(&replica.name, address, &raw).await,
                None => Err(TryError::Failed(format!("replica {} left the set", replica.name))),
            };
            drop(in_flight);
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
                        self.shared.count(|events| events.retried += 1);
                    }
                    self.write(out, get, &replica.name, &answer_buf, &answer);
                    return;
                }
                Err(TryError::Exhausted) => {
                    self.shared.count(|events| {
                        events.exhausted += 1;
                        events.unavailable += 1;
                    });
                    http::write_answer(out, 503, self.reason(503), Some(&config.json), b"", b"",
                                       &config.unavailable, get.keep_alive, get.http10);
                    return;
                }
                Err(TryError::Failed(error)) => {
                    failed = true;
                    self.shared.count(|events| {
                        let entry = events.failed.entry(replica.name.clone()).or_default();
                        entry.0 += 1;
                        entry.1 = error;
                    });
                }
            }
        }
        self.shared.count(|events| events.unavailable += 1);
        http::write_answer(out, 503, self.reason(503), Some(&config.json), b"", b"",
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
                               b"", &body, get.keep_alive, get.http10);
            return;
        }
        let content_type = answer.content_type.clone().map(|r| &buf[r]);
        http::write_answer(out, answer.status, self.reason(answer.status), content_type,
                           name.as_bytes(), &answer.headers, &buf[answer.body.clone()],
                           get.keep_alive, get.http10);
    }

    /// One exchange with `name`, on a kept connection or a new one, within the request timeout.
    async fn exchange(&self, name: &Arc<str>, address: &(String, u16), raw: &[u8])
                      -> Result<(Vec<u8>, http::Answer), TryError> {
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
                        return Err(TryError::Failed("connection closed by replica".into()))
                    }
                    Err(Failure::Failed(error)) => return Err(TryError::Failed(error)),
                }
            }
        };
        match tokio::time::timeout(timeout, tries).await {
            Ok(result) => result,
            Err(_) => Err(TryError::Failed(format!("no response within {}s",
                                                   timeout.as_secs_f64()))),
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

/// A request in flight to a replica, counted until dropped: when answered, and also when its
/// task panics or is dropped half way.
struct InFlight<'a> {
    thread: &'a Thread,
    name: Arc<str>,
}

impl<'a> InFlight<'a> {
    fn new(thread: &'a Thread, name: &Arc<str>) -> Self {
        thread.count(|c| *c.in_flight.entry(name.clone()).or_default() += 1);
        InFlight { thread, name: name.clone() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.thread.count(|c| *c.in_flight.entry(self.name.clone()).or_default() -= 1);
    }
}

struct Upstream {
    stream: TcpStream,
}

impl Upstream {
    async fn connect(address: &(String, u16)) -> Result<Upstream, TryError> {
        let stream = TcpStream::connect((address.0.as_str(), address.1)).await
            .map_err(|e| match exhausted(&e) {
                true => TryError::Exhausted,
                false => TryError::Failed(format!("cannot connect to {}:{}: {e}", address.0,
                                                  address.1)),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Upstream { stream })
    }

    async fn exchange(&mut self, raw: &[u8]) -> Result<(Vec<u8>, http::Answer), Failure> {
        if let Err(e) = self.stream.write_all(raw).await {
            return Err(closed_or(e));
        }
        let mut buf = Vec::with_capacity(1024);
        let mut got_any = false;
        loop {
            match self.stream.read_buf(&mut buf).await {
                Ok(0) if !got_any => return Err(Failure::ClosedIdle),
                Ok(0) => return Err(Failure::Failed("connection closed by replica".into())),
                Ok(_) => got_any = true,
                Err(e) if !got_any => return Err(closed_or(e)),
                Err(e) => return Err(Failure::Failed(format!("connection failed: {e}"))),
            }
            loop {
                match http::read_answer(&buf) {
                    // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                    Reply::Complete(answer) if answer.status < 200 => {
                        buf.drain(..answer.body.end);
                    }
                    Reply::Complete(answer) => {
                        if buf.len() > answer.body.end {
                            // More than one answer to one request: the connection is unusable.
                            return Err(Failure::Failed("bad response from replica: extra \
                                                        bytes".into()));
                        }
                        return Ok((buf, answer));
                    }
                    Reply::Partial => break,
                    Reply::Bad(error) => return Err(Failure::Failed(error)),
                }
            }
            if buf.len() > http::MAX_ANSWER {
                // A head that never ends: no answer is this long.
                return Err(Failure::Failed(format!("bad response from replica: over {} bytes",
                                                   http::MAX_ANSWER)));
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(buf.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(max_connections: usize) -> Shared {
        let config = Config {
            limits: Limits { max_request_line: 8192, max_headers: 100, max_header_bytes: 61440 },
            not_proxied: vec![],
            idle_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            event_interval: Duration::from_secs(60),
            panic_path: None,
            max_connections,
            bounds_ns: vec![],
            reasons: vec![],
            not_found: (vec![], vec![]),
            unavailable: vec![],
            too_many: vec![],
            json: vec![],
        };
        Shared { config, table: RwLock::new(Arc::new(Table::empty())),
                 generation: AtomicU64::new(0), counts: vec![],
                 events: Mutex::new(Events::default()), wake_fd: -1,
                 connections: AtomicUsize::new(0) }
    }

    /// A replica on loopback that answers the first request with `answer`, then closes.
    fn replica(answer: &'static [u8]) -> (String, u16) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let _ = conn.write_all(answer);
        });
        ("127.0.0.1".to_string(), port)
    }

    fn exchange(answer: &'static [u8]) -> Result<(u16, Vec<u8>), String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let address = replica(answer);
            let mut upstream = Upstream::connect(&address).await.map_err(|_| "connect")?;
            match upstream.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await {
                Ok((buf, answer)) => Ok((answer.status, buf[answer.body].to_vec())),
                Err(Failure::Failed(error)) => Err(error),
                Err(Failure::ClosedIdle) => Err("closed".into()),
            }
        })
    }

    #[test]
    fn an_interim_answer_is_passed_over_for_the_final_one() {
        let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\n\
                       HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(exchange(answer), Ok((200, b"hi".to_vec())));
    }

    #[test]
    fn an_answer_claiming_more_than_the_bound_is_the_replicas_failure() {
        let error = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\nhi")
            .unwrap_err();
        assert!(error.contains("over"), "{error}");
    }

    #[test]
    fn threads_racing_to_admit_stop_at_max_connections() {
        let shared = Arc::new(shared(100));
        let admitted: usize = (0..8).map(|_| {
            let shared = shared.clone();
            std::thread::spawn(move || (0..1000).filter(|_| shared.admit()).count())
        }).collect::<Vec<_>>().into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 100);
        shared.release();
        assert!(shared.admit() && !shared.admit());
    }

    #[test]
    fn failed_tries_are_counted_per_replica_with_one_wake_up_per_interval() {
        let shared = shared(1);
        let name: Arc<str> = "Server1".into();
        for k in 0..1000 {
            shared.count(|events| {
                let entry = events.failed.entry(name.clone()).or_default();
                entry.0 += 1;
                entry.1 = format!("try {k}");
            });
        }
        let taken = shared.take_events();
        assert_eq!(taken.failed[&name], (1000, "try 999".to_string()));
        assert_eq!(lock(&shared.events).wakeups, 1);
        // Drained with counts, within the interval: the next failure wakes no one (the
        // control plane looks again an interval after its drain)...
        shared.count(|events| events.retried += 1);
        assert_eq!(lock(&shared.events).wakeups, 1);
        // ...but a handover wakes it at once.
        shared.hand_over(-1, vec![]);
        assert_eq!(lock(&shared.events).wakeups, 2);
        assert_eq!(shared.take_events().retried, 1);
    }
}
