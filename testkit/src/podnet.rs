//! A pod network for tests: a network namespace of the test's own, joined to this machine by a
//! veth pair, for the servers a gateway must reach.
//!
//! Kubernetes refuses loopback addresses in an EndpointSlice, so a server that a gateway reaches
//! through one (a hub, a user's server, a mock server) needs another address; and tests send
//! traffic only to loopback and to namespaces they made themselves, never to this machine's own
//! address. A [`PodNetwork`] is such a namespace: `testkit-pod-<pid>-<slot>`, with the pod end
//! of the veth pair (`eth0`) holding addresses of `10.213.<slot>.0/24` from `.2` on
//! ([`PodNetwork::pod_ip`], [`PodNetwork::add_ip`]) and the host end (`tkpod<slot>`) holding
//! `.1` ([`PodNetwork::host_ip`]), which is what a pod sees of its node: where it reaches the
//! proxy's API. The slot is the first whose host link no one else has made, so test processes
//! running side by side get networks of their own.
//!
//! Servers listen in it through [`PodNetwork::bind`] (a socket bound in the namespace by a
//! thread that entered it) and programs run in it through [`PodNetwork::command`] (`ip netns
//! exec`), their children too. The network is removed when dropped, a failed test's included;
//! networks of processes that no longer run (a test killed outright) are removed when the next
//! network is made.
//!
//! It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`, which CI has; without
//! them [`PodNetwork::new`] panics saying so.
//!
//! ```no_run
//! let network = testkit::podnet::PodNetwork::new();
//! let listener = network.bind((network.pod_ip(), 0).into()).unwrap();
//! // The host reaches it: a gateway on this machine routes to `listener.local_addr()`.
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// What the namespaces' names start with, before `<pid>-<slot>`.
const NAMESPACE_PREFIX: &str = "testkit-pod-";
/// What the host ends' names start with, before the slot.
const HOST_LINK_PREFIX: &str = "tkpod";
/// The name of the pod end, inside the namespace.
const POD_LINK: &str = "eth0";
/// The first two octets of every pod network's addresses; the third is the slot.
const RANGE: [u8; 2] = [10, 213];

/// Whether this process has swept the networks of dead ones.
static SWEPT: std::sync::Once = std::sync::Once::new();

/// A network namespace with a veth pair to the host, removed when dropped.
#[derive(Debug)]
pub struct PodNetwork {
    namespace: String,
    host_link: String,
    slot: u8,
    /// The last octet of the newest pod address.
    last: Mutex<u8>,
}

impl PodNetwork {
    /// Makes a pod network with one pod address. Panics, saying why, without root or `ip`, or
    /// when every slot is taken.
    pub fn new() -> PodNetwork {
        SWEPT.call_once(sweep_stale);
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let namespace =
            format!("{NAMESPACE_PREFIX}{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &namespace]).unwrap_or_else(|e| panic!("{e}"));
        // The slot is the first host link name nobody holds: creating a link is atomic.
        for slot in 0..=u8::MAX {
            let subnet = format!("{}.{}.{slot}.0/24", RANGE[0], RANGE[1]);
            if ip(&["-4", "route", "show", &subnet]).is_ok_and(|routes| !routes.trim().is_empty()) {
                continue;
            }
            let host_link = format!("{HOST_LINK_PREFIX}{slot}");
            let created = ip(&[
                "link", "add", &host_link, "type", "veth", "peer", "name", POD_LINK, "netns", &namespace,
            ]);
            if created.is_err() {
                continue;
            }
            let network = PodNetwork { namespace, host_link, slot, last: Mutex::new(2) };
            network.configure().unwrap_or_else(|e| panic!("setting up the pod network: {e}"));
            return network;
        }
        let _ = ip(&["netns", "del", &namespace]);
        panic!("no free pod network: every {HOST_LINK_PREFIX}<n> link up to 255 exists");
    }

    fn configure(&self) -> Result<(), String> {
        let host = format!("{}/24", self.host_ip());
        ip(&["addr", "add", &host, "dev", &self.host_link])?;
        ip(&["link", "set", &self.host_link, "up"])?;
        let pod = format!("{}/24", self.pod_ip());
        ip(&["-n", &self.namespace, "addr", "add", &pod, "dev", POD_LINK])?;
        ip(&["-n", &self.namespace, "link", "set", POD_LINK, "up"])?;
        // No default route: pods reach the host end (the proxy's API) on the link, nothing else.
        ip(&["-n", &self.namespace, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The host end's address: what the pods reach this machine at.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(RANGE[0], RANGE[1], self.slot, 1)
    }

    /// The first pod address.
    pub fn pod_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(RANGE[0], RANGE[1], self.slot, 2)
    }

    /// Adds another pod address and returns it, for tests of many pod IPs. Panics after 252.
    pub fn add_ip(&self) -> Ipv4Addr {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        assert!(*last < 254, "a pod network has at most 253 pod addresses");
        *last += 1;
        let address = Ipv4Addr::new(RANGE[0], RANGE[1], self.slot, *last);
        ip(&["-n", &self.namespace, "addr", "add", &format!("{address}/24"), "dev", POD_LINK])
            .unwrap_or_else(|e| panic!("adding a pod address: {e}"));
        address
    }

    /// A TCP listener bound to `addr` inside the namespace: a thread enters the namespace only
    /// to bind it, and the socket stays there.
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        let path = format!("/var/run/netns/{}", self.namespace);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let namespace = std::fs::File::open(&path)?;
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&namespace),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )?;
                    TcpListener::bind(addr)
                })
                .join()
                .expect("the thread binding in the pod network")
        })
    }

    /// [`PodNetwork::bind`] for tokio.
    pub fn bind_tokio(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let listener = self.bind(addr)?;
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// A command that runs `program` in the namespace, as would a pod's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace]).arg(program);
        command
    }
}

