//! Every TCP connection the HTTP server holds, so that none can be held for nothing.
//!
//! actix keeps a connection for as long as its peer keeps it: it times out only the headers of a
//! connection's first request, never a body or the headers of a later request, never a peer that
//! stops reading, and at the open-files limit its accept loop pauses. The [`ConnectionTable`]
//! knows each connection from the moment it is accepted ([`ConnectionTable::on_connect`]) until
//! actix drops it ([`Connection`]'s drop), and bounds them:
//! - connections that are not station sessions, per client address (a station's accepted
//!   WebSocket handshake authenticates its connection; an API token authenticates a request, not
//!   the connection, so API connections keep counting);
//! - connections in all, below the open-files limit: at capacity the oldest connection that is
//!   not a station session makes room (an idle one first), so accepting goes on and a legitimate
//!   client is not locked out by a flood;
//! - a connection that is neither handling a request nor upgraded must have sent its next request's
//!   headers within the header timeout (plus keep-alive after a response), or it is closed (the
//!   reaper). This is the only header timeout: actix's own, which would cover the first request
//!   only, is off, so every one is counted.
//!
//! Closing a connection actix holds is done on its socket: `shutdown(2)` with a zero linger, on the
//! worker thread that owns the connection (the socket is open for as long as its entry is in the
//! table, and only that thread can close it), after checking the descriptor still names the same
//! socket (its inode). actix then sees the socket end and drops the connection itself.

use super::{hit, Limit};
use crate::metrics as m;
use actix_rt::ArbiterHandle;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A client address as limits count it: the IPv4 address, or the IPv6 /64 (one subscriber usually
/// holds a whole /64, so counting single IPv6 addresses would count nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    AddressKey(IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// What the table needs of the settings.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Unauthenticated connections per client address; 0: no limit.
    pub per_address: u32,
    /// Connections in all.
    pub capacity: usize,
    pub header_timeout: Duration,
    pub keep_alive: Duration,
    /// How long a connection over the per-address limit is held before it is reset.
    pub refusal_delay: Duration,
    /// How many such connections are held at most; past it, they are reset as they are accepted.
    pub tarpit: usize,
}

/// A socket as the table can close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketId {
    fd: i32,
    inode: u64,
}

/// How one connection is doing, shared by its [`Connection`] and the table's entry.
#[derive(Debug)]
struct ConnState {
    id: u64,
    accepted: Instant,
    /// Requests being handled, their responses still being written.
    busy: AtomicU32,
    /// When the connection last had no request left (ms since the table's epoch).
    idle_since_ms: AtomicU64,
    had_request: AtomicBool,
    authenticated: AtomicBool,
    /// A WebSocket: its session bounds it from now on.
    upgraded: AtomicBool,
    /// Closed by a limit (already counted).
    aborted: AtomicBool,
    /// Over its address's limit: held, never served, and reset after the refusal delay.
    tarpit: bool,
    /// The reset of a held connection was sent.
    reset: AtomicBool,
}

struct Entry {
    state: Arc<ConnState>,
    address: AddressKey,
    socket: SocketId,
    /// The worker thread that owns the connection.
    owner: Option<ArbiterHandle>,
    owner_thread: std::thread::ThreadId,
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    /// Ids of unauthenticated connections: ids grow with time, so the first is the oldest.
    unauthenticated: BTreeSet<u64>,
    /// Ids of the connections the reaper looks at: those not (yet) a station's WebSocket. A node's
    /// stations are not walked four times a second.
    watched: HashSet<u64>,
    per_address: HashMap<AddressKey, u32>,
    /// Connections held over their address's limit (see [`ConnectionLimits::tarpit`]).
    tarpit: usize,
    next_id: u64,
}

/// The connections of one application (see the module documentation).
pub struct ConnectionTable {
    limits: ConnectionLimits,
    table: Mutex<Table>,
    epoch: Instant,
    log: super::logs::SharedLogBudget,
}

