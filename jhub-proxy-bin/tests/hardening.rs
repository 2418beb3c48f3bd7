//! The running binary against what an operator's change or an attacker throws at it: a token
//! file rotated as Kubernetes rotates a mounted Secret, slow and huge requests, idle
//! connections, pipelining, HTTP/2 floods and a token guessed in a loop.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use http::StatusCode;
use testkit::client::ApiClient;
use testkit::metrics::Scrape;
use testkit::process::ProxyProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

/// The binary on the memory store, giving clients 1 s for headers and bodies.
async fn impatient() -> ProxyProcess {
    ProxyProcess::start(BIN, &["--store", "memory", "--client-timeout", "1"], common::TOKEN).await
}

/// Writes `request` on a fresh connection, then waits (for at most 10 s) for the server to answer
/// and close, returning the answer and how long it took to close.
async fn send_and_wait(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s: {:?}", String::from_utf8_lossy(&answer));
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test]
async fn slow_headers_are_cut_off_after_the_client_timeout() {
    let proxy = impatient().await;
    let (answer, took) = send_and_wait(proxy.addr(), b"GET /api/routes HTTP/1.1\r\nhost: x\r\n").await;
    // hyper closes the connection without an answer: there is no request to answer yet.
    assert_eq!(answer, "", "{answer}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn a_slow_body_is_408_and_writes_nothing() {
    let proxy = impatient().await;
    let head = format!(
        "POST /api/routes/user/slow HTTP/1.1\r\nhost: x\r\nauthorization: token {}\r\ncontent-length: 40\r\n\r\n{{\"target\":",
        common::TOKEN
    );
    let (answer, took) = send_and_wait(proxy.addr(), head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"error":"the request body did not arrive in time"}"#), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let api = ApiClient::new(proxy.addr(), Some(common::TOKEN));
    assert_eq!(api.get("/api/routes").await.json(), serde_json::json!({}));
}

#[tokio::test]
async fn many_idle_connections_neither_block_requests_nor_stay_open() {
    let proxy = impatient().await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(proxy.addr()).await.unwrap());
    }
    let api = ApiClient::new(proxy.addr(), Some(common::TOKEN));
    let started = Instant::now();
    assert_eq!(api.get("/api/routes").await.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // Each is closed by the server once the client timeout has passed.
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0))), "an idle connection stayed open: {read:?}");
    }
}

