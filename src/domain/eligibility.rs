//! Which devices the service serves: the deployment's known devices, the known devices it is
//! not offered to, and the devices a QoS profile is restricted to, as rules an operator writes
//! (`+34600000002`, `+346000001*`, `203.0.113.0/24`, `2001:db8:1::/48`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::Device;

/// One rule: a phone number exactly, a phone number prefix (`+346000001*`), or an address
/// or network matched against the device's public address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRule {
    Phone(String),
    PhonePrefix(String),
    Network(IpNet),
}

impl DeviceRule {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let expected = "expected a phone number (+34600000002), a prefix ending in * \
                        (+346000001*), an IP address or a CIDR range";
        if let Some(digits) = raw.strip_prefix('+') {
            let (digits, prefix) = match digits.strip_suffix('*') {
                Some(d) => (d, true),
                None => (digits, false),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("device rule {raw:?}: {expected}"));
            }
            let phone = format!("+{digits}");
            return Ok(if prefix {
                Self::PhonePrefix(phone)
            } else {
                Self::Phone(phone)
            });
        }
        if let Ok(net) = raw.parse::<IpNet>() {
            return Ok(Self::Network(net.trunc()));
        }
        if let Ok(addr) = raw.parse::<IpAddr>() {
            return Ok(Self::Network(IpNet::from(addr)));
        }
        Err(format!("device rule {raw:?}: {expected}"))
    }

    pub fn matches(&self, device: &Device) -> bool {
        match (self, device) {
            (Self::Phone(p), Device::PhoneNumber(n)) => n.as_str() == p,
            (Self::PhonePrefix(p), Device::PhoneNumber(n)) => n.as_str().starts_with(p.as_str()),
            (Self::Network(net), Device::Ipv4Address(v4)) => {
                net.contains(&IpAddr::V4(v4.public_address))
            }
            (Self::Network(net), Device::Ipv6Address(v6)) => {
                // An IPv4-mapped address is the IPv4 device it names.
                let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(*v6), IpAddr::V4);
                net.contains(&addr)
            }
            _ => false,
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Phone(p) => p.clone(),
            Self::PhonePrefix(p) => format!("{p}*"),
            Self::Network(n) => n.to_string(),
        }
    }
}

/// A list of rules; a device matching none of them is outside the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRules(Vec<DeviceRule>);

impl DeviceRules {
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, String> {
        rules
            .iter()
            .map(|r| DeviceRule::parse(r.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, device: &Device) -> bool {
        self.0.iter().any(|r| r.matches(device))
    }
}

impl Serialize for DeviceRules {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(DeviceRule::text))
    }
}

impl<'de> Deserialize<'de> for DeviceRules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// What the deployment says of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A device this deployment serves.
    Eligible,
    /// No device of this deployment (404 IDENTIFIER_NOT_FOUND).
    Unknown,
    /// A known device the service is not offered to (422 SERVICE_NOT_APPLICABLE).
    NotApplicable,
}

/// The `[devices]` table of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eligibility {
    /// Devices this deployment serves; `None`: every device.
    #[serde(default)]
    pub known: Option<DeviceRules>,
    /// Known devices the service is not offered to.
    #[serde(default)]
    pub not_applicable: DeviceRules,
}

impl Eligibility {
    pub fn judge(&self, device: &Device) -> Verdict {
        if self.known.as_ref().is_some_and(|k| !k.matches(device)) {
            Verdict::Unknown
        } else if self.not_applicable.matches(device) {
            Verdict::NotApplicable
        } else {
            Verdict::Eligible
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceIpv4, PhoneNumber};

    fn phone(p: &str) -> Device {
        Device::PhoneNumber(PhoneNumber::parse(p).unwrap())
    }

    fn ipv4(public: &str) -> Device {
        Device::Ipv4Address(
            DeviceIpv4::new(
                public.parse().unwrap(),
                Some("10.0.0.1".parse().unwrap()),
                None,
            )
            .unwrap(),
        )
    }

    #[test]
    fn rules_match_phone_numbers_exactly_or_by_prefix_and_addresses_by_network() {
        let rules = DeviceRules::parse(&[
            "+34600000002",
            "+346000001*",
            "203.0.113.0/24",
            "2001:db8:1::/48",
        ])
        .unwrap();
        assert!(rules.matches(&phone("+34600000002")));
        assert!(!rules.matches(&phone("+346000000021")), "exact means exact");
        assert!(rules.matches(&phone("+34600000123")));
        assert!(!rules.matches(&phone("+34600000200")));
        assert!(rules.matches(&ipv4("203.0.113.50")));
        assert!(!rules.matches(&ipv4("198.51.100.50")));
        assert!(rules.matches(&Device::Ipv6Address("2001:db8:1::5".parse().unwrap())));
        assert!(!rules.matches(&Device::Ipv6Address("2001:db8:2::5".parse().unwrap())));
        for bad in ["34600", "+34a*", "+*", "300.1.1.1", "host.example", ""] {
            assert!(DeviceRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_verdict_is_unknown_then_not_applicable_then_eligible() {
        let everyone = Eligibility::default();
        assert_eq!(everyone.judge(&phone("+33612345678")), Verdict::Eligible);
        let e = Eligibility {
            known: Some(DeviceRules::parse(&["+34600000*"]).unwrap()),
            not_applicable: DeviceRules::parse(&["+346000009*"]).unwrap(),
        };
        assert_eq!(e.judge(&phone("+33612345678")), Verdict::Unknown);
        assert_eq!(e.judge(&phone("+34600000901")), Verdict::NotApplicable);
        assert_eq!(e.judge(&phone("+34600000101")), Verdict::Eligible);
        assert_eq!(e.judge(&ipv4("203.0.113.5")), Verdict::Unknown);
    }
}
