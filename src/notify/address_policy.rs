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
        // The URL as written must be a URI (RFC 3986): no spaces, controls or other bytes a
        // parser would quietly escape or drop, and it is echoed back as written.
        if let Some(bad) = sink.chars().find(|c| !is_uri_char(*c)) {
            return Err(format!("sink contains {bad:?}, which a URI may not"));
        }
        let url = Url::parse(sink).map_err(|e| format!("sink is not a valid URL: {e}"))?;
        // Credentials in the URL would be stored and echoed in clear and sent as Basic auth
        // (beside a sinkCredential's bearer token): the spec's sinkCredential is the way.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "sink may not carry user information (user:password@); use sinkCredential".into(),
            );
        }
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

/// Unreserved, reserved and `%` characters of RFC 3986.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// Whether a token can go into an `Authorization: Bearer` header as it is: visible ASCII only
/// (a control character or a line break would break the header, or smuggle another one).
pub fn is_header_safe_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Why an address is refused, for the delivery's last error: every block of the IANA IPv4 and
/// IPv6 special-purpose address registries that is not globally reachable, and translated forms
/// (IPv4-mapped, NAT64, 6to4, IPv4-compatible) judged by the IPv4 address they carry.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, ..) => "unspecified (this network)",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "shared address space (carrier-grade NAT)",
        (127, ..) => "loopback",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    // IPv4-compatible (::a.b.c.d), deprecated: nothing public is reached that way.
    if s[..6] == [0; 6] {
        return Some("IPv4-compatible (deprecated)");
    }
    // NAT64 well-known prefix: the IPv4 address in the last 32 bits decides.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_reason(embedded(s[6], s[7]));
    }
    // 6to4: the IPv4 address in bits 16 to 48 decides.
    if s[0] == 0x2002 {
        return v4_reason(embedded(s[1], s[2]));
    }
    let reason = match s[0] {
        0x0064 if s[1] == 0xff9b && s[2] == 0x0001 => "local-use IPv4/IPv6 translation",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only",
        // 2001::/23: IETF protocol assignments, Teredo (2001::/32) among them.
        0x2001 if s[1] < 0x0200 => "IETF protocol assignment (Teredo, ...)",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x3fff if s[1] < 0x1000 => "documentation",
        0x5f00 => "segment routing (SRv6) identifier",
        x if x & 0xfe00 == 0xfc00 => "unique local (private)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    };
    Some(reason)
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
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "198.18.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:c0a8:101::1",
            "2002:7f00:1::",
            "::10.0.0.1",
            "::8.8.8.8",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "5f00::1",
            "fec0::1",
        ] {
            assert!(
                non_public_reason(bad.parse().unwrap()).is_some(),
                "{bad} passed"
            );
        }
        for good in [
            "8.8.8.8",
            "203.0.114.1",
            "2a00:1450:4007:80e::200e",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(
                non_public_reason(good.parse().unwrap()),
                None,
                "{good} refused"
            );
        }
    }

    #[test]
    fn sinks_with_user_information_or_characters_outside_a_uri_are_refused() {
        let policy = SinkPolicy::default();
        assert!(policy.check("https://sink.example/cb?a=1&b=%20").is_ok());
        for bad in [
            "https://user:secret@sink.example/cb",
            "https://user@sink.example/cb",
            "https://sink.example/c b",
            "https://sink.example/cb\r\nX-Injected: 1",
            "https://sink.example/\tcb",
            "https://sink.example/caf\u{e9}",
        ] {
            assert!(policy.check(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_visible_ascii_tokens_are_header_safe() {
        assert!(is_header_safe_token("eyJhbGciOi.x-y_z~+/=="));
        for bad in ["", "a\r\nb", "a\0b", "a\u{7f}", "with space", "caf\u{e9}"] {
            assert!(!is_header_safe_token(bad), "{bad:?}");
        }
    }
}
