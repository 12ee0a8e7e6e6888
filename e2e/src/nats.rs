//! A `nats-server -js` process for the cluster tests: on loopback, on a
//! port of its own, with its JetStream store in a directory the test owns,
//! killed (SIGKILL) and restarted on demand with the same port and store.
//!
//! `./run-tests` installs Debian's `nats-server` when it is missing and sets
//! `LAPWING_REQUIRE_NATS=1`, so there a missing server fails the tests; a
//! plain `cargo test` without one skips them with a SKIP line.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Debug)]
pub struct Nats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    log: PathBuf,
}

/// Whether a cluster test can run here: `nats-server` is on the PATH. When
/// it is not, prints a SKIP line for `test` and returns false, unless
/// `LAPWING_REQUIRE_NATS` is set, which makes it a failure.
pub fn available(test: &str) -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("LAPWING_REQUIRE_NATS").is_none(),
            "nats-server is not installed, and LAPWING_REQUIRE_NATS is set"
        );
        eprintln!("SKIP {test}: nats-server is not installed (./run-tests installs it)");
    }
    found
}

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Nats {
    /// Starts `nats-server -js` on a free port, its store under `dir`, and
    /// waits until it accepts connections.
    pub fn start(dir: &Path) -> Nats {
        let mut nats = Nats {
            child: None,
            port: free_port(),
            store: dir.join("jetstream"),
            log: dir.join("nats.log"),
        };
        nats.restart();
        nats
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for
    /// it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (killing it first if it runs), with the same
    /// port and store, and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log file");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {addr} within 20 s (log: {})",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
