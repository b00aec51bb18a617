//! Which addresses a sink may resolve to: public unicast only, unless the operator allows
//! private ones. Guards the network behind the server against callbacks aimed inside it (SSRF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// What a sink URL may be, as the operator set it: checked when a session names its sink (so
/// that a sink that can never be delivered to is a 400 at once) and again before delivery.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkPolicy {
    /// `http://` as well as `https://` (`--allow-insecure-sinks`).
    pub allow_insecure: bool,
    /// Loopback, private, link-local and other non-public addresses (`--allow-private-sinks`).
    pub allow_private: bool,
}

impl SinkPolicy {
    /// Checks what can be checked without a connection: the scheme and a literal IP host.
    /// Host names are checked on resolution, at delivery.
    pub fn check(&self, sink: &str) -> Result<Url, String> {
        let url = Url::parse(sink).map_err(|e| format!("sink is not a valid URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure => {}
            "http" => return Err("http sinks are not allowed (--allow-insecure-sinks)".into()),
            other => return Err(format!("sink scheme {other} is not allowed")),
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("sink has no host")?;
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if let Some(ip) = literal.filter(|_| !self.allow_private)
            && let Some(why) = non_public_reason(ip)
        {
            return Err(format!(
                "sink address {ip} is a {why} address (--allow-private-sinks)"
            ));
        }
        Ok(url)
    }
}

/// Why an address is refused, for the delivery's last error.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_reason(v4),
            None => v6_reason(v6),
        },
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (carrier-grade NAT)")
    } else if a == 198 && (18..20).contains(&b) {
        Some("benchmarking")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique local (private)")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("link-local")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("documentation")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                non_public_reason(bad.parse().unwrap()).is_some(),
                "{bad} passed"
            );
        }
        for good in ["8.8.8.8", "203.0.114.1", "2a00:1450:4007:80e::200e"] {
            assert_eq!(
                non_public_reason(good.parse().unwrap()),
                None,
                "{good} refused"
            );
        }
    }
}
