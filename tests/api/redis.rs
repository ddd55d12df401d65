//! A real `redis-server` for a test: on a free port of 127.0.0.1, with its own data directory and
//! the append-only file on (fsync on every write), so a test can kill it and start it again on the
//! same port with its data. And a real Redis Cluster of three masters, one for the whole test
//! process ([`RedisCluster::shared`]). `scripts/test` installs redis-server and redis-cli when
//! they are missing.

use rand::Rng;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a starting server may take to answer PING (it may be loading its append-only file).
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port with a fresh data directory; returns once it answers PING.
    pub async fn start() -> RedisServer {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("the bound address").port()
        };
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = RedisServer { child: None, port, dir };
        server.spawn();
        server.wait_ready().await;
        server
    }

    /// `redis://127.0.0.1:{port}/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server as the store's target.
    pub fn target(&self) -> ocpp_css::store::RedisTarget {
        ocpp_css::store::RedisTarget::Single(self.url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no chance to save anything beyond what the AOF already holds) and
    /// waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data directory; returns once it
    /// answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"])
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): it must be in PATH; scripts/test installs it (apt-get install redis-server)")
            });
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.ping().await {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server on port {} exited ({status}):\n{log}", self.port);
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer PING in time", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True when the server answers PING with PONG (not, say, LOADING).
    async fn ping(&self) -> bool {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(("127.0.0.1", self.port))).await
        else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut answer = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut answer)).await {
            Ok(Ok(n)) => answer[..n].starts_with(b"+PONG"),
            _ => false,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long the shared cluster may take to form: three servers answering PING, `redis-cli --cluster
/// create`, and every node reporting `cluster_state:ok` with all 16384 slots assigned.
const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster's nodes.
const CLUSTER_NODES: usize = 3;

/// Three `redis-server`s with cluster mode on, formed into one Redis Cluster of three masters (no
/// replicas), each with its own data directory and the append-only file on.
///
/// Forming a cluster takes seconds, so a test process has one ([`RedisCluster::shared`]), started
/// on first use and shared by every test: tests keep apart by key prefix, not by server.
///
/// It must not outlive the test process. A static is never dropped, so no destructor stops it:
/// - when the process exits normally (all tests ran, passed or not), an `atexit` handler kills
///   the servers and removes their directories;
/// - when the process dies without exiting (SIGKILL, a timeout, an abort), the kernel kills them:
///   each server is started with `PR_SET_PDEATHSIG` = SIGKILL (set in the child between fork and
///   exec), the signal the kernel sends a process when its parent dies. On Linux the "parent" is
///   the *thread* that forked it, not the process: servers spawned from a test's thread (or from a
///   worker of a test's tokio runtime) would be killed as soon as that test ended, under the tests
///   still using them. So they are spawned from a thread of their own that never ends: it dies
///   only with the process. The start is blocking and done on that thread, not inside any test's
///   runtime.
pub struct RedisCluster {
    ports: [u16; CLUSTER_NODES],
    /// The running servers; taken (killed, directories removed) at exit.
    nodes: Mutex<Option<Nodes>>,
}

/// The cluster of the test process, or why it could not be started (every test using it fails
/// with that message).
static SHARED_CLUSTER: OnceLock<Result<RedisCluster, String>> = OnceLock::new();

impl RedisCluster {
    /// The test process's cluster, started (blocking, for a few seconds) by the first caller;
    /// callers meanwhile wait for it. Panics with the reason when it cannot be started. Call it
    /// from a blocking context (a `#[test]`, `tokio::task::spawn_blocking`).
    pub fn shared() -> &'static RedisCluster {
        let started = SHARED_CLUSTER.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("redis-cluster".into())
                .spawn(move || {
                    let started = std::panic::catch_unwind(RedisCluster::start).map_err(|payload| {
                        payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_else(|| "a panic without a message".to_owned())
                    });
                    let _ = sender.send(started);
                    // The servers' parent: it must live as long as the process (see above).
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawn the redis-cluster thread");
            let started =
                receiver.recv().unwrap_or_else(|_| Err("the redis-cluster thread ended without an answer".to_owned()));
            if started.is_ok() {
                // SAFETY: registers a plain function without arguments, which does not unwind.
                unsafe { libc::atexit(stop_shared_cluster) };
            }
            started
        });
        match started {
            Ok(cluster) => cluster,
            Err(why) => panic!("the shared Redis Cluster did not start: {why}"),
        }
    }

    /// The nodes' ports on 127.0.0.1.
    pub fn ports(&self) -> [u16; CLUSTER_NODES] {
        self.ports
    }

    /// `redis://127.0.0.1:{port}` of each node (no database number: a cluster has only db 0).
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect()
    }

    /// The cluster as the store's target, every node a seed.
    pub fn target(&self) -> ocpp_css::store::RedisTarget {
        ocpp_css::store::RedisTarget::Cluster(self.urls())
    }

    /// `redis-cli -h 127.0.0.1 -p {port} {args…}` (options such as `-c` may lead `args`): its
    /// output without the final newline; panics when it fails.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = redis_cli(port, args);
        assert!(output.status.success(), "redis-cli -p {port} {}: {}", args.join(" "), describe(&output));
        String::from_utf8_lossy(&output.stdout).trim_end().to_owned()
    }

    /// Starts the servers, forms the cluster and waits until every node sees it whole. Runs on the
    /// servers' own thread; a panic kills what was started.
    fn start() -> RedisCluster {
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        let ports = cluster_ports();
        let mut nodes = Nodes(Vec::new());
        for port in ports {
            nodes.0.push(Node::spawn(port));
        }
        for node in &mut nodes.0 {
            while !redis_cli(node.port, &["PING"]).stdout.starts_with(b"PONG") {
                node.assert_running();
                assert!(Instant::now() < deadline, "redis-server on port {} did not answer PING in time", node.port);
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        let addresses: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let created = redis_cli(ports[0], &create);
        assert!(created.status.success(), "redis-cli {} failed: {}", create.join(" "), describe(&created));

        // `--cluster create` returns once the slots are assigned; each node still has to hear of
        // the others (gossip) before it serves them.
        for node in &mut nodes.0 {
            loop {
                let info = String::from_utf8_lossy(&redis_cli(node.port, &["CLUSTER", "INFO"]).stdout).into_owned();
                let has = |line: &str| info.lines().any(|l| l.trim() == line);
                if has("cluster_state:ok") && has("cluster_slots_assigned:16384") && has("cluster_known_nodes:3") {
                    break;
                }
                node.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "the Redis Cluster on ports {ports:?} did not form within {CLUSTER_START_TIMEOUT:?}: node {} \
                     reports:\n{info}",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { ports, nodes: Mutex::new(Some(nodes)) }
    }
}

/// At process exit: kills the shared cluster's servers and removes their directories. Must not
/// panic (it runs outside Rust's unwinding).
extern "C" fn stop_shared_cluster() {
    if let Some(Ok(cluster)) = SHARED_CLUSTER.get() {
        if let Ok(mut nodes) = cluster.nodes.try_lock() {
            drop(nodes.take());
        }
    }
}

/// The cluster's servers, killed when dropped (then their directories removed).
struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.0 {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

struct Node {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Node {
    /// A cluster-enabled `redis-server` on `port` (its cluster bus on `port + 10000`), killed by
    /// the kernel when the thread that spawned it dies.
    fn spawn(port: u16) -> Node {
        let dir = tempfile::tempdir().expect("temp dir for a redis cluster node");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.path().join("nodes.conf"))
            .args(["--cluster-node-timeout", "2000"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"])
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
            // are allowed: prctl is a plain system call, and nothing is allocated.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): it must be in PATH; scripts/test installs it (apt-get install redis-server)")
        });
        Node { port, child, dir }
    }

    /// Panics with the server's log when it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
            panic!("redis-server (cluster node) on port {} exited ({status}):\n{log}", self.port);
        }
    }
}

/// Three free ports for the cluster's nodes, each with its cluster bus port (port + 10000) free
/// too (both bound to check). Taken from 12000..22000 (buses 22000..32000), below Linux's
/// ephemeral range (32768 and up by default), so that neither a port the kernel hands out for
/// `bind(0)` (the other tests' servers and listeners) nor a client's outgoing port takes one of
/// them between this check and the servers binding them.
fn cluster_ports() -> [u16; CLUSTER_NODES] {
    let mut rng = rand::thread_rng();
    let mut ports = [0u16; CLUSTER_NODES];
    let mut held = Vec::new();
    let mut found = 0;
    for _ in 0..10_000 {
        if found == CLUSTER_NODES {
            break;
        }
        let port: u16 = rng.gen_range(12_000..22_000);
        if ports.contains(&port) {
            continue;
        }
        let bind = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port));
        if let (Ok(client), Ok(bus)) = (bind(port), bind(port + 10_000)) {
            held.push((client, bus));
            ports[found] = port;
            found += 1;
        }
    }
    assert_eq!(found, CLUSTER_NODES, "no free ports (with their port + 10000) for a Redis Cluster in 12000..22000");
    // Released here, for the servers to bind.
    drop(held);
    ports
}

