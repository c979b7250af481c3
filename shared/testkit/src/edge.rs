//! The edge (nginx from Debian, `configs/edge/nginx.conf.template`) in front
//! of a test fleet: TLS with a certificate made for the run, HTTP/2, each API
//! routed by its gRPC path prefix — the same template `dev/up` renders.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Edge {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn nginx() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

/// Whether nginx is installed (dev/test installs it).
pub fn available() -> bool {
    Command::new(nginx()).arg("-v").output().is_ok_and(|o| o.status.success())
}

impl Edge {
    /// Starts the edge on a free port in front of `upstreams` (service name
    /// → its gRPC `host:port`, or several replicas' comma-separated), serving
    /// the page from `web`.
    pub fn start(upstreams: &[(&str, String)], web: &Path) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let template = std::fs::read_to_string(root.join("configs/edge/nginx.conf.template")).expect("edge template");
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join("tmp").join(sub)).expect("temp dirs");
        }
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .output()
            .expect("openssl makes the edge's certificate");
        assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
        let port = crate::free_port();
        let mut conf = template
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@HOST@", "127.0.0.1")
            .replace("@PORT@", &port.to_string())
            .replace("@WEB@", &web.display().to_string());
        for (name, addrs) in upstreams {
            // Several replicas of a service, comma-separated: one `server` line each.
            let servers: Vec<&str> = addrs.split(',').map(|a| a.trim().trim_start_matches("http://")).collect();
            conf = conf.replace(&format!("@{}@", name.to_uppercase()), &servers.join("; server "));
        }
        assert!(!conf.contains('@'), "an upstream is missing: {conf}");
        // Running as root, workers would switch to an unprivileged user that
        // cannot read this private directory: keep them as this user.
        if is_root() {
            conf = conf.replacen("worker_processes 1;", "worker_processes 1;\nuser root;", 1);
        }
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        let log = std::fs::File::create(dir.path().join("nginx.out")).expect("log");
        let child = Command::new(nginx())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nginx (Debian package nginx) runs the edge");
        let edge = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the edge did not start: {}", edge.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        edge
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The edge's certificate (a client trusts it for the run).
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn logs(&self) -> String {
        ["nginx.out", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

impl Drop for Edge {
    fn drop(&mut self) {
        // TERM: the master stops its workers, then itself.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