impl Default for PodNetwork {
    fn default() -> Self {
        PodNetwork::new()
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // Deleting the host end deletes its peer; the namespace goes once no process is in it.
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

/// Removes the pod networks of test processes that no longer run, with what still runs in them
/// (a server the test left behind): deleting a namespace deletes its end of the veth pair, and
/// with it the host's.
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for name in list.lines().filter_map(|line| line.split_whitespace().next()) {
        let Some((pid, _)) = name.strip_prefix(NAMESPACE_PREFIX).and_then(|rest| rest.split_once('-')) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for left in ip(&["netns", "pids", name]).unwrap_or_default().split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", left]).status();
        }
        let _ = ip(&["netns", "del", name]);
    }
}

/// Runs `ip` with `args`; its output, or why it failed.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2; the pod network needs it and root): {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed (the pod network needs root: CAP_NET_ADMIN): {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One test at a time: a network made by another test may take the slot, and so the link
    /// name, that one test's dropped network let go.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_server_in_the_pod_network_is_reached_from_the_host_and_gone_after_drop() {
        let _serial = one_at_a_time();
        let network = PodNetwork::new();
        let extra = network.add_ip();
        assert_ne!(extra, network.pod_ip());
        let listener = network.bind((extra, 0).into()).expect("bind in the namespace");
        let addr = listener.local_addr().unwrap();
        assert!(TcpListener::bind(addr).is_err(), "{addr} is the host's too");
        let server = std::thread::spawn(move || {
            let (mut stream, peer) = listener.accept().unwrap();
            stream.write_all(peer.ip().to_string().as_bytes()).unwrap();
        });
        let mut reply = String::new();
        std::net::TcpStream::connect(addr).unwrap().read_to_string(&mut reply).unwrap();
        server.join().unwrap();
        assert_eq!(reply, network.host_ip().to_string(), "the host reaches pods from its end of the link");

        // A program run in the namespace sees the pod's addresses, not the host's.
        let inside = network.command("ip").args(["-4", "-o", "addr"]).output().unwrap();
        let inside = String::from_utf8_lossy(&inside.stdout);
        assert!(inside.contains(&network.pod_ip().to_string()), "{inside}");
        assert!(!inside.contains(&network.host_ip().to_string()), "{inside}");

        let (namespace, host_link) = (network.namespace.clone(), network.host_link.clone());
        drop(network);
        assert!(!ip(&["netns", "list"]).unwrap().contains(&namespace));
        assert!(ip(&["link", "show", &host_link]).is_err(), "{host_link} outlived its network");
    }

    #[test]
    fn networks_side_by_side_have_subnets_of_their_own() {
        let _serial = one_at_a_time();
        let (a, b) = (PodNetwork::new(), PodNetwork::new());
        assert_ne!(a.pod_ip(), b.pod_ip());
        assert_ne!(a.namespace(), b.namespace());
    }

    #[test]
    fn a_dead_process_network_is_swept() {
        let _serial = one_at_a_time();
        // No other sweep of this process runs from here on.
        SWEPT.call_once(sweep_stale);
        // A namespace named for a process that cannot exist (pid above the kernel's maximum).
        let name = format!("{NAMESPACE_PREFIX}4294967295-0");
        ip(&["netns", "add", &name]).unwrap();
        // A server it left behind.
        let mut left = Command::new("ip").args(["netns", "exec", &name, "sleep", "600"]).spawn().unwrap();
        while ip(&["netns", "pids", &name]).unwrap().trim().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sweep_stale();
        assert!(!ip(&["netns", "list"]).unwrap().contains(&name), "stale {name} was kept");
        assert!(!left.wait().unwrap().success(), "what ran in it was left running");
    }
}