#[tokio::test]
async fn huge_or_too_many_headers_are_431_and_the_connection_closed() {
    let proxy = impatient().await;
    let big = format!("GET /api/routes HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let mut many = "GET /api/routes HTTP/1.1\r\nhost: x\r\n".to_owned();
    for i in 0..120 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for request in [big, many] {
        let (answer, _) = send_and_wait(proxy.addr(), request.as_bytes()).await;
        // hyper's answer, before the request reaches the service: no body.
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large"), "{answer}");
    }
    // Just under the limit is served.
    let fits = format!(
        "GET /api/routes HTTP/1.1\r\nhost: x\r\nauthorization: token {}\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        common::TOKEN,
        "a".repeat(12 * 1024)
    );
    let (answer, _) = send_and_wait(proxy.addr(), fits.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let proxy = impatient().await;
    let auth = format!("authorization: token {}", common::TOKEN);
    let body = r#"{"target":"http://10.0.0.9:8888"}"#;
    let requests = format!(
        "POST /api/routes/user/p HTTP/1.1\r\nhost: x\r\n{auth}\r\ncontent-length: {}\r\n\r\n{body}\
         GET /api/routes/user/p HTTP/1.1\r\nhost: x\r\n{auth}\r\n\r\n\
         GET /api/routes/user/nobody HTTP/1.1\r\nhost: x\r\n{auth}\r\n\r\n\
         DELETE /api/routes/user/p HTTP/1.1\r\nhost: x\r\n{auth}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let (answer, _) = send_and_wait(proxy.addr(), requests.as_bytes()).await;
    let statuses: Vec<&str> =
        answer.match_indices("HTTP/1.1 ").map(|(at, _)| &answer[at + 9..at + 12]).collect();
    assert_eq!(statuses, ["201", "200", "404", "204"], "{answer}");
    assert!(answer.contains(body), "{answer}");
}

/// HTTP/2 spoken frame by frame (RFC 9113), for what a well-behaved client library never sends.
mod h2_frames {
    use super::*;

    pub(super) const HEADERS: u8 = 0x1;
    pub(super) const RST_STREAM: u8 = 0x3;
    pub(super) const SETTINGS: u8 = 0x4;
    pub(super) const GOAWAY: u8 = 0x7;
    pub(super) const END_STREAM: u8 = 0x1;
    pub(super) const END_HEADERS: u8 = 0x4;
    pub(super) const ENHANCE_YOUR_CALM: u32 = 0xb;
    pub(super) const REFUSED_STREAM: u32 = 0x7;
    const CANCEL: u32 = 0x8;

    /// One frame: its type, flags, stream and payload.
    #[derive(Debug)]
    pub(super) struct Frame {
        pub(super) kind: u8,
        pub(super) stream: u32,
        pub(super) payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY.
        pub(super) fn error_code(&self) -> u32 {
            let at = if self.kind == GOAWAY { 4 } else { 0 };
            u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
        }
    }

    pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    /// A header block (HPACK, no Huffman, nothing indexed) for `GET path` with the token.
    pub(super) fn get(path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        literal(&mut block, 4, path.as_bytes()); // :path
        literal(&mut block, 1, b"x"); // :authority
        literal(&mut block, 23, format!("token {}", common::TOKEN).as_bytes()); // authorization
        block
    }

    /// A header of static-table name `index` (4-bit prefix, "without indexing") and `value`.
    fn literal(block: &mut Vec<u8>, index: usize, value: &[u8]) {
        integer(block, 4, 0x00, index);
        integer(block, 7, 0x00, value.len());
        block.extend(value);
    }

    /// HPACK's integer with an `bits`-bit prefix after the `flags` bits.
    fn integer(block: &mut Vec<u8>, bits: u32, flags: u8, value: usize) {
        let max = (1usize << bits) - 1;
        if value < max {
            return block.push(flags | value as u8);
        }
        block.push(flags | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            block.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        block.push(rest as u8);
    }

    /// `HEADERS` then `RST_STREAM(CANCEL)` on `stream`: a request and its reset at once.
    pub(super) fn request_and_reset(stream: u32, block: &[u8]) -> Vec<u8> {
        let mut frames = frame(HEADERS, END_STREAM | END_HEADERS, stream, block);
        frames.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
        frames
    }

    /// A connection past the preface and the exchange of settings, so that the server's
    /// limits are in force.
    pub(super) async fn connect(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        loop {
            let frame = read(&mut stream).await.expect("the server's settings");
            if frame.kind == SETTINGS && frame.payload.len() % 6 == 0 && !frame.payload.is_empty() {
                stream.write_all(&super::h2_frames::frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
                return stream;
            }
        }
    }

    /// The next frame, or `None` at the end of the connection (or after 5 s without one).
    pub(super) async fn read(stream: &mut TcpStream) -> Option<Frame> {
        let read = async {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.ok()?;
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.ok()?;
            let id = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
            Some(Frame { kind: head[3], stream: id, payload })
        };
        tokio::time::timeout(Duration::from_secs(5), read).await.ok().flatten()
    }
}

#[tokio::test]
async fn an_http2_rapid_reset_flood_is_cut_off_with_enhance_your_calm() {
    use h2_frames::*;
    let proxy = impatient().await;
    let mut stream = connect(proxy.addr()).await;
    let block = get("/api/routes");
    let flood: Vec<u8> = (0..2_000u32).flat_map(|i| request_and_reset(2 * i + 1, &block)).collect();
    // The server may close before it has read everything.
    let _ = stream.write_all(&flood).await;
    let mut goaway = None;
    while let Some(frame) = read(&mut stream).await {
        if frame.kind == GOAWAY {
            goaway = Some(frame);
            break;
        }
    }
    let goaway = goaway.expect("a GOAWAY");
    assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM, "{goaway:?}");
    // The server is still there for everyone else.
    assert_eq!(status_with(proxy.addr(), common::TOKEN).await, StatusCode::OK);
}

#[tokio::test]
async fn http2_streams_over_the_limit_are_refused() {
    use h2_frames::*;
    let proxy = impatient().await;
    let mut stream = connect(proxy.addr()).await;
    // Requests whose bodies never come, so that every stream stays open.
    let block = get("/api/routes/user/open");
    let mut block_post = block.clone();
    block_post[0] = 0x83; // :method POST
    let streams = 100u32;
    let opened: Vec<u8> =
        (0..streams).flat_map(|i| frame(HEADERS, END_HEADERS, 2 * i + 1, &block_post)).collect();
    stream.write_all(&opened).await.unwrap();
    let mut refused = 0;
    while let Some(frame) = read(&mut stream).await {
        if frame.kind == RST_STREAM && frame.error_code() == REFUSED_STREAM {
            refused += 1;
            assert!(frame.stream > 2 * 64, "stream {} was refused", frame.stream);
        }
        if refused == streams - 64 {
            break;
        }
    }
    assert_eq!(refused, streams - 64);
}

#[tokio::test]
async fn an_http2_header_list_over_the_limit_is_431() {
    let proxy = impatient().await;
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = |size: usize| {
        http::Request::get(format!("http://{}/api/routes", proxy.addr()))
            .header("authorization", format!("token {}", common::TOKEN))
            .header("x-big", "a".repeat(size))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let response = sender.send_request(request(20 * 1024)).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    sender.ready().await.unwrap();
    let response = sender.send_request(request(8 * 1024)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
