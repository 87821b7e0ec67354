//! A real `redis-server` on an ephemeral loopback port, for the tests of what sira shares
//! across hosts. `bash tests/run.sh` installs it (Debian's `redis-server`).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;

/// A running `redis-server` with no persistence; killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn(port, dir.path());
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    /// Kills this Redis and starts an empty one on the same port: what a host sees when its
    /// Redis restarts without persistence.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, self._dir.path());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16, dir: &std::path::Path) -> Child {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed by tests/run.sh (packaging/deps.sh)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
