//! TLS for a test Redis: a CA made for the run, a server certificate it
//! signed (for 127.0.0.1 and localhost) and a client certificate, with
//! `openssl` (as the edge's certificate is made); and the `redis-server`
//! arguments that open a TLS port beside the plain one (which stays for the
//! harness's own `raw` and PING).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TlsFiles {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TlsFiles {
    /// A CA, a server certificate and a client certificate, all new.
    pub fn make() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            d,
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=allies test CA", "-keyout", "ca.key", "-out", "ca.crt"],
            ]
            .concat(),
        );
        // Extensions make them X.509 v3 (webpki takes nothing older).
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        std::fs::write(d.join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n").expect("ext");
        for name in ["server", "client"] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let ext = format!("{name}.ext");
            let subject = format!("/CN={name}");
            openssl(d, &[&["req", "-new"][..], &ec, &["-subj", &subject, "-keyout", &key, "-out", &csr]].concat());
            let mut sign = vec!["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"];
            sign.extend(["-days", "2", "-out", &crt, "-extfile", &ext]);
            openssl(d, &sign);
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA's certificate (what a client trusts).
    pub fn ca(&self) -> String {
        self.path("ca.crt").display().to_string()
    }

    /// The client certificate and its key.
    pub fn client(&self) -> (String, String) {
        (self.path("client.crt").display().to_string(), self.path("client.key").display().to_string())
    }

    /// `redis-server` arguments for a TLS port `port` with these
    /// certificates; `auth_clients`: `no`, `optional` or `yes` (a client
    /// certificate signed by the CA required).
    pub fn redis_args(&self, port: u16, auth_clients: &str) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            p("server.crt"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.crt"),
            "--tls-auth-clients".into(),
            auth_clients.into(),
        ]
    }
}
