//! The running binary against what an operator's change or an attacker throws at it: a token
//! file rotated as Kubernetes rotates a mounted Secret, slow and huge requests, idle
//! connections, pipelining, HTTP/2 floods and a token guessed in a loop.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Duration;

use http::StatusCode;
use testkit::client::ApiClient;
use testkit::metrics::Scrape;
use testkit::process::ProxyProcess;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_jupyterhub-istio-proxy");
const RELOADS: &str = "jupyterhub_istio_proxy_auth_token_reloads_total";
const REFUSALS: &str = "jupyterhub_istio_proxy_auth_refusals_total";

async fn scrape(addr: SocketAddr) -> Scrape {
    let response = ApiClient::new(addr, None).get("/metrics").await;
    Scrape::parse(std::str::from_utf8(&response.body).unwrap())
}

/// A folder laid out as the kubelet lays out a mounted Secret: `token` → `..data/token`,
/// `..data` → a folder per version, swapped atomically by renaming a new symlink over it.
struct SecretVolume {
    dir: tempfile::TempDir,
    version: usize,
}

impl SecretVolume {
    /// A volume whose `token` holds `content`.
    fn new(content: &str) -> SecretVolume {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("..data/token", dir.path().join("token")).unwrap();
        let mut volume = SecretVolume { dir, version: 0 };
        volume.update(Some(content.as_bytes()));
        volume
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// A new version, as the kubelet writes it: the key with `content`, or (`None`) without
    /// the key; the old version's folder removed after the swap.
    fn update(&mut self, content: Option<&[u8]>) {
        let old = format!("..v{}", self.version);
        self.version += 1;
        let new = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.path().join(&new)).unwrap();
        if let Some(content) = content {
            std::fs::write(self.dir.path().join(&new).join("token"), content).unwrap();
        }
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.path().join(old));
    }

    /// A new version whose `token` is a folder, which cannot be read as a file.
    fn update_unreadable(&mut self) {
        self.update(None);
        std::fs::create_dir(self.dir.path().join(format!("..v{}", self.version)).join("token")).unwrap();
    }
}

async fn start_with_file(path: &Path) -> ProxyProcess {
    let mut command = Command::new(BIN);
    command.env_clear().env("CONFIGPROXY_AUTH_TOKEN_FILE", path).args([
        "--store",
        "memory",
        "--listen",
        "127.0.0.1:0",
    ]);
    ProxyProcess::spawn(command).await
}

async fn status_with(addr: SocketAddr, token: &str) -> StatusCode {
    ApiClient::new(addr, Some(token)).get("/api/routes").await.status
}

#[tokio::test]
async fn a_rotated_secret_file_replaces_the_token_without_a_restart() {
    let mut volume = SecretVolume::new("first-token-81d3\n");
    let mut proxy = start_with_file(&volume.path()).await;
    let addr = proxy.addr();
    assert_eq!(status_with(addr, "first-token-81d3").await, StatusCode::OK);
    assert_eq!(status_with(addr, "second-token-5be0").await, StatusCode::FORBIDDEN);

    volume.update(Some(b"second-token-5be0"));
    testkit::eventually("the rotated token is accepted", || async {
        status_with(addr, "second-token-5be0").await == StatusCode::OK
    })
    .await;
    assert_eq!(status_with(addr, "first-token-81d3").await, StatusCode::FORBIDDEN);
    assert_eq!(scrape(addr).await.value(RELOADS, &[("outcome", "rotated")]), Some(1.0));

    assert!(proxy.terminate(Duration::from_secs(10)).await.is_some_and(|s| s.success()));
    let log = proxy.log();
    assert!(log.contains("the new token is in force"), "{log}");
    assert!(
        !log.contains("first-token-81d3") && !log.contains("second-token-5be0"),
        "a token in the log:\n{log}"
    );
}

