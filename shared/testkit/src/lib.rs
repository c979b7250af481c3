//! Test kit: real infrastructure for tests, never mocks.
//!
//! Owns starting a private `redis-server` on a free loopback port with its own
//! data directory ([`RedisServer`]), a three-master cluster ([`RedisCluster`]),
//! starting the real service binaries as child processes ([`ServiceProcess`]),
//! and the shared fixtures ([`fixtures`]: one test aggregate, metadata,
//! wait-until). Must not know any service's API. Everything is killed and
//! removed when dropped.

pub mod edge;
pub mod fixtures;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; a race is possible but
/// callers retry on bind failure).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// Whether process `pid` holds a socket listening on TCP `port` (Linux's
/// /proc; None where it cannot tell). A port that answers may be another
/// test's: [`free_port`] released it and someone else bound it first — a
/// fleet that took that answer for its own child's talked to another
/// fleet's service (foreign tokens: "bad signature").
pub fn listens_on(pid: u32, port: u16) -> Option<bool> {
    let suffix = format!(":{port:04X}");
    let mut tables = 0;
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        tables += 1;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            if f.len() > 9 && f[1].ends_with(&suffix) && f[3] == "0A" {
                sockets.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok().filter(|_| tables > 0)?;
    Some(
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| sockets.iter().any(|s| l.as_os_str() == s.as_str()))),
    )
}

/// A private `redis-server` child process with its own temporary directory.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

/// The fleet's Redis users (deploy/k8s/base/redis-acl/acl-rules), loaded by every
/// Redis the test kit starts: each service signs in as its own user (see
/// [`redis_credentials`]), so every scenario runs under the rules an
/// operator deploys. The default user stays open: it is the test's own
/// operator access (`raw`, `redis-cli --cluster`, replication).
pub const ACL_RULES: &str = include_str!("../../../deploy/k8s/base/redis-acl/acl-rules");

/// The test password of a service's Redis user.
pub fn redis_password(service: &str) -> String {
    format!("test-{service}-secret")
}

/// `REDIS_USERNAME` and `REDIS_PASSWORD` of a fleet service (none for anything else).
pub fn redis_credentials(service: &str) -> Vec<(String, String)> {
    let known = ACL_RULES.lines().any(|l| !l.starts_with('#') && l.split_whitespace().next() == Some(service));
    if !known || std::env::var("ALLIES_TEST_NO_ACL").is_ok() {
        return Vec::new();
    }
    vec![("REDIS_USERNAME".into(), service.into()), ("REDIS_PASSWORD".into(), redis_password(service))]
}

fn write_acl_file(dir: &Path) -> PathBuf {
    let mut text = String::from("user default on nopass ~* &* +@all\n");
    for line in ACL_RULES.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (name, rules) = line.split_once(char::is_whitespace).expect("NAME RULES");
        text.push_str(&format!("user {name} on >{} {}\n", redis_password(name), rules.trim()));
    }
    let path = dir.join("users.acl");
    std::fs::write(&path, text).expect("write users.acl");
    path
}