/// `redis-cli -h 127.0.0.1 -p {port} {args…}`, run to completion; panics only when redis-cli
/// cannot be run.
fn redis_cli(port: u16, args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}): it must be in PATH; scripts/test installs it (apt-get install redis-tools)")
        })
}

fn describe(output: &Output) -> String {
    format!("{}\n{}{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The harness itself: the shared cluster is three masters covering every slot, each node sees it
/// `ok`, and a key written through one node (following the redirect, `redis-cli -c`) is stored on
/// the master owning its slot and on no other node.
#[test]
fn the_shared_redis_cluster_is_three_masters_and_a_key_lands_on_the_owner_of_its_slot() {
    let cluster = RedisCluster::shared();
    let ports = cluster.ports();
    for port in ports {
        let info = cluster.cli(port, &["CLUSTER", "INFO"]);
        for line in ["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3", "cluster_size:3"] {
            assert!(info.lines().any(|l| l.trim() == line), "node {port}: no {line} in\n{info}");
        }
    }

    // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>`
    let nodes = cluster.cli(ports[0], &["CLUSTER", "NODES"]);
    let masters: Vec<(u16, Vec<(u16, u16)>)> = nodes
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields[2].split(',').any(|flag| flag == "master"))
        .map(|fields| {
            let port = fields[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).expect("a node's port");
            let ranges = fields[8..]
                .iter()
                .map(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    (from.parse().expect("a slot"), to.parse().expect("a slot"))
                })
                .collect();
            (port, ranges)
        })
        .collect();
    let mut master_ports: Vec<u16> = masters.iter().map(|(port, _)| *port).collect();
    master_ports.sort_unstable();
    let mut expected = ports.to_vec();
    expected.sort_unstable();
    assert_eq!(master_ports, expected, "the masters in\n{nodes}");
    let slots: u32 = masters.iter().flat_map(|(_, ranges)| ranges).map(|(from, to)| u32::from(to - from) + 1).sum();
    assert_eq!(slots, 16384, "the slots in\n{nodes}");

    // A hash-tagged key whose slot another node than the one written to owns: the write is
    // redirected (MOVED) to that owner.
    let owner_of = |slot: u16| {
        masters
            .iter()
            .find(|(_, ranges)| ranges.iter().any(|(from, to)| (*from..=*to).contains(&slot)))
            .map(|(port, _)| *port)
            .expect("an owner of every slot")
    };
    let (key, slot, owner) = (0..)
        .map(|n| {
            let key = format!("{{harness-{n}}}:key");
            let slot: u16 = cluster.cli(ports[0], &["CLUSTER", "KEYSLOT", &key]).parse().expect("a slot number");
            (key, slot, owner_of(slot))
        })
        .find(|(_, _, owner)| *owner != ports[0])
        .expect("a key of another node's slot");
    assert_eq!(cluster.cli(ports[0], &["-c", "SET", &key, "here"]), "OK");

    let slot = slot.to_string();
    for port in ports {
        let count = cluster.cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot]);
        assert_eq!(count, if port == owner { "1" } else { "0" }, "keys of slot {slot} on node {port}");
    }
    assert_eq!(cluster.cli(owner, &["GET", &key]), "here");
    assert_eq!(cluster.cli(ports[0], &["-c", "DEL", &key]), "1");
}
