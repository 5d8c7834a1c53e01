//! Upload jobs against a real S3-compatible server (SeaweedFS, started by scripts/test.sh and
//! found through HOURGLASS_TEST_S3_ENDPOINT) and a local folder.

use std::time::Duration;

use crate::harness::{Daemon, at_in, finished};
use chrono::Utc;
use hourglass::store::RunStatus;

const SEC: Duration = Duration::from_secs(1);
const BUCKET: &str = "hourglass-test";

fn endpoint() -> String {
    std::env::var("HOURGLASS_TEST_S3_ENDPOINT").expect(
        "HOURGLASS_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts SeaweedFS",
    )
}

fn s3(root: &str) -> opendal::Operator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    opendal_http_transport_reqwest::install_default();
    let b = opendal::services::S3::default()
        .bucket(BUCKET)
        .endpoint(&endpoint())
        .region("us-east-1")
        .root(root)
        .access_key_id("AK")
        .secret_access_key("SK")
        .disable_config_load();
    opendal::Operator::new(b).unwrap()
}

fn read_s3(root: &str, key: &str) -> Vec<u8> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { s3(root).read(key).await.unwrap().to_vec() })
}

fn start(jobs: &str) -> Daemon {
    let mut d = Daemon::prepare("", jobs);
    d.extra_env.push(("S3_KEY".into(), "AK".into()));
    d.extra_env.push(("S3_SECRET".into(), "SK".into()));
    d.spawn_ready();
    d
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn s3_upload_reads_back_and_skips_unchanged_files() {
    let src = tempfile::tempdir().unwrap();
    let a = pattern(3 << 20, 1);
    let b = pattern(12 << 20, 2); // more than one 8 MiB part: multipart
    std::fs::write(src.path().join("a.tar.gz"), &a).unwrap();
    std::fs::write(src.path().join("b.tar.gz"), &b).unwrap();
    std::fs::write(src.path().join("ignored.txt"), b"no").unwrap();
    let prefix = format!("skip-{}", std::process::id());
    let jobs = format!(
        "[jobs.up]\nat = \"{}\"\n[jobs.up.upload]\nsource = \"{}/*.tar.gz\"\n\
         destination = \"s3://{BUCKET}/{prefix}/{{{{ job }}}}/\"\nendpoint = \"{}\"\n\
         access_key_id = {{ env = \"S3_KEY\" }}\nsecret_access_key = {{ env = \"S3_SECRET\" }}\nskip_unchanged = true\n",
        at_in(2),
        src.path().display(),
        endpoint()
    );
    let d = start(&jobs);
    let runs = d.wait_runs("up", 60 * SEC, "the upload", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(
        runs[0].status,
        RunStatus::Succeeded,
        "{runs:#?}\n{}",
        d.log()
    );
    let det = runs[0].details.as_ref().unwrap();
    assert_eq!(det["files_uploaded"], 2);
    assert_eq!(det["bytes_uploaded"], (a.len() + b.len()) as u64);
    let root = format!("/{prefix}/up/");
    assert_eq!(read_s3(&root, "a.tar.gz"), a);
    assert_eq!(read_s3(&root, "b.tar.gz"), b);

    // A new file: the next run uploads only it.
    let c = pattern(1000, 3);
    std::fs::write(src.path().join("c.tar.gz"), &c).unwrap();
    assert!(d.cli(&["trigger", "up"]).status.success());
    let runs = d.wait_runs("up", 60 * SEC, "the second upload", |r| {
        r.len() == 2 && r.iter().all(finished)
    });
    assert_eq!(runs[1].status, RunStatus::Succeeded);
    let det = runs[1].details.as_ref().unwrap();
    assert_eq!(det["files_uploaded"], 1, "{det}");
    assert_eq!(det["files_skipped"], 2, "{det}");
    assert_eq!(det["uploaded"][0], "c.tar.gz");
    assert_eq!(read_s3(&root, "c.tar.gz"), c);
    assert!(!d.log().contains("SK\""));
}

#[test]
fn wrong_credentials_and_an_unreachable_server_fail_clearly() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f.bin"), b"data").unwrap();
    let job = |name: &str, endpoint: &str, secret_env: &str| {
        format!(
            "[jobs.{name}]\nat = \"{}\"\n[jobs.{name}.upload]\nsource = \"{}\"\n\
             destination = \"s3://{BUCKET}/x/\"\nendpoint = \"{endpoint}\"\n\
             access_key_id = {{ env = \"S3_KEY\" }}\nsecret_access_key = {{ env = \"{secret_env}\" }}\n",
            at_in(2),
            src.path().join("f.bin").display(),
        )
    };
    let unreachable = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let jobs = job("badkey", &endpoint(), "WRONG_SECRET") + &job("down", &unreachable, "S3_SECRET");
    let mut d = Daemon::prepare("", &jobs);
    d.extra_env.push(("S3_KEY".into(), "AK".into()));
    d.extra_env.push(("S3_SECRET".into(), "SK".into()));
    d.extra_env
        .push(("WRONG_SECRET".into(), "not-the-secret-xyz".into()));
    d.spawn_ready();
    for name in ["badkey", "down"] {
        let runs = d.wait_runs(name, 60 * SEC, "the failure", |r| {
            r.len() == 1 && finished(&r[0])
        });
        assert_eq!(runs[0].status, RunStatus::Failed, "{runs:#?}");
        let err = runs[0].error.as_deref().unwrap();
        assert!(err.contains("f.bin") && err.contains("0 uploaded"), "{err}");
        assert!(!err.contains("not-the-secret-xyz"));
    }
    assert!(!d.log().contains("not-the-secret-xyz"));
}

#[test]
fn folder_upload_moves_sources_after_success() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("one.txt"), b"one").unwrap();
    std::fs::write(src.path().join("sub/two.txt"), b"two").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let done = tempfile::tempdir().unwrap();
    let jobs = format!(
        "[jobs.up]\nat = \"{}\"\n[jobs.up.upload]\nsource = \"{}\"\ndestination = \"{}/{{{{ date }}}}\"\nafter = \"move:{}\"\n",
        at_in(2),
        src.path().display(),
        dest.path().display(),
        done.path().display()
    );
    let d = start(&jobs);
    let runs = d.wait_runs("up", 30 * SEC, "the upload", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:#?}");
    let day = Utc::now().format("%Y-%m-%d").to_string();
    let out = dest.path().join(&day);
    assert_eq!(std::fs::read(out.join("one.txt")).unwrap(), b"one");
    assert_eq!(std::fs::read(out.join("sub/two.txt")).unwrap(), b"two");
    assert!(!src.path().join("one.txt").exists());
    assert_eq!(
        std::fs::read(done.path().join("sub/two.txt")).unwrap(),
        b"two"
    );
}

