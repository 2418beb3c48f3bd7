//! Which IP addresses a route may send traffic to: the addresses Kubernetes takes as a pod's.
//!
//! Both routing APIs write a pod-IP target as an endpoint (a ServiceEntry's, an
//! EndpointSlice's), and the API server refuses an EndpointSlice whose address is unspecified,
//! loopback, link-local or an IPv4-mapped IPv6 address (`ValidateEndpointIP` and strict IP
//! validation in Kubernetes' `pkg/apis/discovery/validation`). Checking the same rules before
//! anything is written means a refused target changes nothing, and that every store (the
//! memory store too) accepts exactly the same targets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Why an address cannot be a pod's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodAddressError {
    /// 127.0.0.0/8 or `::1`: only a gateway on the proxy's own machine could reach it.
    Loopback,
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// 169.254.0.0/16 or `fe80::/10`: a link's own addresses, never a pod's.
    LinkLocal,
    /// A multicast group, not a server.
    Multicast,
    /// `::ffff:a.b.c.d`, which some software reads as IPv4 and some as IPv6.
    Ipv4Mapped(Ipv4Addr),
}

impl fmt::Display for PodAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodAddressError::Loopback => f.write_str("is a loopback address"),
            PodAddressError::Unspecified => f.write_str("is the unspecified address, not a server's"),
            PodAddressError::LinkLocal => f.write_str(
                "is link-local (169.254.0.0/16, fe80::/10), which Kubernetes refuses as a pod's address",
            ),
            PodAddressError::Multicast => f.write_str("is a multicast address, not a server's"),
            PodAddressError::Ipv4Mapped(v4) => write!(
                f,
                "is an IPv4-mapped IPv6 address, which Kubernetes refuses as ambiguous: send {v4} instead"
            ),
        }
    }
}

impl std::error::Error for PodAddressError {}

/// Checks that `ip` can be a pod's address; `allow_loopback` lets loopback through (one machine,
/// no gateway, the memory store).
///
/// ```
/// use kube_routes::{PodAddressError, check_pod_address};
/// assert_eq!(check_pod_address("10.0.0.7".parse().unwrap(), false), Ok(()));
/// assert_eq!(check_pod_address("169.254.1.1".parse().unwrap(), false), Err(PodAddressError::LinkLocal));
/// assert_eq!(
///     check_pod_address("::ffff:10.0.0.7".parse().unwrap(), false),
///     Err(PodAddressError::Ipv4Mapped("10.0.0.7".parse().unwrap()))
/// );
/// assert_eq!(check_pod_address("127.0.0.1".parse().unwrap(), true), Ok(()));
/// ```
pub fn check_pod_address(ip: IpAddr, allow_loopback: bool) -> Result<(), PodAddressError> {
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(PodAddressError::Ipv4Mapped(v4));
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if ip.is_loopback() {
        if allow_loopback { Ok(()) } else { Err(PodAddressError::Loopback) }
    } else if ip.is_unspecified() {
        Err(PodAddressError::Unspecified)
    } else if ip.is_multicast() {
        Err(PodAddressError::Multicast)
    } else if link_local {
        Err(PodAddressError::LinkLocal)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str) -> Result<(), PodAddressError> {
        check_pod_address(ip.parse().unwrap(), false)
    }

    #[test]
    fn pod_addresses_pass() {
        for ip in
            ["10.0.0.7", "192.168.1.2", "100.64.0.1", "fd00::7", "2001:db8::1", "::a00:7", "169.253.255.255"]
        {
            assert_eq!(check(ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn what_kubernetes_refuses_is_refused() {
        use PodAddressError::*;
        for (ip, expected) in [
            ("127.0.0.1", Loopback),
            ("127.9.9.9", Loopback),
            ("::1", Loopback),
            ("0.0.0.0", Unspecified),
            ("::", Unspecified),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.254", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.1.1.1", Multicast),
            ("ff02::1", Multicast),
            ("::ffff:10.0.0.7", Ipv4Mapped(Ipv4Addr::new(10, 0, 0, 7))),
            ("::ffff:127.0.0.1", Ipv4Mapped(Ipv4Addr::LOCALHOST)),
        ] {
            assert_eq!(check(ip), Err(expected), "{ip}");
        }
        assert!(check("::ffff:10.0.0.7").unwrap_err().to_string().contains("send 10.0.0.7"));
    }

    #[test]
    fn loopback_passes_only_when_allowed() {
        assert_eq!(check_pod_address("127.0.0.1".parse().unwrap(), true), Ok(()));
        assert_eq!(check_pod_address("::1".parse().unwrap(), true), Ok(()));
        assert_eq!(check_pod_address("0.0.0.0".parse().unwrap(), true), Err(PodAddressError::Unspecified));
    }
}
