//! `dslab_dataplane`: the Part 1 balancer's data plane in compiled code, driven from Python
//! (`dslab.balancer.native`). Python keeps the control plane: replicas, ring, heartbeats,
//! admin, metrics; this module accepts on the port and proxies the common GET.

mod http;
mod plane;
mod route;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use socket2::{Domain, Socket, Type};
use tokio::sync::oneshot;

use crate::http::Limits;
use crate::plane::{lock, Config, Counts, Events, Shared};
use crate::route::{Replica, RequestHash, Table};

/// Bind `count` listening sockets on one port (SO_REUSEPORT: the kernel spreads connections
/// over them). The port is first bound without it, so a port in use is refused, not shared.
fn bind(host: &str, port: u16, count: usize) -> std::io::Result<(Vec<StdListener>, u16)> {
    let addr = (host, port).to_socket_addrs()?.next()
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))?;
    let socket = |reuse_port: bool| -> std::io::Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(reuse_port)?;
        Ok(s)
    };
    let probe = socket(false)?;
    probe.bind(&addr.into())?;
    let port = probe.local_addr()?.as_socket().map_or(port, |a| a.port());
    drop(probe);
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let s = socket(true)?;
        s.bind(&SocketAddr::new(addr.ip(), port).into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        listeners.push(s.into());
    }
    Ok((listeners, port))
}

