//! A real `redis-server` for a test: on a free port of 127.0.0.1, with its own data directory and
//! the append-only file on (fsync on every write), so a test can kill it and start it again on the
//! same port with its data. `scripts/test` installs redis-server when it is missing.

use std::process::{Child, Command, Stdio};
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