fn spawn_redis(port: u16, dir: &Path, extra: &[String]) -> Child {
    let acl = write_acl_file(dir);
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .arg("--aclfile")
        .arg(acl)
        .args(["--appendonly", "yes", "--dir"])
        .arg(dir)
        .args(["--logfile", "redis.log", "--protected-mode", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed? dev/test installs it): {e}"))
}

impl RedisServer {
    /// Starts `redis-server` (from PATH) with AOF on, on a free port, and
    /// waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with extra `--name value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut last_err = String::new();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("cannot create a temporary directory");
            let port = free_port();
            let mut child = spawn_redis(port, dir.path(), &extra);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!("redis-server exited with {status}: {}", read_log(dir.path()));
                    break;
                }
                if ping(port) && listens_on(child.id(), port).unwrap_or(true) {
                    return Self { child, port, dir, extra };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (an outage) the way an operator would: SHUTDOWN,
    /// which flushes the AOF; its data directory stays.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9: the server dies at once (what it had not written to its
    /// AOF or sent to a replica is gone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process stops answering and replicating, its sockets
    /// stay open (a stalled machine, not a dead one). [`resume`](Self::resume) ends it.
    pub fn freeze(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// A replica of this server (`--replicaof`), in sync when it returns.
    pub fn start_replica(&self) -> RedisServer {
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &self.port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !replica.raw(&["INFO", "replication"]).contains("master_link_status:up") {
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(20));
        }
        replica
    }

    /// Whether the process is still running.
    pub fn alive(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    pub fn stop(&mut self) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.write_all(b"SHUTDOWN\r\n");
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut [0u8; 64]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ping(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and data (AOF replayed).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(self.port, self.dir.path(), &self.extra);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(self.port) {
            assert!(Instant::now() < deadline, "redis-server did not restart: {}", read_log(self.dir.path()));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a command through raw RESP and renders the reply as text
    /// (simple replies as their RESP line, e.g. `:3`; bulk strings as their
    /// content; arrays one element per line). For assertions and diagnostics.
    pub fn raw(&self, args: &[&str]) -> String {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to test redis");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        (&s).write_all(req.as_bytes()).expect("write to test redis");
        let mut reader = std::io::BufReader::new(s);
        let mut out = Vec::new();
        read_reply(&mut reader, &mut out);
        out.join("\n")
    }
}

fn read_reply(r: &mut impl std::io::BufRead, out: &mut Vec<String>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("read RESP reply");
    let line = line.trim_end_matches("\r\n").to_owned();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "$" => {
            let n: i64 = rest.parse().expect("bulk length");
            if n < 0 {
                out.push("(nil)".into());
                return;
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).expect("read bulk");
            buf.truncate(n as usize);
            out.push(String::from_utf8_lossy(&buf).into_owned());
        }
        "*" => {
            let n: i64 = rest.parse().expect("array length");
            for _ in 0..n.max(0) {
                read_reply(r, out);
            }
        }
        _ => out.push(line),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))
    else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

/// A private three-master Redis Cluster on loopback ports, made of
/// `redis-server` processes and `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters with a replica each, waiting until the cluster is ok
    /// and every replica is in sync.
    pub fn start() -> Self {
        Self::start_with(1, 5000)
    }

    /// Three masters with `replicas` replicas each; a node unreachable for
    /// `node_timeout_ms` is failed over.
    pub fn start_with(replicas: usize, node_timeout_ms: u32) -> Self {
        let timeout = node_timeout_ms.to_string();
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout,
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli (from redis-tools) is needed to create a cluster");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = |n: &RedisServer| {
            n.raw(&["CLUSTER", "INFO"]).contains("cluster_state:ok") && {
                let replication = n.raw(&["INFO", "replication"]);
                replication.contains("role:master") || replication.contains("master_link_status:up")
            }
        };
        while !nodes.iter().all(ready) {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    /// The nodes that are masters now (a failover changes which).
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| {
                let n = &self.nodes[*i];
                n.alive() && n.raw(&["ROLE"]).lines().next() == Some("master")
            })
            .collect()
    }

    /// `REDIS_URL` of the cluster: its nodes, comma-separated.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port())).collect::<Vec<_>>().join(",")
    }

    /// Runs a single-key command on the node that owns the key (follows MOVED).
    pub fn raw(&self, args: &[&str]) -> String {
        let mut last = String::new();
        for node in self.nodes.iter().filter(|n| n.alive()) {
            last = node.raw(args);
            if !last.starts_with("-MOVED") && !last.starts_with("-ASK") {
                return last;
            }
        }
        last
    }

    /// Keys matching `pattern` on every master (replicas hold copies).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.masters()
            .into_iter()
            .map(|i| &self.nodes[i])
            .flat_map(|n| n.raw(&["KEYS", pattern]).lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|k| !k.is_empty())
            .collect()
    }
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Path of a workspace binary built next to the running test
/// (`target/<profile>/<name>`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which dev/test does)",
        path.display()
    );
    path
}

/// CPU time (user + system) a process has used so far, from `/proc` (zero
/// where it cannot be read).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks a second.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The machine's CPU counters (`/proc/stat`, all CPUs): (steal, total)
/// ticks. Benchmarks print the share stolen by the hypervisor during a run:
/// on a shared VM it explains a slow run.
pub fn cpu_counters() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let total: u64 = v.iter().take(8).sum();
    (v.get(7).copied().unwrap_or(0), total)
}