/// The plane: `threads` event loops on `host:port`, until `stop`.
#[pyclass(module = "dslab_dataplane")]
struct Plane {
    shared: Arc<Shared>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl Plane {
    #[new]
    #[pyo3(signature = (host, port, threads, *, wake_fd, not_proxied, max_request_line,
                        max_headers, max_header_bytes, max_connections, idle_timeout,
                        request_timeout, send_timeout, event_interval, bounds_ns, reasons,
                        not_found, unavailable, too_many))]
    #[allow(clippy::too_many_arguments)]
    fn new(host: &str, port: u16, threads: usize, wake_fd: i32, not_proxied: Vec<Vec<u8>>,
           max_request_line: usize, max_headers: usize, max_header_bytes: usize,
           max_connections: usize, idle_timeout: f64, request_timeout: f64, send_timeout: f64,
           event_interval: f64, bounds_ns: Vec<u64>,
           reasons: Vec<(u16, Vec<u8>)>, not_found: (Vec<u8>, Vec<u8>), unavailable: Vec<u8>,
           too_many: Vec<u8>) -> PyResult<Self> {
        if threads == 0 {
            return Err(PyValueError::new_err("at least one thread"));
        }
        let mut reason_of = vec![Vec::new(); 1000];
        for (status, reason) in reasons {
            if let Some(slot) = reason_of.get_mut(status as usize) {
                *slot = reason;
            }
        }
        let buckets = bounds_ns.len() + 1;
        let config = Config {
            limits: Limits { max_request_line, max_headers, max_header_bytes },
            not_proxied,
            idle_timeout: Duration::from_secs_f64(idle_timeout),
            request_timeout: Duration::from_secs_f64(request_timeout),
            send_timeout: Duration::from_secs_f64(send_timeout),
            event_interval: Duration::from_secs_f64(event_interval),
            // A test hook, read once here: a GET of this path panics in its connection's task
            // (tests/test_plane_panic.py shows only that connection is lost). Unset: never.
            panic_path: std::env::var_os("DSLAB_PLANE_TEST_PANIC_PATH")
                .map(|p| p.into_encoded_bytes()),
            max_connections,
            bounds_ns,
            reasons: reason_of,
            not_found,
            unavailable,
            too_many,
            json: b"application/json".to_vec(),
        };
        let (listeners, port) = bind(host, port, threads)
            .map_err(|e| PyOSError::new_err(format!("cannot listen on {host}:{port}: {e}")))?;
        let shared = Arc::new(Shared {
            config,
            table: RwLock::new(Arc::new(Table::empty())),
            generation: AtomicU64::new(0),
            counts: (0..threads).map(|_| Mutex::new(Counts { buckets: vec![0; buckets],
                                                             ..Counts::default() })).collect(),
            events: Mutex::new(Events::default()),
            wake_fd,
            connections: AtomicUsize::new(0),
        });
        let mut plane = Plane { shared, stops: Vec::new(), threads: Vec::new(), port };
        for (index, listener) in listeners.into_iter().enumerate() {
            let (stop, stopped) = oneshot::channel();
            let shared = plane.shared.clone();
            // On failure `plane` is dropped, which stops the threads already started.
            let handle = std::thread::Builder::new()
                .name(format!("dataplane-{index}"))
                .spawn(move || plane::run_thread(index, listener, shared, stopped))
                .map_err(|e| PyOSError::new_err(format!("cannot start a thread: {e}")))?;
            plane.stops.push(stop);
            plane.threads.push(handle);
        }
        Ok(plane)
    }

    /// A new ring: `walks[slot]` are indices into `replicas`, each `(name, (host, port))` or
    /// `(name, None)`. Every thread routes over it from its next request on.
    fn publish(&self, hash: &str, slots: u64, walks: Vec<Vec<u16>>,
               replicas: Vec<(String, Option<(String, u16)>)>) -> PyResult<()> {
        let hash = RequestHash::from_name(hash)
            .ok_or_else(|| PyValueError::new_err(format!("unknown request hash {hash:?}")))?;
        if slots == 0 || walks.len() as u64 != slots {
            return Err(PyValueError::new_err("one walk per slot"));
        }
        if walks.iter().flatten().any(|&i| i as usize >= replicas.len()) {
            return Err(PyValueError::new_err("a walk names a replica that is not given"));
        }
        let replicas = replicas.into_iter()
            .map(|(name, address)| Replica { name: name.into(), address }).collect();
        let walks = walks.into_iter().map(Vec::into_boxed_slice).collect();
        self.shared.publish(Table { hash, slots, walks, replicas });
        Ok(())
    }

    /// What happened since the last call: `(handovers, failed, retried, unavailable,
    /// exhausted)`: `[(fd, bytes read)]`, `[(replica, failed tries, last error)]`, and counts.
    #[allow(clippy::type_complexity)]
    fn take_events<'py>(&self, py: Python<'py>)
        -> (Vec<(i32, Bound<'py, PyBytes>)>, Vec<(String, u64, String)>, u64, u64, u64) {
        let events = self.shared.take_events();
        let handovers = events.handovers.iter()
            .map(|(fd, data)| (*fd, PyBytes::new(py, data))).collect();
        let failed = events.failed.into_iter()
            .map(|(name, (n, error))| (name.to_string(), n, error)).collect();
        (handovers, failed, events.retried, events.unavailable, events.exhausted)
    }

    /// The wake-ups sent to the control plane so far.
    #[getter]
    fn wakeups(&self) -> u64 {
        lock(&self.shared.events).wakeups
    }

    /// The connections held now (here, and handed over and not yet closed).
    #[getter]
    fn connections(&self) -> usize {
        self.shared.connections.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A connection handed over was closed by the front end: its place is free.
    fn release(&self) {
        self.shared.release();
    }

    /// Every thread's counts summed: ([(replica, status, answers)], buckets, sum in ns).
    fn tallied(&self) -> (Vec<(String, u16, u64)>, Vec<u64>, u64) {
        let mut answers: HashMap<(Arc<str>, u16), u64> = HashMap::new();
        let mut buckets = vec![0; self.shared.config.bounds_ns.len() + 1];
        let mut sum_ns = 0;
        for counts in &self.shared.counts {
            let counts = lock(counts);
            for (key, n) in &counts.answers {
                *answers.entry(key.clone()).or_default() += n;
            }
            for (total, n) in buckets.iter_mut().zip(&counts.buckets) {
                *total += n;
            }
            sum_ns += counts.sum_ns;
        }
        let answers = answers.into_iter().map(|((r, s), n)| (r.to_string(), s, n)).collect();
        (answers, buckets, sum_ns)
    }

    /// Requests in flight per replica, summed over the threads (replicas with none left out).
    fn loads(&self) -> HashMap<String, i64> {
        let mut loads: HashMap<String, i64> = HashMap::new();
        for counts in &self.shared.counts {
            for (name, n) in &lock(counts).in_flight {
                *loads.entry(name.to_string()).or_default() += n;
            }
        }
        loads.retain(|_, n| *n != 0);
        loads
    }

    /// Stop every thread and close what they held; connections handed over and not yet taken
    /// are closed too. Idempotent.
    fn stop(&mut self, py: Python<'_>) {
        py.allow_threads(|| self.shutdown());
    }
}

impl Plane {
    fn shutdown(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for (fd, _) in self.shared.take_events().handovers {
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The slot `request_id` routes to under the named request hash (tests hold it to Python's).
#[pyfunction]
fn route_slot(hash: &str, request_id: &[u8], slots: u64) -> PyResult<u64> {
    let hash = RequestHash::from_name(hash)
        .ok_or_else(|| PyValueError::new_err(format!("unknown request hash {hash:?}")))?;
    if slots == 0 {
        return Err(PyValueError::new_err("at least one slot"));
    }
    Ok(hash.slot(route::request_number(request_id), slots))
}

/// The request id the plane reads off a request: its header, else its `rid=`; None: drawn.
#[pyfunction]
#[pyo3(signature = (header, uri))]
fn request_id<'py>(py: Python<'py>, header: Option<&[u8]>, uri: &[u8])
                   -> Option<Bound<'py, PyBytes>> {
    route::request_id(header, uri).map(|id| PyBytes::new(py, id))
}

#[pymodule]
fn dslab_dataplane(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Plane>()?;
    m.add_function(wrap_pyfunction!(route_slot, m)?)?;
    m.add_function(wrap_pyfunction!(request_id, m)?)?;
    Ok(())
}
