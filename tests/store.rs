//! The shared store against a real `redis-server` (standalone, and a three-node Cluster):
//! revocations reach every instance by pub/sub and by resync, `jti` replays are refused
//! across instances, the refresh lock is exclusive and only its owner renews or releases
//! it, an outage loses no revocation, AOF keeps the records over a restart, and
//! `sealgate sessions revoke` writes what every instance reads; a TLS-only Redis whose
//! certificate a private CA signed is used with `store.ca_file` and refused without it.
//!
//! Each test starts its own Redis on free loopback ports with its own `--dir` and stops it
//! by PID. Without `redis-server`: fails when `CI` is set, else skips saying so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate::config;
use sealgate::revocations::Record;
use sealgate::secret::SecretString;
use sealgate::store::{Delivery, Lock, Store};

use common::{free_port, now, write_config};

/// A `redis-server` of this test, killed (by PID) when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    /// Standalone, on a free port, persisting by AOF (fsync on every write) or not at all.
    fn start(dir: &Path, aof: bool) -> Redis {
        let args = ["--appendonly", if aof { "yes" } else { "no" }];
        let args = args.iter().map(|s| (*s).to_owned());
        let args = args.chain(["--appendfsync".into(), "always".into()]);
        Redis::with(dir, free_port(), args.collect())
    }

    fn with(dir: &Path, port: u16, args: Vec<String>) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let mut r = Redis {
            child: None,
            port,
            dir: dir.to_owned(),
            args,
        };
        r.restart();
        r
    }

    /// (Re)starts it on the same port and folder and waits for PING.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        // A Redis with a password answers PING with NOAUTH: up all the same.
        while !ask(self.port, "PING").is_some_and(|a| a == "+PONG" || a.starts_with("-NOAUTH")) {
            assert!(
                Instant::now() < deadline,
                "redis on {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL: a crash, not a clean shutdown) and waits for it to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One inline command over a raw connection; the first line of the answer.
fn ask(port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some(text.lines().next().unwrap_or_default().to_owned())
}

/// Whether the tests can run: `redis-server` is installed, or (outside CI) a skip.
fn have_redis(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is required in CI"
        );
        println!("skipping {test}: redis-server is not installed");
    }
    found
}

fn settings(nodes: &[String], cluster: bool, resync: Duration) -> config::Store {
    config::Store {
        nodes: nodes
            .iter()
            .map(|n| SecretString::from(n.as_str()))
            .collect(),
        cluster,
        prefix: "t:".into(),
        timeout: Duration::from_millis(250),
        resync,
        ca_file: None,
    }
}

/// A store with its background task running (ended with the test's runtime).
fn store(nodes: &[String], cluster: bool, resync: Duration) -> Arc<Store> {
    let s = Arc::new(Store::new(&settings(nodes, cluster, resync)).unwrap());
    tokio::spawn(s.clone().run());
    s
}

