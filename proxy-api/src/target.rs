//! Route targets: where a route sends its requests.
//!
//! configurable-http-proxy accepts any string as a target and fails later, when traffic
//! arrives. We refuse at once what cannot be routed, but keep what we accept byte-for-byte:
//! JupyterHub compares the target it listed with the one it sent, and re-adds the route on
//! every check when they differ.

use std::fmt;
use std::net::IpAddr;

use crate::{Error, Result};

/// The scheme of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl Scheme {
    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A validated target URL: `http` or `https`, a host, an optional port and an optional path;
/// no credentials, query or fragment.
///
/// ```
/// use proxy_api::{Scheme, Target};
/// let target = Target::parse("http://10.1.2.3:8888/base").unwrap();
/// assert_eq!(target.scheme(), Scheme::Http);
/// assert_eq!(target.host(), "10.1.2.3");
/// assert_eq!(target.port(), 8888);
/// assert_eq!(target.path(), "/base");
/// assert_eq!(target.as_str(), "http://10.1.2.3:8888/base");
/// assert!(Target::parse("not a url").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    raw: String,
    scheme: Scheme,
    /// Byte range of the host in `raw`, without IPv6 brackets.
    host: (usize, usize),
    port: Option<u16>,
    /// Byte offset in `raw` where the path starts (`raw.len()` when there is none).
    path_start: usize,
}