fn vm_kb(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_512_mib_upload_keeps_memory_bounded() {
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        let block = pattern(1 << 20, 7);
        for _ in 0..512 {
            f.write_all(&block).unwrap();
        }
    }
    let prefix = format!("big-{}", std::process::id());
    let jobs = format!(
        "[jobs.big]\nschedule = \"@yearly\"\n[jobs.big.upload]\nsource = \"{}\"\n\
         destination = \"s3://{BUCKET}/{prefix}/\"\nendpoint = \"{}\"\n\
         access_key_id = {{ env = \"S3_KEY\" }}\nsecret_access_key = {{ env = \"S3_SECRET\" }}\n",
        path.display(),
        endpoint()
    );
    let d = start(&jobs);
    let before = vm_kb(d.pid(), "VmHWM:");
    assert!(d.cli(&["trigger", "big"]).status.success());
    let runs = d.wait_runs("big", 300 * SEC, "the big upload", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{runs:#?}");
    let peak = vm_kb(d.pid(), "VmHWM:");
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    println!(
        "512 MiB upload: peak RSS {before} KiB -> {peak} KiB (+{growth_mib} MiB), took {} ms",
        runs[0].duration_ms.unwrap()
    );
    assert!(growth_mib < 128, "peak RSS grew by {growth_mib} MiB");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let meta = rt.block_on(async { s3(&format!("/{prefix}/")).stat("big.bin").await.unwrap() });
    assert_eq!(meta.content_length(), 512 << 20);
}

#[test]
fn sftp_upload_with_a_pinned_host_key() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = crate::servers::Sshd::start(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    let big = pattern(3 << 20, 9);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("nested/small.txt"), b"small").unwrap();
    let out = tmp.path().join("remote");
    // A known_hosts file with some other key: the connection must be refused.
    let other = tmp.path().join("other_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let wrong_hosts = tmp.path().join("wrong_known_hosts");
    let other_pub: Vec<_> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(
        &wrong_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port, other_pub.join(" ")),
    )
    .unwrap();
    let job = |name: &str, known_hosts: &std::path::Path| {
        format!(
            "[jobs.{name}]\nat = \"{}\"\n[jobs.{name}.upload]\nsource = \"{}\"\n\
             destination = \"sftp://{}@127.0.0.1:{}{}/{name}/\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\n",
            at_in(2),
            src.display(),
            sshd.user,
            sshd.port,
            out.display(),
            sshd.key.display(),
            known_hosts.display()
        )
    };
    let jobs = job("pinned", &sshd.known_hosts) + &job("impostor", &wrong_hosts);
    let d = start(&jobs);
    let runs = d.wait_runs("pinned", 60 * SEC, "the upload", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(
        runs[0].status,
        RunStatus::Succeeded,
        "{runs:#?}\n{}",
        d.log()
    );
    assert_eq!(std::fs::read(out.join("pinned/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(out.join("pinned/nested/small.txt")).unwrap(),
        b"small"
    );
    assert_eq!(runs[0].details.as_ref().unwrap()["files_uploaded"], 2);
    let runs = d.wait_runs("impostor", 60 * SEC, "the refusal", |r| {
        r.len() == 1 && finished(&r[0])
    });
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(!out.join("impostor").exists());
    let err = runs[0].error.as_deref().unwrap();
    assert!(err.contains("sftp://"), "{err}");
}
