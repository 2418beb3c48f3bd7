//! The proxy binary as a child process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A running proxy, killed when dropped.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// The tasks copying stdout and stderr into `log`; done at end of file.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl ProxyProcess {
    /// Starts `bin` with `args` and the token in `CONFIGPROXY_AUTH_TOKEN`, listening on a free
    /// loopback port, and waits until it says where it listens. Panics, with its log, when it
    /// exits or stays silent for 30 s.
    pub async fn start(bin: impl AsRef<Path>, args: &[&str], token: &str) -> ProxyProcess {
        let mut command = Command::new(bin.as_ref());
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("CONFIGPROXY_AUTH_TOKEN", token)
            .env("RUST_LOG", "info");
        Self::spawn(command).await
    }

    /// Starts `bin` with the Kubernetes store on the cluster of `kubeconfig`, in `namespace`,
    /// with `args` after, and none of this process's environment, as [`start`](Self::start)
    /// does.
    pub async fn start_kubernetes(
        bin: impl AsRef<Path>,
        kubeconfig: &Path,
        namespace: &str,
        token: &str,
        args: &[&str],
    ) -> ProxyProcess {
        let mut command = Command::new(bin.as_ref());
        command.env_clear().env("KUBECONFIG", kubeconfig).env("CONFIGPROXY_AUTH_TOKEN", token);
        command.args(["--store", "kubernetes", "--listen", "127.0.0.1:0", "--k8s-namespace", namespace]);
        command.args(args);
        Self::spawn(command).await
    }

    /// Starts a prepared command, which must make the proxy listen, and waits as
    /// [`start`](Self::start) does.
    pub async fn spawn(mut command: Command) -> ProxyProcess {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().expect("the proxy binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        let mut addr_tx = Some(addr_tx);
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_log = Arc::clone(&log);
        let stderr_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                let mut log = stderr_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout_log = Arc::clone(&log);
        let stdout_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = stdout_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => ProxyProcess { child, addr, log, readers: vec![stderr_reader, stdout_reader] },
            _ => {
                let _ = child.kill().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("the proxy did not start; its log:\n{}", log.lock().unwrap());
            }
        }
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything the proxy has printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits up to `timeout` for the proxy to exit and for its last output
    /// to reach [`log`](Self::log).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.id().expect("the proxy is running").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok);
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        status
    }
}

/// The address in the proxy's `listening on http://ADDR` line, as text or inside a JSON log
/// line's `message`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    rest.split(|c: char| c.is_whitespace() || c == '"').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_address_in_the_log_line() {
        let line = "2026-11-26T23:34:58Z  INFO jupyterhub_istio_proxy: listening on http://127.0.0.1:18555 store=Memory";
        assert_eq!(super::listening_addr(line), Some("127.0.0.1:18555".parse().unwrap()));
        let json = r#"{"level":"INFO","message":"listening on http://127.0.0.1:18555","store":"memory"}"#;
        assert_eq!(super::listening_addr(json), Some("127.0.0.1:18555".parse().unwrap()));
        assert_eq!(super::listening_addr("listening on nothing"), None);
    }
}
