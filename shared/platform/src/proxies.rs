//! Who is calling, behind the edge: a service sees the edge's address; it
//! believes the client's own (`x-forwarded-for`) only from the proxies
//! `TRUSTED_PROXIES` names (addresses or CIDR ranges), so a client cannot
//! pick its per-client bucket by sending the header.

/// The proxies (the edge) whose `x-forwarded-for` is believed; set once at
/// start from `TRUSTED_PROXIES`.
static TRUSTED_PROXIES: std::sync::OnceLock<Vec<Network>> = std::sync::OnceLock::new();

/// Trusts `proxies`' X-Forwarded-For (see [`client_address`]).
pub fn trust_proxies(proxies: Vec<Network>) {
    let _ = TRUSTED_PROXIES.set(proxies);
}

/// An address or a CIDR range (`10.0.0.0/8`, `fd00::/8`): an ingress
/// controller's pods change address within their network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let bits = |a: u128, width: u32| if self.prefix == 0 { 0 } else { a >> (width - u32::from(self.prefix)) };
        match (self.addr, ip) {
            (V4(n), V4(i)) => bits(u128::from(u32::from(n)), 32) == bits(u128::from(u32::from(i)), 32),
            (V6(n), V6(i)) => bits(u128::from(n), 128) == bits(u128::from(i), 128),
            (V6(n), V4(i)) => Network { addr: V6(n), prefix: self.prefix }.contains(V6(i.to_ipv6_mapped())),
            (V4(_), V6(i)) => i.to_ipv4_mapped().is_some_and(|i| self.contains(V4(i))),
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: std::net::IpAddr = addr.parse().map_err(|e| format!("{e}"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width).ok_or(format!("prefix must be 0 to {width}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

/// The caller's address for per-client limits: the peer, or — when the
/// peer is a trusted proxy — the address it appended last to
/// `x-forwarded-for` (what the proxy itself saw). A client cannot choose
/// its address by sending the header: from anyone else it is ignored.
pub fn client_address<T>(request: &tonic::Request<T>) -> Option<String> {
    let peer = request.remote_addr()?.ip();
    let trusted = TRUSTED_PROXIES.get().is_some_and(|t| t.iter().any(|n| n.contains(peer)));
    let forwarded = || {
        let header = request.metadata().get("x-forwarded-for")?.to_str().ok()?;
        let last = header.rsplit(',').next()?.trim();
        last.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
    };
    Some(if trusted { forwarded().unwrap_or_else(|| peer.to_string()) } else { peer.to_string() })
}

#[cfg(test)]
mod network_tests {
    use super::Network;

    #[test]
    fn proxies_are_addresses_or_ranges() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let pods: Network = "10.244.0.0/16".parse().unwrap();
        assert!(pods.contains(ip("10.244.3.7")) && !pods.contains(ip("10.245.0.1")));
        let one: Network = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(one.contains(ip("::ffff:127.0.0.1")), "an IPv4 peer seen on an IPv6 socket");
        let v6: Network = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<Network>().unwrap().contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Network>().is_err() && "ten".parse::<Network>().is_err());
    }
}
