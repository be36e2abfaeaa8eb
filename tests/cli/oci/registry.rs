//! A throwaway registry: Debian's `docker-registry` (distribution 2.8) serving a temp dir on a
//! loopback port, deletes off, no TLS unless started with a certificate of a test CA (made by openssl), and no
//! auth unless started with users (htpasswd, so HTTP Basic). Dropping the guard kills it.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::http::try_http_request;

/// Debian's binary (the package is `docker-registry`; upstream calls it `registry`).
pub(crate) const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long the registry may take to listen and answer.
const START_BOUND: Duration = Duration::from_secs(15);

/// How many ports to try: another process may take the one we picked between our releasing it
/// and the registry binding it.
const PORT_ATTEMPTS: usize = 5;

pub(crate) struct Registry {
    /// `127.0.0.1:PORT`.
    addr: String,
    child: Child,
    dir: TempDir,
}

/// A port that was free a moment ago (bind :0, read the port, release it).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The one user of a registry started with `Registry::with_user`, and its password.
pub(crate) const USER: &str = "cellar";
pub(crate) const PASSWORD: &str = "cellar-secret";
/// `PASSWORD` hashed with bcrypt (cost 5) for the registry's htpasswd file.
const PASSWORD_BCRYPT: &str = "$2b$05$2vWXcxiV8rpqgrlUMdL/6OMgag2B15AK/yRj7zlPEIDjiNWX25oW.";

/// What a registry is started with besides its storage.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Open,
    /// `USER` with `PASSWORD`, over HTTP Basic.
    User,
    /// HTTPS with a certificate the test CA (`ca.crt`) signed.
    Tls,
    /// HTTPS as `Tls`, letting in only clients with a certificate the test CA signed.
    MutualTls,
}

