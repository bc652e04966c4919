//! What the black-box tests of the real binary share: running it, a free port, a key
//! folder, a minimal configuration, a guard that ends the process, raw HTTP/1.1 exchanges,
//! fake upstreams, `curl` and `openssl`.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealgate"))
}

/// Runs `sealgate ARGS` to its end.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run sealgate")
}

/// What a run wrote to stdout, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// What a run wrote to stderr, trimmed.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// Runs `sealgate ARGS`, which must succeed, and returns its stdout, trimmed.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
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
    run_ok(&["keygen", "--dir", dir.to_str().expect("a UTF-8 path")])
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

/// `sealgate serve` on a free port, with a key folder `keys` (one key) in a temporary
/// folder and the configuration `write_config` makes with `extra`; stopped when dropped.
/// The caller waits for what it needs.
pub struct Instance {
    pub server: Server,
    pub port: u16,
    pub keys: PathBuf,
    pub tmp: tempfile::TempDir,
}

impl Instance {
    pub fn start(extra: &str) -> Self {
        let tmp = tempfile::tempdir().expect("a temporary folder");
        let keys = tmp.path().join("keys");
        keygen(&keys);
        let port = free_port();
        let config = write_config(tmp.path(), port, &keys, extra);
        let server = Server::start(&config, None);
        Instance {
            server,
            port,
            keys,
            tmp,
        }
    }
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

/// Unix seconds now, as the server counts them.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Sends `request` as is on a fresh connection to 127.0.0.1:`port` and reads the answer
/// until the server closes, each read waiting at most `within`. Fails when no connection is
/// made, or the request is not written, or the answer not read to its end.
pub fn exchange(port: u16, request: &[u8], within: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(within))?;
    s.write_all(request)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// Like `exchange`, but never fails: whatever the server answered before it closed, the
/// read timed out or the connection broke off (also when the request could not be written
/// whole: a server may answer an oversized request early), and "" when no connection was
/// made.
pub fn exchange_lossy(port: u16, request: &[u8], within: Duration) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(within))
        .expect("set a read timeout");
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status code of a raw HTTP/1.1 answer; 0 when it has no status line.
pub fn status_code(answer: &str) -> u16 {
    answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A raw answer's head and body; the whole as head when there is no blank line.
pub fn head_and_body(answer: &str) -> (&str, &str) {
    answer.split_once("\r\n\r\n").unwrap_or((answer, ""))
}

/// The value of the counter `name` (a metric name with its labels) on `/metrics`; 0 when
/// it is not there (yet).
pub fn metric(port: u16, name: &str) -> u64 {
    let answer = exchange_lossy(
        port,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    head_and_body(&answer)
        .1
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A fake upstream on a free port of 127.0.0.1: each connection goes to `serve` on a thread
/// of its own, for as long as the test runs.
pub fn upstream(serve: impl Fn(TcpStream) + Clone + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an upstream");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// `curl -s --max-time 5 -o /dev/null -w WRITE_OUT ARGS URL`: what `-w` wrote.
pub fn curl(write_out: &str, args: &[&str], url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-o", "/dev/null", "-w", write_out])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl ARGS` in `dir`, which must succeed; its output goes nowhere.
pub fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// `ca.pem` (a CA of its own, in no trust store) and `leaf.pem`/`leaf.key` it signed for
/// 127.0.0.1 (made by `openssl`).
pub fn make_private_ca(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=sealgate test CA",
            ][..],
            &ec,
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
        dir,
    );
    openssl(
        &[
            &["req", "-subj", "/CN=upstream"][..],
            &ec,
            &["-keyout", "leaf.key", "-out", "leaf.csr"],
        ]
        .concat(),
        dir,
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
        dir,
    );
}

// ---- sealed sessions, as the tests that talk to the session cache make them -------------

/// The session limits those tests seal with (12 h absolute, 1 h idle, 60 s skew).
pub const LIMITS: sealgate::session::Limits = sealgate::session::Limits {
    absolute: 12 * 3600,
    idle: 3600,
    refresh_skew: 60,
};
/// The session cache's counters.
pub const CACHE_HIT: &str = "sealgate_session_cache_total{result=\"hit\"}";
pub const CACHE_MISS: &str = "sealgate_session_cache_total{result=\"miss\"}";

/// The `Cookie` header a browser sends back for these `Set-Cookie` values.
pub fn cookie_header(set: &[String]) -> String {
    set.iter()
        .map(|h| h.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The session cookie header for `session`, sealed (`LIMITS`, `secure = false`) with the
/// folder's ring as it is now.
pub fn sealed_cookie(dir: &Path, session: &sealgate::session::Session) -> String {
    use sealgate::config::SameSite;
    use sealgate::cookies::RequestCookies;
    use sealgate::jar::{self, Cookies};
    use sealgate::keys::{KeyRing, ModePolicy};

    let ring = KeyRing::load_dir(dir, ModePolicy::OwnerOnly).expect("the key folder loads");
    let set = jar::write_session(
        &RequestCookies::default(),
        &ring,
        &Cookies::new(false, SameSite::Lax, 4),
        &LIMITS,
        now(),
        session,
    )
    .expect("the session seals");
    cookie_header(&set)
}

/// sealgate with `extra` configuration, once it accepts connections and serves its metrics
/// (the session cache's counters at 0).
pub fn start_serving(extra: &str) -> Instance {
    let run = Instance::start(extra);
    let port = run.port;
    wait_until("metrics", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && metric(port, CACHE_MISS) == 0
    });
    run
}
