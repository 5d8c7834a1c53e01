//! Real servers on loopback for the tests: aiosmtpd (STARTTLS + AUTH, Maildir) and a small
//! Python HTTP server that answers `/status/N` and stores POSTed bodies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, wait_for};

pub fn support(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script)
}

/// Waits for the child's "ready <port>" line.
fn ready(child: &mut Child) -> u16 {
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("server did not start: {line:?}"))
        .parse()
        .unwrap()
}

/// Test certificates: a small CA and a server certificate for `localhost` signed by it
/// (rustls refuses a self-signed end-entity certificate).
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn mint_certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hourglass test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&certs.ca, ca_cert.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    certs
}

pub struct Smtp {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
    pub ca: PathBuf,
}

pub const SMTP_USER: &str = "hourglass";

impl Smtp {
    /// Starts aiosmtpd with STARTTLS and AUTH on a fresh port; `password` is the one it accepts.
    pub fn start(dir: &Path, password: &str) -> Self {
        let certs = mint_certs(dir);
        let maildir = dir.join("maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(support("smtp_server.py"))
            .args(["--port", &port.to_string()])
            .arg("--maildir")
            .arg(&maildir)
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .args(["--user", SMTP_USER, "--password", password])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (installed by scripts/test.sh)");
        let port = ready(&mut child);
        Self {
            child,
            port,
            maildir,
            ca: certs.ca,
        }
    }

    /// The main-file block for this server, with the password taken from `password_env`.
    pub fn config(&self, name: &str, password_env: &str, extra: &str) -> String {
        format!(
            "[smtp.{name}]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nusername = \"{SMTP_USER}\"\n\
             password = {{ env = \"{password_env}\" }}\nca_file = \"{}\"\n{extra}\n",
            self.port,
            self.ca.display()
        )
    }

    /// Delivered messages, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.join("new");
        let mut files: Vec<_> = std::fs::read_dir(&new)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_for(timeout, &format!("{n} messages"), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Http {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Http {
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("posts");
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("python3")
            .arg(support("http_server.py"))
            .args(["--port", "0", "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let port = ready(&mut child);
        Self { child, port, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POSTed bodies, in arrival order.
    pub fn posts(&self) -> Vec<serde_json::Value> {
        let mut n = 1;
        let mut out = Vec::new();
        while let Ok(b) = std::fs::read(self.dir.join(format!("{n}.json"))) {
            out.push(serde_json::from_slice(&b).unwrap());
            n += 1;
        }
        out
    }

    pub fn headers(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{n}.headers"))).unwrap_or_default()
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSH's sshd on a fresh port, SFTP only, key login for the current user.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub user: String,
    /// The client's private key.
    pub key: PathBuf,
    /// A known_hosts file pinning this server's host key.
    pub known_hosts: PathBuf,
    /// The server's host public key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client, installed by scripts/test.sh)");
    assert!(st.success());
}

impl Sshd {
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("sshd");
        std::fs::create_dir_all(dir.join("authorized")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        std::fs::copy(
            dir.join("client_key.pub"),
            dir.join("authorized").join(&user),
        )
        .unwrap();
        let port = free_port();
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {auth}/%u\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPidFile none\nSubsystem sftp internal-sftp\nForceCommand internal-sftp\n",
                hk = dir.join("host_key").display(),
                auth = dir.join("authorized").display(),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&conf)
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd (openssh-server, installed by scripts/test.sh)");
        wait_for(Duration::from_secs(10), "sshd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let host_key: String = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key}\n")).unwrap();
        Self {
            child,
            port,
            user,
            key: dir.join("client_key"),
            known_hosts,
            host_key,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