/// The share of CPU time stolen between two [`cpu_counters`] readings.
pub fn steal_between(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 { 0.0 } else { after.0.saturating_sub(before.0) as f64 / total as f64 }
}

/// A real service binary running as a child process, listening on a free port.
pub struct ServiceProcess {
    pub name: String,
    pub addr: SocketAddr,
    /// Free port given as `<NAME>_HTTP_ADDR` (the projector's operations endpoint).
    pub http_addr: SocketAddr,
    child: Child,
    log: PathBuf,
    listen_var: String,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `name` with `listen_var` set to a free port and the given
    /// environment, and waits until the port accepts connections.
    pub fn start(name: &str, listen_var: &str, env: &[(&str, &str)]) -> Self {
        // A free port can be taken by another test between `free_port` and
        // the service's bind: such a start is tried again on new ports.
        for attempt in 1.. {
            let dir = tempfile::tempdir().expect("tempdir");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.path().join(format!("{name}.log"));
            // Its own Redis user first; the caller's environment may override it.
            let mut env: Vec<(String, String)> = redis_credentials(name)
                .into_iter()
                .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            let http_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            env.push((format!("{}_HTTP_ADDR", name.to_uppercase()), http_addr.to_string()));
            let child = spawn(name, listen_var, addr, &log, dir.path(), &env);
            let mut svc = Self {
                name: name.to_owned(),
                addr,
                http_addr,
                child,
                log,
                listen_var: listen_var.to_owned(),
                env,
                dir,
            };
            match svc.listening() {
                Ok(()) => return svc,
                Err(why) if attempt < 5 && why.contains("Address already in use") => continue,
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Starts the process again on the same address, data directory and
    /// environment (plus `extra`), after it stopped (see [`terminate`](Self::terminate)).
    pub fn restart(&mut self, extra: &[(&str, &str)]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (k, v) in extra {
            self.env.retain(|(key, _)| key != k);
            self.env.push((k.to_string(), v.to_string()));
        }
        self.child = spawn(&self.name, &self.listen_var, self.addr, &self.log, self.dir.path(), &self.env);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        if let Err(why) = self.listening() {
            panic!("{why}");
        }
    }

    fn listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited during start with {status}:\n{}", self.name, self.logs()));
            }
            // Answering is not enough: both ports must be this child's.
            let pid = self.child.id();
            let ours = |port| listens_on(pid, port).unwrap_or(true);
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && ours(self.addr.port())
                && ours(self.http_addr.port())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("{} did not listen on {} within 20 s:\n{}", self.name, self.addr, self.logs()))
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the service wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9: the process dies at once, mid-whatever it was doing.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit;
    /// returns its exit code (None if it was killed by a signal or hung).
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

fn spawn(name: &str, listen_var: &str, addr: SocketAddr, log: &Path, dir: &Path, env: &[(String, String)]) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let bin = binary(name);
    let mut cmd = Command::new(&bin);
    cmd.env(listen_var, addr.to_string()).env("RUST_LOG", "info").env("ALLIES_DATA_DIR", dir);
    // The fleet's shipped configs: from the repo the binary was built in
    // (target/<profile>/<bin> → repo root), else from the one this testkit
    // was built in (binaries copied elsewhere, e.g. to compare two builds).
    let built_in = bin.parent().and_then(Path::parent).and_then(Path::parent).map(Path::to_path_buf);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Some(root) = built_in.into_iter().chain([source]).find(|r| r.join("configs/cqrs.yaml").exists()) {
        cmd.env("CQRS_CONFIG", root.join("configs/cqrs.yaml"));
        let rules = root.join("configs/game-rules.yaml");
        if rules.exists() {
            cmd.env("TIMESQUARE_RULES", rules).env("TIMESQUARE_RULES_DIR", root.join("configs/game-rules.d"));
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_known_to_be_its_listeners_and_no_one_elses() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let redis = RedisServer::start();
        assert_eq!(listens_on(std::process::id(), port), Some(true), "this test's own listener");
        assert_eq!(listens_on(redis.pid(), port), Some(false), "not the Redis child's");
        assert_eq!(listens_on(redis.pid(), redis.port()), Some(true), "the Redis child's own port");
        drop(listener);
        assert_eq!(listens_on(std::process::id(), port), Some(false), "released");
    }
}