/// `openssl req` for a P-256 key (`NAME.key`) and a certificate (`NAME.crt`) in `dir`, with
/// `args` saying what the certificate is and who signs it.
fn openssl_req(dir: &Path, name: &str, args: &[&str]) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(args)
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl req {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (`ca.crt`, `ca.key`) and what it signed: the server's certificate for
/// 127.0.0.1 (`server.crt`, `server.key`) and a client's (`client.crt`, `client.key`). Leaf
/// certificates say they are no CA: rustls refuses a CA's certificate as a server's.
fn test_pki(dir: &Path) {
    openssl_req(dir, "ca", &["-subj", "/CN=cellar test CA"]);
    let leaf = |name: &str, subject: &str, usage: &str, san: &[&str]| {
        let mut args = vec!["-CA", "ca.crt", "-CAkey", "ca.key", "-subj", subject];
        args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
        args.extend(["-addext", usage]);
        args.extend(san);
        openssl_req(dir, name, &args);
    };
    leaf(
        "server",
        "/CN=127.0.0.1",
        "extendedKeyUsage=serverAuth",
        &["-addext", "subjectAltName=IP:127.0.0.1"],
    );
    leaf(
        "client",
        "/CN=cellar test client",
        "extendedKeyUsage=clientAuth",
        &[],
    );
}

fn config(
    storage: &Path,
    addr: &str,
    htpasswd: Option<&Path>,
    pki: Option<(&Path, Access)>,
) -> String {
    let tls = match pki {
        Some((dir, access)) => {
            let mut tls = format!(
                "  tls:\n    certificate: \"{}\"\n    key: \"{}\"\n",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            );
            if access == Access::MutualTls {
                let ca = dir.join("ca.crt");
                tls += &format!("    clientcas:\n      - \"{}\"\n", ca.display());
            }
            tls
        }
        None => String::new(),
    };
    let auth = match htpasswd {
        Some(path) => format!(
            "auth:\n  htpasswd:\n    realm: cellar-tests\n    path: \"{}\"\n",
            path.display()
        ),
        None => String::new(),
    };
    // Upload purging is off so no maintenance goroutine runs during a test; a fixed
    // http.secret silences the "No HTTP secret provided" warning (it signs upload state).
    auth + &format!(
        r#"version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: "{}"
  delete:
    enabled: false
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: cellar-tests
{tls}"#,
        storage.display()
    )
}

/// Wait until it is ours that listens on `addr` (its log says so: a port someone else took
/// would answer /v2/ too) and `GET /v2/` answers `ready` (200, or 401 behind auth). Err(true):
/// the port was taken, try another; Err(false): any other failure.
fn wait_up(child: &mut Child, addr: &str, log: &Path, ready: u16) -> Result<(), bool> {
    let listening = format!("listening on {addr}");
    let start = Instant::now();
    while start.elapsed() < START_BOUND {
        let text = fs::read_to_string(log).unwrap_or_default();
        if !matches!(child.try_wait(), Ok(None)) {
            return Err(text.contains("address already in use"));
        }
        if text.contains(&listening) {
            if let Ok(r) = try_http_request(addr, "GET", "/v2/", &[], b"") {
                if r.status == ready {
                    return Ok(());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(false)
}

impl Registry {
    /// Start a registry and return once it listens and `GET /v2/` answers 200.
    pub(crate) fn start() -> Registry {
        Self::launch(Access::Open)
    }

    /// A registry that lets only `USER` with `PASSWORD` in (HTTP Basic).
    pub(crate) fn with_user() -> Registry {
        Self::launch(Access::User)
    }

    /// A registry that speaks HTTPS only, with a certificate of the test CA (`ca()`).
    pub(crate) fn with_tls() -> Registry {
        Self::launch(Access::Tls)
    }

    /// A registry that speaks HTTPS only and lets in only clients presenting a certificate of
    /// the test CA (`client_cert()`).
    pub(crate) fn with_mutual_tls() -> Registry {
        Self::launch(Access::MutualTls)
    }

    fn launch(access: Access) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is not installed; run scripts/test, which installs what tests need"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("mkdir storage");
        let tls = matches!(access, Access::Tls | Access::MutualTls);
        if tls {
            test_pki(dir.path());
        }
        let htpasswd = (access == Access::User).then(|| {
            let path = dir.path().join("htpasswd");
            fs::write(&path, format!("{USER}:{PASSWORD_BCRYPT}\n")).expect("write htpasswd");
            path
        });
        let mut logs = Vec::new();
        for attempt in 0..PORT_ATTEMPTS {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let cfg = dir.path().join("config.yml");
            fs::write(
                &cfg,
                config(
                    &storage,
                    &addr,
                    htpasswd.as_deref(),
                    tls.then_some((dir.path(), access)),
                ),
            )
            .expect("write registry config");
            let log = dir.path().join(format!("registry-{attempt}.log"));
            let out = File::create(&log).expect("registry log");
            let err = out.try_clone().expect("dup log");
            let mut cmd = Command::new(REGISTRY_BIN);
            cmd.arg("serve").arg(&cfg);
            // REGISTRY_* variables override the config file: keep the caller's out.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {REGISTRY_BIN}: {e}"));
            // A TLS port answers a plain-HTTP request with 400.
            let ready = match access {
                Access::Open => 200,
                Access::User => 401,
                Access::Tls | Access::MutualTls => 400,
            };
            let up = wait_up(&mut child, &addr, &log, ready);
            if up.is_ok() {
                return Registry { addr, child, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            let text = fs::read_to_string(&log).unwrap_or_default();
            logs.push(format!("attempt {attempt} ({addr}), {cfg:?}:\n{text}"));
            if up == Err(false) {
                panic!(
                    "docker-registry did not come up within {START_BOUND:?}; log:\n{}",
                    logs.join("\n")
                );
            }
        }
        panic!(
            "docker-registry found no free port in {PORT_ATTEMPTS} attempts; logs:\n{}",
            logs.join("\n")
        );
    }

    /// `127.0.0.1:PORT`, for `http_get` and for `cellar push SNAP ADDR/REPO:TAG`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// `ADDR/REPO:TAG` (or `ADDR/REPO@DIGEST`): a reference as `cellar push` takes it.
    pub(crate) fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// `docker://ADDR/REPO:TAG`: the same reference as skopeo takes it.
    pub(crate) fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    /// The PEM certificate of the CA that signed the server's certificate (and the client's).
    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The client certificate and key the test CA signed, as PEM files.
    pub(crate) fn client_cert(&self) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        (dir.join("client.crt"), dir.join("client.key"))
    }

    /// The registry's storage root (`docker/registry/v2/...` below it).
    pub(crate) fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry logged so far (all attempts), for failure messages.
    pub(crate) fn log_text(&self) -> String {
        let mut logs: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .expect("registry dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        logs.iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The process id, e.g. to check it is gone after drop.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // SIGKILL: nothing of its state matters after the test, and it has no children.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