/// How long an unauthenticated connection is safe from being evicted to make room: a legitimate
/// client needs a moment to send its request.
const EVICTION_MIN_AGE: Duration = Duration::from_secs(1);

/// Connections of one worker thread to close: its handle, and their ids and sockets.
type Victims = (Option<ArbiterHandle>, Vec<(u64, SocketId)>);

/// How often the reaper looks: the header timeout is enforced to within this.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// Connections the reaper closes per look at most (2,000 a second).
const REAP_AT_MOST: usize = 500;

impl ConnectionTable {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
            epoch: Instant::now(),
            log: super::logs::SharedLogBudget::new(5, Duration::from_secs(60)),
        })
    }

    /// The capacity the open-files limit leaves: the soft limit less `reserve`, at least 64.
    pub fn capacity_for_fd_limit(reserve: u64) -> usize {
        let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024);
        soft.saturating_sub(reserve).max(64).try_into().unwrap_or(usize::MAX)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(table: &Table) {
        let (unauthenticated, held) = (table.unauthenticated.len(), table.tarpit);
        metrics::gauge!(m::HTTP_CONNECTIONS, "state" => "unauthenticated").set(unauthenticated as f64);
        metrics::gauge!(m::HTTP_CONNECTIONS, "state" => "held").set(held as f64);
        metrics::gauge!(m::HTTP_CONNECTIONS, "state" => "authenticated")
            .set(table.entries.len().saturating_sub(unauthenticated + held) as f64);
    }

    /// The `HttpServer::on_connect` hook: admits the connection into the table, or closes it at once
    /// when a limit says so.
    pub fn on_connect(self: &Arc<Self>, conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
        type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
        let tcp = match conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            Some(tcp) => tcp,
            None => match conn.downcast_ref::<Tls>() {
                Some(tls) => tls.get_ref().0,
                #[cfg(feature = "openssl-tls")]
                None => match conn.downcast_ref::<crate::tls::OpenSslTls>() {
                    Some(tls) => tls.get_ref(),
                    None => return,
                },
                #[cfg(not(feature = "openssl-tls"))]
                None => return,
            },
        };
        let (Some(socket), Ok(peer)) = (socket_id(tcp), tcp.peer_addr()) else { return };
        let address = AddressKey::of(peer.ip());
        match self.admit(socket, address) {
            Ok(state) => {
                // Shared: the station's session keeps it after the HTTP connection hands its socket over.
                data.insert(std::rc::Rc::new(Connection { state, table: self.clone() }));
            }
            Err(limit) => {
                hit(limit);
                if self.log.allow() {
                    tracing::warn!(peer = %peer.ip(), limit = limit.as_str(), "connection closed as it was accepted");
                }
                abort_socket(socket);
            }
        }
    }

    fn admit(self: &Arc<Self>, socket: SocketId, address: AddressKey) -> Result<Arc<ConnState>, Limit> {
        let mut table = self.lock();
        let per_address = table.per_address.get(&address).copied().unwrap_or(0);
        // Over its address's limit: refused. A client retrying as soon as it is refused would make
        // the node accept and reset thousands of connections a second; held for the refusal delay
        // (and never served), each of its connections is one attempt per delay.
        let tarpit = self.limits.per_address > 0 && per_address >= self.limits.per_address;
        if tarpit && (table.tarpit >= self.limits.tarpit || table.entries.len() >= self.limits.capacity) {
            return Err(Limit::ConnectionsPerAddress);
        }
        if !tarpit && table.entries.len() >= self.limits.capacity {
            // The oldest idle one, else the oldest busy one (a body that is not coming, say).
            let old_enough = |e: &&Entry| e.state.accepted.elapsed() >= EVICTION_MIN_AGE;
            let candidates = || table.unauthenticated.iter().filter_map(|id| table.entries.get(id)).filter(old_enough);
            let victim =
                candidates().find(|e| e.state.busy.load(Ordering::Relaxed) == 0).or_else(|| candidates().next());
            match victim {
                Some(victim) => {
                    hit(Limit::ConnectionEvicted);
                    victim.state.aborted.store(true, Ordering::Relaxed);
                    self.abort_on_owner(victim);
                }
                None => return Err(Limit::ConnectionCapacity),
            }
        }
        table.next_id += 1;
        let state = Arc::new(ConnState {
            id: table.next_id,
            accepted: Instant::now(),
            busy: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            had_request: AtomicBool::new(false),
            authenticated: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            aborted: AtomicBool::new(tarpit),
            tarpit,
            reset: AtomicBool::new(false),
        });
        let entry = Entry {
            state: state.clone(),
            address,
            socket,
            owner: actix_rt::Arbiter::try_current(),
            owner_thread: std::thread::current().id(),
        };
        table.entries.insert(state.id, entry);
        table.watched.insert(state.id);
        if tarpit {
            hit(Limit::ConnectionsPerAddress);
            table.tarpit += 1;
        } else {
            table.unauthenticated.insert(state.id);
            *table.per_address.entry(address).or_default() += 1;
        }
        Self::report(&table);
        Ok(state)
    }

    fn unauthenticated_left(table: &mut Table, id: u64, address: AddressKey) {
        if table.unauthenticated.remove(&id) {
            if let Some(n) = table.per_address.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    table.per_address.remove(&address);
                }
            }
        }
    }

    fn authenticate(&self, id: u64) {
        let mut table = self.lock();
        if let Some(address) = table.entries.get(&id).map(|e| e.address) {
            Self::unauthenticated_left(&mut table, id, address);
            Self::report(&table);
        }
    }

    /// A connection became a station's WebSocket (and authenticated, when `authenticated`): one
    /// look at the table for both, on every station's connect.
    fn upgrade(&self, id: u64, authenticated: bool) {
        let mut table = self.lock();
        table.watched.remove(&id);
        if authenticated {
            if let Some(address) = table.entries.get(&id).map(|e| e.address) {
                Self::unauthenticated_left(&mut table, id, address);
                Self::report(&table);
            }
        }
    }

    fn remove(&self, state: &ConnState) {
        let mut table = self.lock();
        if let Some(entry) = table.entries.remove(&state.id) {
            table.watched.remove(&state.id);
            if state.tarpit {
                table.tarpit -= 1;
            }
            Self::unauthenticated_left(&mut table, state.id, entry.address);
            Self::report(&table);
        }
    }

    /// Closes the connection's socket, from the thread that owns it (see [`Self::abort_all`]).
    fn abort_on_owner(self: &Arc<Self>, entry: &Entry) {
        self.abort_all(&[entry]);
    }

    /// Closes the connections' sockets, each from the thread that owns it: one task per thread.
    /// Called with the table locked: the closing runs later, as a task of that thread.
    fn abort_all(self: &Arc<Self>, entries: &[&Entry]) {
        let mut by_owner: HashMap<std::thread::ThreadId, Victims> = HashMap::new();
        for e in entries {
            let slot = by_owner.entry(e.owner_thread).or_insert_with(|| (e.owner.clone(), Vec::new()));
            slot.1.push((e.state.id, e.socket));
        }
        for (owner, victims) in by_owner.into_values() {
            match owner {
                Some(owner) => {
                    let table = Arc::downgrade(self);
                    owner.spawn_fn(move || {
                        let Some(table) = table.upgrade() else { return };
                        // Still in the table means actix still holds the socket: its Connection leaves
                        // the table when actix drops it, on this same thread, so not while we close it.
                        let open: Vec<SocketId> = {
                            let t = table.lock();
                            victims.iter().filter(|(id, _)| t.entries.contains_key(id)).map(|(_, s)| *s).collect()
                        };
                        for socket in open {
                            abort_socket(socket);
                        }
                    });
                }
                // Outside an actix worker (unit tests): only the inode check protects the descriptor.
                None => {
                    for (_, socket) in victims {
                        abort_socket(socket);
                    }
                }
            }
        }
    }

    /// Closes a connection by id (a session cutting off its station); false when it is gone.
    pub fn abort(self: &Arc<Self>, id: u64, limit: Option<Limit>) -> bool {
        let table = self.lock();
        let Some(entry) = table.entries.get(&id) else { return false };
        if let Some(limit) = limit {
            if !entry.state.aborted.swap(true, Ordering::Relaxed) {
                hit(limit);
            }
        }
        self.abort_on_owner(entry);
        true
    }

    /// Closes the connections that should have sent a request's headers by now, at most
    /// [`REAP_AT_MOST`] at a time (a flood's connections expire together: closing them all at once
    /// would hold the workers up); answers how many.
    pub fn reap(self: &Arc<Self>) -> usize {
        let now = self.now_ms();
        let table = self.lock();
        let watched = || table.watched.iter().filter_map(|id| table.entries.get(id));
        // Held refusals whose delay is over: reset, already counted.
        let refused: Vec<&Entry> = watched()
            .filter(|e| e.state.tarpit && e.state.accepted.elapsed() >= self.limits.refusal_delay)
            .filter(|e| !e.state.reset.swap(true, Ordering::Relaxed))
            .take(REAP_AT_MOST)
            .collect();
        self.abort_all(&refused);
        let due: Vec<&Entry> = watched()
            .filter(|e| {
                let s = &e.state;
                if s.upgraded.load(Ordering::Relaxed)
                    || s.busy.load(Ordering::Relaxed) > 0
                    || s.aborted.load(Ordering::Relaxed)
                {
                    return false;
                }
                let mut allowed = self.limits.header_timeout;
                if s.had_request.load(Ordering::Relaxed) {
                    allowed += self.limits.keep_alive;
                }
                Duration::from_millis(now.saturating_sub(s.idle_since_ms.load(Ordering::Relaxed))) > allowed
            })
            .take(REAP_AT_MOST)
            .collect();
        for e in &due {
            e.state.aborted.store(true, Ordering::Relaxed);
            hit(Limit::HeaderTimeout);
        }
        self.abort_all(&due);
        if !due.is_empty() && self.log.allow() {
            tracing::warn!(closed = due.len(), "closed connections whose next request did not arrive in time");
        }
        due.len()
    }

    /// Runs [`ConnectionTable::reap`] every [`REAP_EVERY`] until the table is dropped.
    pub fn start_reaper(self: &Arc<Self>) {
        let table = Arc::downgrade(self);
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(table) = table.upgrade() else { return };
                table.reap();
            }
        });
    }

    /// (connections, of which unauthenticated), for tests and readiness.
    pub fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        (table.entries.len(), table.unauthenticated.len())
    }

    /// Connections held over their address's limit.
    pub fn held_refusals(&self) -> usize {
        self.lock().tarpit
    }
}