impl Target {
    /// Parses and validates a target, keeping the string exactly as given.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid =
            |reason: &str| Error::InvalidTarget { target: raw.to_owned(), reason: reason.to_owned() };
        let (scheme, rest_at) = if starts_with_ignore_case(raw, "http://") {
            (Scheme::Http, "http://".len())
        } else if starts_with_ignore_case(raw, "https://") {
            (Scheme::Https, "https://".len())
        } else {
            return Err(invalid("the target must be an http:// or https:// URL"));
        };
        if let Some(bad) = raw.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(&format!("the target contains the character {bad:?}")));
        }
        if raw.contains('?') || raw.contains('#') {
            return Err(invalid("the target must not have a query or fragment"));
        }
        let path_start = raw[rest_at..].find('/').map_or(raw.len(), |i| rest_at + i);
        let authority = &raw[rest_at..path_start];
        if authority.contains('@') {
            return Err(invalid("credentials in the target are not supported"));
        }
        let (host, port) = split_host_port(authority).map_err(invalid)?;
        if host.is_empty() {
            return Err(invalid("the target has no host"));
        }
        let host_start = rest_at + authority.find(host).unwrap_or(0);
        Ok(Target {
            raw: raw.to_owned(),
            scheme,
            host: (host_start, host_start + host.len()),
            port,
            path_start,
        })
    }

    /// The target exactly as it was sent.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host: a name, an IPv4 address, or an IPv6 address without its brackets.
    pub fn host(&self) -> &str {
        &self.raw[self.host.0..self.host.1]
    }

    /// The host as an IP address, when it is one (KubeSpawner's default targets are pod IPs).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }

    /// The port: the one in the URL, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.scheme.default_port())
    }

    /// The path the target puts in front of every forwarded request, without a trailing `/`;
    /// empty when there is none.
    pub fn path(&self) -> &str {
        self.raw[self.path_start..].trim_end_matches('/')
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Whether the URL standard parses `host` as an IPv4 address: its last label (before one
/// trailing dot) is a decimal or `0x` hexadecimal number. A browser then accepts shortened and
/// hexadecimal forms (`10.1`, `0x7f.1`) and refuses `10.0.0.256`; we take only the four-part
/// decimal form, which means the same to every parser, and refuse the rest rather than route
/// to a DNS name that cannot exist.
fn ends_in_a_number(host: &str) -> bool {
    let last = host.strip_suffix('.').unwrap_or(host).rsplit('.').next().unwrap_or_default();
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Splits `host[:port]` or `[v6]:port`, checking the host's characters and the port's range.
fn split_host_port(authority: &str) -> std::result::Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("an IPv6 host needs a closing ']'")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the host in brackets is not an IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("unexpected characters after the IPv6 host")?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if !authority.starts_with('[') {
        let valid = host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err("the host may hold only letters, digits, '-', '.' and '_'");
        }
        if ends_in_a_number(host) && host.parse::<std::net::Ipv4Addr>().is_err() {
            return Err("a host ending in a number must be an IPv4 address: four numbers from 0 to 255");
        }
    }
    let port = match port {
        None => None,
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err("the port must be a number from 1 to 65535"),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(raw: &str) -> String {
        match Target::parse(raw) {
            Err(Error::InvalidTarget { reason, target }) => {
                assert_eq!(target, raw);
                reason
            }
            other => panic!("expected {raw:?} to be refused, got {other:?}"),
        }
    }

    #[test]
    fn accepted_targets_keep_their_bytes() {
        for raw in [
            "http://127.0.0.1:8888",
            "http://10.1.2.3:8888/base/path",
            "https://svc.ns:443",
            "HTTP://Jupyter-Alice:8888/",
            "http://jupyter-alice.ns.svc.cluster.local:8888/user/alice/",
            "http://[fd00::1]:8888/x",
            "http://hub:8081/hub%20x",
        ] {
            assert_eq!(Target::parse(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn parts() {
        let target = Target::parse("https://svc.ns").unwrap();
        assert_eq!(
            (target.scheme(), target.host(), target.port(), target.path()),
            (Scheme::Https, "svc.ns", 443, "")
        );
        assert_eq!(target.ip(), None);

        let target = Target::parse("http://[fd00::1]:8888/a/b/").unwrap();
        assert_eq!(target.host(), "fd00::1");
        assert_eq!(target.ip(), Some("fd00::1".parse().unwrap()));
        assert_eq!(target.path(), "/a/b");

        let target = Target::parse("http://hub").unwrap();
        assert_eq!((target.port(), target.path()), (80, ""));
        assert_eq!(Target::parse("http://hub/").unwrap().path(), "");
    }

    #[test]
    fn unroutable_targets_say_why() {
        assert!(reason("not a url").contains("http:// or https://"));
        assert!(reason("ftp://h/x").contains("http:// or https://"));
        assert!(reason("http:h").contains("http:// or https://"));
        assert!(reason("http://").contains("no host"));
        assert!(reason("http:///x").contains("no host"));
        assert!(reason("http://:8888").contains("no host"));
        assert!(reason("http://h:99999").contains("port"));
        assert!(reason("http://h:0").contains("port"));
        assert!(reason("http://h:").contains("port"));
        assert!(reason("http://h:+80").contains("port"));
        assert!(reason("http://u:p@h:1").contains("credentials"));
        assert!(reason("http://h/a?q=1").contains("query"));
        assert!(reason("http://h/a#f").contains("fragment"));
        assert!(reason("http://h /x").contains("character"));
        assert!(reason("http://h\n").contains("character"));
        assert!(reason("http://h~x").contains("host may hold"));
        assert!(reason("http://[::1").contains("']'"));
        assert!(reason("http://[zz]:1").contains("IPv6"));
        assert!(reason("http://[::1]x").contains("after the IPv6"));
    }

    /// Hosts a browser's URL parser reads as IPv4 addresses (or refuses), which no DNS name
    /// may be.
    #[test]
    fn hosts_ending_in_a_number_must_be_ipv4_addresses() {
        for raw in [
            "http://10.0.0.256:8888",
            "http://10.1:8888",
            "http://0x7f.0.0.1",
            "http://jupyter.0x1",
            "http://1.2.3.4.5",
            "http://010.0.0.1",
            "http://svc.123",
            "http://10.0.0.1.:8888",
        ] {
            assert!(reason(raw).contains("IPv4"), "{raw}");
        }
        for raw in ["http://10.0.0.255:8888", "http://svc.ns1", "http://1x.svc", "http://0xg.ns"] {
            assert!(Target::parse(raw).is_ok(), "{raw}");
        }
    }
}