#[tokio::test]
async fn a_rotation_that_leaves_no_good_token_keeps_the_last_one_and_says_so() {
    let mut volume = SecretVolume::new("good-token-27aa");
    let mut proxy = start_with_file(&volume.path()).await;
    let addr = proxy.addr();
    for outcome in ["empty", "missing", "unreadable", "invalid"] {
        match outcome {
            "empty" => volume.update(Some(b" \n")),
            "missing" => volume.update(None),
            "unreadable" => volume.update_unreadable(),
            _ => volume.update(Some(b"two tokens")),
        }
        // The first failure read twice, to show it is logged once; the others once, to save time.
        let reads = if outcome == "empty" { 2.0 } else { 1.0 };
        testkit::eventually(&format!("a failed read counted as {outcome}"), || async {
            scrape(addr).await.value(RELOADS, &[("outcome", outcome)]).is_some_and(|n| n >= reads)
        })
        .await;
        assert_eq!(status_with(addr, "good-token-27aa").await, StatusCode::OK, "after {outcome}");
    }
    volume.update(Some(b"next-token-9f01"));
    testkit::eventually("the next good token is accepted", || async {
        status_with(addr, "next-token-9f01").await == StatusCode::OK
    })
    .await;

    assert!(proxy.terminate(Duration::from_secs(10)).await.is_some_and(|s| s.success()));
    let log = proxy.log();
    let warnings: Vec<&str> =
        log.lines().filter(|line| line.contains("the last good auth token stays")).collect();
    // Once per kind of failure, though the first was read at least twice.
    assert_eq!(warnings.len(), 4, "{log}");
    for (warning, says) in
        warnings.iter().zip(["is empty", "does not exist", "cannot be read", "white space"])
    {
        assert!(warning.contains(says) && warning.contains("WARN"), "{warning}");
    }
    assert!(log.contains("readable again"), "{log}");
    assert!(!log.contains("good-token-27aa") && !log.contains("next-token-9f01"), "{log}");
}

/// Runs the binary with these arguments and this environment only, expecting it to fail with
/// one line.
fn failing_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = StdCommand::new(BIN).env_clear().envs(env.iter().copied()).args(args).output().unwrap();
    assert!(!output.status.success(), "{args:?} started");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    stderr
}

#[test]
fn a_token_file_that_gives_no_token_stops_the_start_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let flag = "--auth-token-file (env CONFIGPROXY_AUTH_TOKEN_FILE)";
    let args = ["--store", "memory", "--listen", "127.0.0.1:0"];
    for (path, says) in [
        (dir.path().join("absent"), "does not exist"),
        (file("empty", b"\n"), "is empty"),
        (dir.path().to_owned(), "cannot be read"),
        (file("spaced", b"a b"), "white space"),
    ] {
        let message = failing_start(&args, &[("CONFIGPROXY_AUTH_TOKEN_FILE", path.to_str().unwrap())]);
        assert!(
            message.contains(&format!("{flag} {} ", path.display())) && message.contains(says),
            "{message}"
        );
    }
    let good = file("good", b"t");
    let both = failing_start(
        &args,
        &[("CONFIGPROXY_AUTH_TOKEN_FILE", good.to_str().unwrap()), ("CONFIGPROXY_AUTH_TOKEN", "t")],
    );
    assert!(both.contains("both give the token; give one"), "{both}");
}

#[tokio::test]
async fn a_token_guessed_in_a_loop_is_refused_counted_and_never_logged() {
    let mut proxy = ProxyProcess::start(BIN, &["--store", "memory"], common::TOKEN).await;
    let addr = proxy.addr();
    let guesses: Vec<String> = (0..200).map(|i| format!("guess-{i:04}-{}", &common::TOKEN[..8])).collect();
    for guess in &guesses {
        assert_eq!(status_with(addr, guess).await, StatusCode::FORBIDDEN);
    }
    assert_eq!(ApiClient::new(addr, None).get("/api/routes").await.status, StatusCode::FORBIDDEN);
    let scrape = scrape(addr).await;
    assert_eq!(scrape.value(REFUSALS, &[("reason", "wrong_token")]), Some(200.0), "{}", scrape.text);
    assert_eq!(scrape.value(REFUSALS, &[("reason", "no_token")]), Some(1.0));
    // The right token still works: guessing locks nobody out.
    assert_eq!(status_with(addr, common::TOKEN).await, StatusCode::OK);
    assert!(proxy.terminate(Duration::from_secs(10)).await.is_some_and(|s| s.success()));
    let log = proxy.log();
    assert!(!log.contains("guess-") && !log.contains(common::TOKEN), "a token in the log:\n{log}");
}