/// A connection, kept in actix's connection data (`HttpRequest::conn_data`, as an `Rc`) and, once
/// it is a station's WebSocket, by the session's socket; dropped with the socket, which takes it
/// out of the table.
pub struct Connection {
    state: Arc<ConnState>,
    table: Arc<ConnectionTable>,
}

impl Connection {
    /// The connection has authenticated as a station (its WebSocket handshake was accepted): it no
    /// longer counts against its address, and is not evicted to make room.
    pub fn authenticated(&self) {
        if !self.state.authenticated.swap(true, Ordering::Relaxed) {
            self.table.authenticate(self.state.id);
        }
    }

    /// The connection is held over its address's limit: its requests must not be served (they
    /// are answered 429 after [`Connection::refusal_delay`], or the connection is reset first).
    pub fn refused(&self) -> bool {
        self.state.tarpit
    }

    /// How long until the refusal of a held connection is due.
    pub fn refusal_delay(&self) -> Duration {
        self.table.limits.refusal_delay.saturating_sub(self.state.accepted.elapsed())
    }

    /// The connection became a station's WebSocket, so it has authenticated too (see
    /// [`Connection::authenticated`]): its session's own timeouts bound it from now on.
    pub fn upgraded(&self) {
        let authenticated = !self.state.authenticated.swap(true, Ordering::Relaxed);
        if !self.state.upgraded.swap(true, Ordering::Relaxed) {
            self.table.upgrade(self.state.id, authenticated);
        }
    }