async fn eventually(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every store has subscribed and read the set once.
async fn all_up(stores: &[&Arc<Store>]) {
    eventually("stores up", Duration::from_secs(10), || {
        stores.iter().all(|s| s.is_up())
    })
    .await;
}

/// Far enough that only pub/sub (or the resync on subscribe) can deliver in a test.
const NO_RESYNC: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_store_by_pubsub_and_a_late_one_by_resync() {
    if !have_redis("revocation_reaches_every_store") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path(), false);
    let (a, b) = (
        store(&[redis.url()], false, NO_RESYNC),
        store(&[redis.url()], false, NO_RESYNC),
    );
    all_up(&[&a, &b]).await;
    let changes = b.changes();
    let t = now();
    let d = a.revoke(Record::sub("alice", t, t + 600), t).await.unwrap();
    assert_eq!(d, Delivery::Written);
    eventually("b hears of it", Duration::from_secs(2), || {
        b.is_revoked("alice", None, t - 1, now())
    })
    .await;
    assert!(changes.has_changed().unwrap());
    assert!(
        !b.is_revoked("alice", None, t + 1, now()),
        "a later login lives"
    );
    assert!(!b.is_revoked("bob", None, t - 1, now()));
    let c = store(&[redis.url()], false, NO_RESYNC);
    eventually(
        "a store started later reads it",
        Duration::from_secs(5),
        || c.is_revoked("alice", Some("x"), t, now()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_logout_token_jti_replayed_on_any_instance() {
    if !have_redis("refuses_a_logout_token_jti_replayed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path(), false);
    let (a, b) = (
        store(&[redis.url()], false, NO_RESYNC),
        store(&[redis.url()], false, NO_RESYNC),
    );
    all_up(&[&a, &b]).await;
    let exp = now() + 120;
    assert!(a.first_use("jti-1", exp).await.unwrap());
    assert!(!a.first_use("jti-1", exp).await.unwrap(), "replay here");
    assert!(
        !b.first_use("jti-1", exp).await.unwrap(),
        "replay elsewhere"
    );
    assert!(b.first_use("jti-2", exp).await.unwrap());
    // Stored as a digest: the jti itself is nowhere in Redis.
    assert_eq!(ask(redis.port, "KEYS *jti-1*").as_deref(), Some("*0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_lock_is_exclusive_and_only_its_owner_renews_or_releases_it() {
    if !have_redis("refresh_lock_is_exclusive") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = Redis::start(tmp.path(), false);
    let urls = [redis.url()];
    let (a, b) = (
        store(&urls, false, NO_RESYNC),
        store(&urls, false, NO_RESYNC),
    );
    all_up(&[&a, &b]).await;
    lock_and_outcome(&a, &b).await;
}

/// The single-flight contract, standalone or cluster.
async fn lock_and_outcome(a: &Store, b: &Store) {
    let key = [7u8; 32];
    let ttl = Duration::from_secs(5);
    let held = a.lock(key, ttl).await.unwrap().expect("the first takes it");
    assert!(b.lock(key, ttl).await.unwrap().is_none(), "exclusive");
    let forged = Lock {
        key,
        token: "not-the-token".into(),
    };
    assert!(
        !b.renew(&forged, ttl).await.unwrap(),
        "only the owner renews"
    );
    b.unlock(forged).await.unwrap();
    assert!(b.lock(key, ttl).await.unwrap().is_none(), "nor releases");
    assert!(a.renew(&held, ttl).await.unwrap());
    a.put_outcome(key, "sealed-outcome", ttl).await.unwrap();
    assert_eq!(
        b.outcome(key).await.unwrap().as_deref(),
        Some("sealed-outcome")
    );
    assert_eq!(b.outcome([8u8; 32]).await.unwrap(), None);
    a.unlock(held).await.unwrap();
    let again = b.lock(key, Duration::from_millis(200)).await.unwrap();
    assert!(again.is_some(), "released: free to take");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        a.lock(key, ttl).await.unwrap().is_some(),
        "a lock whose holder died expires"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_revocations_made_while_redis_is_down_and_delivers_them_when_it_is_back() {
    if !have_redis("keeps_revocations_made_while_redis_is_down") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(tmp.path(), false);
    let (a, b) = (
        store(&[redis.url()], false, NO_RESYNC),
        store(&[redis.url()], false, NO_RESYNC),
    );
    all_up(&[&a, &b]).await;
    redis.kill();
    let t = now();
    let d = a.revoke(Record::sid("sid-1", t + 600), t).await.unwrap();
    assert_eq!(d, Delivery::Queued);
    assert!(
        a.is_revoked("u", Some("sid-1"), t, t),
        "applies here at once"
    );
    assert_eq!(a.pending(), 1);
    assert!(!a.is_up());
    // Replays on this instance are still caught; the refresh lock says it cannot help.
    assert!(a.first_use("jti-down", t + 60).await.unwrap());
    assert!(!a.first_use("jti-down", t + 60).await.unwrap());
    assert!(a.lock([1; 32], Duration::from_secs(1)).await.is_err());
    assert!(!b.is_revoked("u", Some("sid-1"), t, now()));
    redis.restart();
    eventually("the other store learns it", Duration::from_secs(10), || {
        b.is_revoked("u", Some("sid-1"), t, now())
    })
    .await;
    assert_eq!(a.pending(), 0);
    assert_eq!(ask(redis.port, "ZCARD t:revoked").as_deref(), Some(":1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_revocations_over_a_redis_crash_with_aof() {
    if !have_redis("keeps_revocations_over_a_redis_crash") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(tmp.path(), true);
    let a = store(&[redis.url()], false, NO_RESYNC);
    all_up(&[&a]).await;
    let t = now();
    let d = a.revoke(Record::sub("carol", t, t + 600), t).await.unwrap();
    assert_eq!(d, Delivery::Written);
    redis.kill();
    redis.restart();
    let c = store(&[redis.url()], false, NO_RESYNC);
    eventually(
        "read back after the restart",
        Duration::from_secs(5),
        || c.is_revoked("carol", None, t, now()),
    )
    .await;
}

/// Three masters, no replicas, slots spread by `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<Redis>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|i| {
                let port = free_port();
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--appendonly",
                    "no",
                ];
                let args = args.iter().map(|s| (*s).to_owned()).collect();
                Redis::with(&dir.join(format!("n{i}")), port, args)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "{out:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &nodes {
            while !Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            {
                assert!(Instant::now() < deadline, "cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Cluster { nodes }
    }

    /// `host:port` seeds, starting at node `first`.
    fn seeds(&self, first: usize) -> Vec<String> {
        (0..3)
            .map(|i| format!("redis://127.0.0.1:{}", self.nodes[(first + i) % 3].port))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_revocations_jtis_and_locks() {
    if !have_redis("a_cluster_shares") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(tmp.path());
    // Different first seeds: the two subscribe on different nodes.
    let (a, b) = (
        store(&cluster.seeds(0), true, NO_RESYNC),
        store(&cluster.seeds(2), true, NO_RESYNC),
    );
    all_up(&[&a, &b]).await;
    let t = now();
    let d = a.revoke(Record::sid("sid-c", t + 600), t).await.unwrap();
    assert_eq!(d, Delivery::Written);
    eventually("b hears of it", Duration::from_secs(2), || {
        b.is_revoked("u", Some("sid-c"), t, now())
    })
    .await;
    let exp = now() + 120;
    assert!(a.first_use("jti-c", exp).await.unwrap());
    assert!(!b.first_use("jti-c", exp).await.unwrap());
    lock_and_outcome(&a, &b).await;
    let c = store(&cluster.seeds(1), true, NO_RESYNC);
    eventually("a later store reads it", Duration::from_secs(5), || {
        c.is_revoked("u", Some("sid-c"), t, now())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_revoke_writes_a_record_every_instance_reads() {
    if !have_redis("sessions_revoke_writes_a_record") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(&tmp.path().join("redis"), false);
    let store_section = format!(
        "[store]\nurl = \"{}\"\nprefix = \"t:\"\n[session]\nabsolute = \"1h\"\n",
        redis.url()
    );
    let config = write_config(
        tmp.path(),
        free_port(),
        &tmp.path().join("no-keys"),
        &store_section,
    );
    let t = now();
    let out = common::run(&[
        "sessions",
        "revoke",
        "--sub",
        "dave",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("dave"));
    let c = store(&[redis.url()], false, NO_RESYNC);
    eventually("the record is read back", Duration::from_secs(5), || {
        c.is_revoked("dave", None, t, now())
    })
    .await;
    assert!(
        !c.is_revoked("dave", None, now() + 2, now()),
        "later logins live"
    );
    let score = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "zrange",
            "t:revoked",
            "0",
            "-1",
            "withscores",
        ])
        .output()
        .unwrap();
    let score: u64 = String::from_utf8_lossy(&score.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (t + 3600..=now() + 3600).contains(&score),
        "kept for session.absolute"
    );
    // Subjects and sids are opaque and may start with `-` (a base64url sid does one time in
    // 64): taken as values, never as flags.
    let config_path = config.to_str().unwrap();
    for (flag, id) in [("--sub", "-dash-sub"), ("--sid", "-X8rGi4hqaFXN-FHl")] {
        let out = common::run(&["sessions", "revoke", flag, id, "--config", config_path]);
        assert!(
            out.status.success(),
            "{flag} {id}: {}",
            common::stderr(&out)
        );
    }
    eventually("both read back", Duration::from_secs(5), || {
        c.is_revoked("-dash-sub", None, t, now())
            && c.is_revoked("erin", Some("-X8rGi4hqaFXN-FHl"), t, now())
    })
    .await;
    redis.kill();
    let out = common::run(&[
        "sessions",
        "revoke",
        "--sid",
        "s",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "store unreachable");
    assert!(common::stderr(&out).contains("nothing revoked"));
}

#[test]
fn refuses_sessions_revoke_without_a_store_naming_store_url() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), free_port(), &tmp.path().join("keys"), "");
    let out = common::run(&[
        "sessions",
        "revoke",
        "--sub",
        "x",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("store.url"),
        "{}",
        common::stderr(&out)
    );
    let out = common::run(&["sessions", "revoke", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "needs --sub or --sid");
}

#[test]
fn serve_reports_the_store_and_logs_an_outage_once_each_way_never_the_password() {
    if !have_redis("serve_reports_the_store") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--requirepass", "hunter2pw", "--appendonly", "no"];
    let args = args.iter().map(|s| (*s).to_owned()).collect();
    let mut redis = Redis::with(&tmp.path().join("redis"), free_port(), args);
    let keys = tmp.path().join("keys");
    common::keygen(&keys);
    let port = free_port();
    let url = format!("redis://:hunter2pw@127.0.0.1:{}", redis.port);
    let config = write_config(
        tmp.path(),
        port,
        &keys,
        &format!("[store]\nurl = \"{url}\"\nresync = \"1s\"\n"),
    );
    let log = tmp.path().join("serve.log");
    let _server = common::Server::start(&config, Some(&log));
    common::wait_until("store up", || {
        common::metric(port, "sealgate_store_up") == 1
    });
    redis.kill();
    common::wait_until("store down", || {
        common::metric(port, "sealgate_store_up") == 0
    });
    // Requests go on meanwhile, and the outage is one line, not one per failure.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(common::metric(port, "sealgate_store_errors_total{op=\"subscribe\"}") >= 2);
    redis.restart();
    common::wait_until("store back", || {
        common::metric(port, "sealgate_store_up") == 1
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("store unreachable").count(), 1, "{text}");
    assert_eq!(text.matches("store reachable").count(), 2, "{text}");
    assert!(
        !text.contains("hunter2pw"),
        "the password is never logged:\n{text}"
    );
}

/// A TLS-only `redis-server` (`--port 0`) with the certificate `make_private_ca` made in
/// `dir` for 127.0.0.1; up once its TLS port accepts connections.
fn start_tls_redis(dir: &Path) -> Redis {
    common::make_private_ca(dir);
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--save", "", "--tls-auth-clients", "no"])
        .args(["--tls-cert-file", "leaf.pem", "--tls-key-file", "leaf.key"])
        .args(["--tls-ca-cert-file", "ca.pem"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let redis = Redis {
        child: Some(child),
        port,
        dir: dir.to_owned(),
        args: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "TLS redis on {port} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_store_signed_by_a_private_ca_is_used_with_ca_file_and_refused_without() {
    if !have_redis("a_tls_store_signed_by_a_private_ca") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = start_tls_redis(tmp.path());
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let trusted = |resync| {
        let mut s = settings(std::slice::from_ref(&url), false, resync);
        s.ca_file = Some(tmp.path().join("ca.pem"));
        let s = Arc::new(Store::new(&s).unwrap());
        tokio::spawn(s.clone().run());
        s
    };
    // Under the webpki roots the private CA is unknown: never up, revocations only queued.
    let untrusted = store(std::slice::from_ref(&url), false, NO_RESYNC);
    let (a, b) = (trusted(NO_RESYNC), trusted(NO_RESYNC));
    all_up(&[&a, &b]).await;
    let t = now();
    let d = a.revoke(Record::sub("dora", t, t + 600), t).await.unwrap();
    assert_eq!(d, Delivery::Written, "written over TLS");
    eventually("b hears of it over TLS", Duration::from_secs(2), || {
        b.is_revoked("dora", None, t - 1, now())
    })
    .await;
    assert!(!untrusted.is_up(), "up without trusting the CA");
    let d = untrusted
        .revoke(Record::sub("erin", t, t + 600), t)
        .await
        .unwrap();
    assert_eq!(d, Delivery::Queued, "nothing written without the CA");
    assert!(!untrusted.is_revoked("dora", None, t - 1, now()));
}

#[test]
fn refuses_a_store_ca_file_without_a_certificate_naming_it_in_serve_check_and_sessions_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Text that is not PEM, and PEM that holds no certificate (only a key).
    std::fs::write(dir.join("not-a-ca.pem"), "not a certificate\n").unwrap();
    common::make_private_ca(dir);
    let keys = dir.join("keys");
    common::keygen(&keys);
    for file in ["not-a-ca.pem", "ca.key"] {
        let extra = format!(
            "[store]\nurl = \"rediss://127.0.0.1:1\"\nca_file = \"{}\"\n",
            dir.join(file).display()
        );
        let path = write_config(dir, free_port(), &keys, &extra);
        // serve through the guard (bounded even if it would start).
        let log = dir.join("serve.log");
        let code = common::Server::start(&path, Some(&log)).wait_exit(Duration::from_secs(10));
        let serve_err = std::fs::read_to_string(&log).unwrap();
        assert_eq!(code, Some(2), "{file} serve: {serve_err}");
        assert!(
            serve_err.contains("store.ca_file"),
            "{file} serve: {serve_err}"
        );
        let config = path.to_str().unwrap();
        for args in [
            &["check", "--config", config][..],
            &["sessions", "revoke", "--sub", "x", "--config", config][..],
        ] {
            let out = common::run(args);
            let stderr = common::stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{file} {args:?}: {stderr}");
            assert!(
                stderr.contains("store.ca_file") && stderr.contains(file),
                "{file} {args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn serve_and_sessions_revoke_use_a_tls_store_named_by_the_platform_variables() {
    if !have_redis("serve_and_sessions_revoke_use_a_tls_store") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = start_tls_redis(tmp.path());
    let keys = tmp.path().join("keys");
    common::keygen(&keys);
    let port = free_port();
    // No [store] in the file: the URL and the CA come as a manifest would pass them.
    let config = write_config(tmp.path(), port, &keys, "");
    let ca = tmp.path().join("ca.pem");
    let env = [
        (
            "SEALGATE_STORE__URL",
            format!("rediss://127.0.0.1:{}", redis.port),
        ),
        ("SEALGATE_STORE__CA_FILE", ca.display().to_string()),
    ];
    let child = common::bin()
        .args(["serve", "--config", config.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = common::Server(child);
    common::wait_until("store up over TLS", || {
        common::metric(port, "sealgate_store_up") == 1
    });
    let out = common::bin()
        .args(["sessions", "revoke", "--sub", "frank", "--config"])
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("frank"));
}
