//! Device identity: the wire offers up to four identifiers; the session keeps the one we select.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::Invalid;

/// E.164 number with a leading '+', as the spec's pattern demands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let digits = raw.strip_prefix('+').unwrap_or("");
        let ok = raw.starts_with('+')
            && (5..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::argument(
                "device.phoneNumber must match ^\\+[1-9][0-9]{4,14}$",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The IPv4 identity of a device: its public address plus a private address or a public port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceIpv4 {
    pub public_address: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_address: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
}

impl DeviceIpv4 {
    pub fn new(
        public_address: Ipv4Addr,
        private_address: Option<Ipv4Addr>,
        public_port: Option<u16>,
    ) -> Result<Self, Invalid> {
        if private_address.is_none() && public_port.is_none() {
            return Err(Invalid::argument(
                "device.ipv4Address needs publicAddress with privateAddress or publicPort",
            ));
        }
        Ok(Self {
            public_address,
            private_address,
            public_port,
        })
    }
}

impl DeviceIpv4 {
    /// The keys this address names its device by (see `DeviceIdentifiers::keys`).
    fn keys(&self) -> Vec<String> {
        let public = self.public_address;
        if self.private_address == Some(public) {
            return vec![format!("ipv4:{public}")];
        }
        let mut keys = Vec::new();
        if let Some(private) = self.private_address {
            keys.push(format!("ipv4:{public}|{private}|"));
        }
        if let Some(port) = self.public_port {
            keys.push(format!("ipv4:{public}||{port}"));
        }
        keys
    }
}

/// The one identifier a session is bound to (the spec's `DeviceResponse`: at most one property).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Device {
    PhoneNumber(PhoneNumber),
    Ipv4Address(DeviceIpv4),
    Ipv6Address(Ipv6Addr),
}

/// Every identifier a request offered, before selection.
#[derive(Debug, Clone, Default)]
pub struct DeviceIdentifiers {
    pub phone_number: Option<PhoneNumber>,
    pub network_access_identifier: Option<String>,
    pub ipv4: Option<DeviceIpv4>,
    pub ipv6: Option<Ipv6Addr>,
}

/// Why no identifier could be selected; maps to the spec's 422 codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectionError {
    Missing,
    Unsupported,
}

impl DeviceIdentifiers {
    /// Every key under which these identifiers name a device, canonical: the kept
    /// identifier's (`Device::key`) first, then one per other identifier and form. An IPv4
    /// address given with a private address equal to it (no NAT) is the address alone, as is
    /// an IPv4-mapped IPv6 address; an IPv4 address with both a private address and a port is
    /// also known by each. Two requests that share a key name the same device.
    pub fn keys(&self, kept: &Device) -> Vec<String> {
        let mut keys = vec![kept.key()];
        if let Some(p) = &self.phone_number {
            keys.push(Device::PhoneNumber(p.clone()).key());
        }
        if let Some(v4) = &self.ipv4 {
            keys.extend(v4.keys());
        }
        if let Some(v6) = self.ipv6 {
            keys.push(match v6.to_ipv4_mapped() {
                Some(v4) => format!("ipv4:{v4}"),
                None => format!("ipv6:{v6}"),
            });
        }
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.clone()));
        keys
    }

    /// Picks one identifier: phone number, then IPv4, then IPv6. The network access identifier
    /// is reserved for future use by the spec, so on its own it is unsupported.
    pub fn select(self) -> Result<Device, SelectionError> {
        if let Some(p) = self.phone_number {
            return Ok(Device::PhoneNumber(p));
        }
        if let Some(v4) = self.ipv4 {
            return Ok(Device::Ipv4Address(v4));
        }
        if let Some(v6) = self.ipv6 {
            return Ok(Device::Ipv6Address(v6));
        }
        if self.network_access_identifier.is_some() {
            return Err(SelectionError::Unsupported);
        }
        Err(SelectionError::Missing)
    }
}

impl Device {
    /// A stable key that two requests naming the same device share: used for overlap checks
    /// and retrieval by device.
    pub fn key(&self) -> String {
        match self {
            Device::PhoneNumber(p) => format!("tel:{}", p.as_str()),
            Device::Ipv4Address(v4) => format!(
                "ipv4:{}|{}|{}",
                v4.public_address,
                v4.private_address
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                v4.public_port.map(|p| p.to_string()).unwrap_or_default()
            ),
            Device::Ipv6Address(v6) => format!("ipv6:{v6}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_follow_the_e164_pattern() {
        assert!(PhoneNumber::parse("+33612345678").is_ok());
        assert!(PhoneNumber::parse("+12345").is_ok());
        for bad in [
            "33612345678",
            "+0612345678",
            "+1234",
            "+1234567890123456",
            "+33 6123",
            "",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ipv4_identity_needs_private_address_or_port() {
        let public = "203.0.113.1".parse().unwrap();
        assert!(DeviceIpv4::new(public, None, None).is_err());
        assert!(DeviceIpv4::new(public, None, Some(5000)).is_ok());
        assert!(DeviceIpv4::new(public, Some(public), None).is_ok());
    }

    #[test]
    fn selection_prefers_phone_number_and_rejects_a_lone_nai() {
        let ids = DeviceIdentifiers {
            phone_number: Some(PhoneNumber::parse("+33612345678").unwrap()),
            ipv6: Some("2001:db8::1".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(ids.select(), Ok(Device::PhoneNumber(_))));
        let nai_only = DeviceIdentifiers {
            network_access_identifier: Some("a@b".into()),
            ..Default::default()
        };
        assert_eq!(nai_only.select(), Err(SelectionError::Unsupported));
        assert_eq!(
            DeviceIdentifiers::default().select(),
            Err(SelectionError::Missing)
        );
    }

    #[test]
    fn one_device_named_differently_shares_a_key() {
        let kept_phone = |ids: &DeviceIdentifiers| ids.keys(&ids.clone().select().unwrap());
        let v4 = |private: Option<&str>, port: Option<u16>| {
            DeviceIpv4::new(
                "203.0.113.50".parse().unwrap(),
                private.map(|p| p.parse().unwrap()),
                port,
            )
            .unwrap()
        };
        let phone = PhoneNumber::parse("+33612345678").unwrap();
        let both = DeviceIdentifiers {
            phone_number: Some(phone.clone()),
            ipv4: Some(v4(Some("10.0.0.1"), Some(4000))),
            ..Default::default()
        };
        let keys = kept_phone(&both);
        assert_eq!(keys[0], "tel:+33612345678", "the kept identifier first");
        let by_private = DeviceIdentifiers {
            ipv4: Some(v4(Some("10.0.0.1"), None)),
            ..Default::default()
        };
        let by_port = DeviceIdentifiers {
            ipv4: Some(v4(None, Some(4000))),
            ..Default::default()
        };
        for other in [&by_private, &by_port] {
            let theirs = kept_phone(other);
            assert!(
                theirs.iter().any(|k| keys.contains(k)),
                "{theirs:?} vs {keys:?}"
            );
        }
        let no_nat = DeviceIdentifiers {
            ipv4: Some(v4(Some("203.0.113.50"), None)),
            ..Default::default()
        };
        let mapped = DeviceIdentifiers {
            ipv6: Some("::ffff:203.0.113.50".parse().unwrap()),
            ..Default::default()
        };
        let (a, b) = (kept_phone(&no_nat), kept_phone(&mapped));
        assert!(a.iter().any(|k| b.contains(k)), "{a:?} vs {b:?}");
        assert!(
            !kept_phone(&by_private).iter().any(|k| a.contains(k)),
            "behind NAT, the public address alone names no device"
        );
    }
}