    /// Marks a request as being handled until the returned guard (held until its response is
    /// written) is dropped.
    pub fn request(&self) -> RequestInFlight {
        self.state.had_request.store(true, Ordering::Relaxed);
        self.state.busy.fetch_add(1, Ordering::Relaxed);
        RequestInFlight { state: self.state.clone(), epoch: self.table.epoch }
    }

    /// A handle a session keeps to cut the connection off later.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle { id: self.state.id, table: Arc::downgrade(&self.table) }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.table.remove(&self.state);
    }
}

/// A request being handled on a connection (see [`Connection::request`]).
pub struct RequestInFlight {
    state: Arc<ConnState>,
    epoch: Instant,
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        if self.state.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.state.idle_since_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// Cuts one connection off later (see [`ConnectionTable::abort`]).
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    id: u64,
    table: std::sync::Weak<ConnectionTable>,
}

impl ConnectionHandle {
    /// Closes the connection's socket now, counting `limit` when given; false when it is gone.
    pub fn abort(&self, limit: Option<Limit>) -> bool {
        self.table.upgrade().is_some_and(|t| t.abort(self.id, limit))
    }
}

#[cfg(unix)]
fn socket_id(tcp: &actix_web::rt::net::TcpStream) -> Option<SocketId> {
    use std::os::fd::AsRawFd;
    let fd = tcp.as_raw_fd();
    inode(fd).map(|inode| SocketId { fd, inode })
}

