//! What the black-box tests of the real binary share: starting it, a free port, a key
//! folder, a minimal configuration, and a guard that ends the process.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealgate"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `sealgate keygen --dir DIR`, returning the kid.
pub fn keygen(dir: &Path) -> String {
    let out = bin()
        .arg("keygen")
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A configuration listening on `port` with an unreachable provider (nothing these tests
/// check needs one), the key folder `keys`, and `extra` TOML appended.
pub fn write_config(dir: &Path, port: u16, keys: &Path, extra: &str) -> PathBuf {
    let path = dir.join("sealgate.toml");
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [oidc]\nissuer = \"http://127.0.0.1:{}\"\nclient_id = \"bff\"\nclient_secret = \"s\"\nallow_insecure_http = true\n\
         [keys]\ndir = \"{}\"\n{extra}",
        free_port(),
        keys.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `sealgate serve`, killed when dropped.
pub struct Server(pub Child);

impl Server {
    /// Starts `serve --config CONFIG`, its stderr to `log` (or nowhere).
    pub fn start(config: &Path, log: Option<&Path>) -> Self {
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
            None => Stdio::null(),
        };
        let child = bin()
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start sealgate");
        Server(child)
    }

    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.pid()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
    }

    /// Waits for the process to exit (at most `within`) and returns its exit code.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not exit within {within:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Polls `ready` every 20 ms for at most 10 s.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