#[cfg(not(unix))]
fn socket_id(_: &actix_web::rt::net::TcpStream) -> Option<SocketId> {
    None
}

#[cfg(unix)]
fn inode(fd: i32) -> Option<u64> {
    // SAFETY: fstat writes into the zeroed struct it is given and has no other precondition; a
    // closed descriptor is reported as an error.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut stat) == 0).then_some(stat.st_ino as u64)
    }
}

/// Resets the connection: no linger (the kernel drops what is unsent and answers RST), then both
/// directions shut, so whoever waits on the socket sees it end. Only if `socket.fd` is still that
/// socket.
#[cfg(unix)]
fn abort_socket(socket: SocketId) -> bool {
    if inode(socket.fd) != Some(socket.inode) {
        return false;
    }
    // SAFETY: the descriptor is open (its inode was just read) and, on the owning thread, cannot be
    // closed while borrowed here.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.fd) };
    let sock = socket2::SockRef::from(&fd);
    let _ = sock.set_linger(Some(Duration::ZERO));
    sock.shutdown(std::net::Shutdown::Both).is_ok()
}

#[cfg(not(unix))]
fn abort_socket(_: SocketId) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: u32, capacity: usize, tarpit: usize) -> ConnectionLimits {
        ConnectionLimits {
            per_address,
            capacity,
            header_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            refusal_delay: Duration::from_millis(50),
            tarpit,
        }
    }

    fn table(per_address: u32, capacity: usize) -> Arc<ConnectionTable> {
        ConnectionTable::new(limits(per_address, capacity, 0))
    }

    fn addr(s: &str) -> AddressKey {
        AddressKey::of(s.parse().unwrap())
    }

    /// Sockets that are no sockets: their fd is -1, so aborting them does nothing.
    fn fake() -> SocketId {
        SocketId { fd: -1, inode: 0 }
    }

    #[test]
    fn ipv6_addresses_count_by_their_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(addr("2001:db8:1:2:3:4:5:6"), addr("2001:db8:1:2:ffff::1"));
        assert_ne!(addr("2001:db8:1:2::1"), addr("2001:db8:1:3::1"));
        assert_eq!(addr("::ffff:10.0.0.1"), addr("10.0.0.1"));
        assert_eq!(addr("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn an_address_may_hold_only_so_many_unauthenticated_connections() {
        let t = table(2, 100);
        let a = t.admit(fake(), addr("10.0.0.1")).unwrap();
        let _b = t.admit(fake(), addr("10.0.0.1")).unwrap();
        assert_eq!(t.admit(fake(), addr("10.0.0.1")).unwrap_err(), Limit::ConnectionsPerAddress);
        assert!(t.admit(fake(), addr("10.0.0.2")).is_ok(), "another address is not affected");
        // Authenticating frees its place.
        let conn = Connection { state: a, table: t.clone() };
        conn.authenticated();
        assert!(t.admit(fake(), addr("10.0.0.1")).is_ok());
        assert_eq!(t.counts(), (4, 3));
        drop(conn);
        assert_eq!(t.counts(), (3, 3));
    }

    #[test]
    fn over_its_address_limit_a_connection_is_held_unserved_a_while_then_reset_and_so_many_at_most() {
        let t = ConnectionTable::new(limits(1, 100, 1));
        let _first = t.admit(fake(), addr("10.0.0.1")).unwrap();
        let held = Connection { state: t.admit(fake(), addr("10.0.0.1")).unwrap(), table: t.clone() };
        assert!(held.refused() && t.held_refusals() == 1);
        assert_eq!(t.admit(fake(), addr("10.0.0.1")).unwrap_err(), Limit::ConnectionsPerAddress, "one held at most");
        assert_eq!(t.counts(), (2, 1), "the held one does not count against the address");
        assert_eq!(t.reap(), 0);
        std::thread::sleep(Duration::from_millis(60));
        t.reap();
        assert!(held.state.reset.load(Ordering::Relaxed), "reset once its delay is over");
        drop(held);
        assert_eq!(t.held_refusals(), 0);
    }

    #[test]
    fn at_capacity_the_oldest_unauthenticated_connection_makes_room_once_it_is_a_second_old() {
        let t = table(0, 2);
        let first = t.admit(fake(), addr("10.0.0.1")).unwrap();
        let _second = t.admit(fake(), addr("10.0.0.2")).unwrap();
        assert_eq!(t.admit(fake(), addr("10.0.0.3")).unwrap_err(), Limit::ConnectionCapacity, "all too young");
        std::thread::sleep(EVICTION_MIN_AGE);
        assert!(t.admit(fake(), addr("10.0.0.3")).is_ok());
        assert!(first.aborted.load(Ordering::Relaxed), "the oldest was cut off");
    }

    #[test]
    fn an_idle_connection_is_reaped_after_the_header_timeout_and_a_busy_or_upgraded_one_is_not() {
        let t = ConnectionTable::new(ConnectionLimits {
            header_timeout: Duration::from_millis(1),
            keep_alive: Duration::from_millis(1),
            ..limits(0, 10, 0)
        });
        let idle = Connection { state: t.admit(fake(), addr("10.0.0.1")).unwrap(), table: t.clone() };
        let busy = Connection { state: t.admit(fake(), addr("10.0.0.1")).unwrap(), table: t.clone() };
        let upgraded = Connection { state: t.admit(fake(), addr("10.0.0.1")).unwrap(), table: t.clone() };
        let _request = busy.request();
        upgraded.upgraded();
        assert_eq!(t.counts(), (3, 2), "a station's WebSocket has authenticated");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(t.reap(), 1);
        assert!(idle.state.aborted.load(Ordering::Relaxed));
        assert!(!busy.state.aborted.load(Ordering::Relaxed) && !upgraded.state.aborted.load(Ordering::Relaxed));
        assert_eq!(t.reap(), 0, "counted once");
        // The reaper walks only the connections that are no station's WebSocket.
        assert_eq!(t.lock().watched.len(), 2);
        drop((idle, busy));
        assert_eq!(t.lock().watched.len(), 0);
        drop(upgraded);
        assert_eq!(t.counts(), (0, 0));
    }
}
