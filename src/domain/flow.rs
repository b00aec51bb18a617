//! The application flow a session prioritises, and when two flows overlap.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::Invalid;

/// Application server addresses; a bare address is a /32 or /128 network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationServer {
    /// As the consumer wrote it, returned unchanged in SessionInfo.
    pub ipv4_text: Option<String>,
    pub ipv6_text: Option<String>,
    pub ipv4: Option<Ipv4Net>,
    pub ipv6: Option<Ipv6Net>,
}

impl ApplicationServer {
    pub fn parse(ipv4: Option<&str>, ipv6: Option<&str>) -> Result<Self, Invalid> {
        if ipv4.is_none() && ipv6.is_none() {
            return Err(Invalid::argument(
                "applicationServer needs ipv4Address or ipv6Address",
            ));
        }
        let v4 = ipv4
            .map(|t| {
                parse_net::<Ipv4Net, std::net::Ipv4Addr>(t, 32).ok_or_else(|| {
                    Invalid::argument(
                        "applicationServer.ipv4Address is not an IPv4 address or address/mask",
                    )
                })
            })
            .transpose()?;
        let v6 = ipv6
            .map(|t| {
                parse_net::<Ipv6Net, std::net::Ipv6Addr>(t, 128).ok_or_else(|| {
                    Invalid::argument(
                        "applicationServer.ipv6Address is not an IPv6 address or address/mask",
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            ipv4_text: ipv4.map(str::to_owned),
            ipv6_text: ipv6.map(str::to_owned),
            ipv4: v4.map(|n| n.trunc()),
            ipv6: v6.map(|n| n.trunc()),
        })
    }

    /// The IPv4 networks this names: its IPv4 address, and its IPv6 one when that is an
    /// IPv4-mapped address (`::ffff:198.51.100.60` is `198.51.100.60`).
    fn ipv4_nets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let mapped = self.ipv6.and_then(|net| {
            let v4 = net.network().to_ipv4_mapped()?;
            let len = net.prefix_len().checked_sub(96)?;
            Ipv4Net::new(v4, len).ok()
        });
        self.ipv4.into_iter().chain(mapped)
    }

    fn overlaps(&self, other: &Self) -> bool {
        let nets_meet =
            |a: Ipv4Net, b: Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
        let v4 = self
            .ipv4_nets()
            .any(|a| other.ipv4_nets().any(|b| nets_meet(a, b)));
        let v6 = matches!((self.ipv6, other.ipv6), (Some(a), Some(b)) if a.contains(&b.network()) || b.contains(&a.network()));
        v4 || v6
    }
}

trait Net: std::str::FromStr {
    fn from_addr(addr: Self::Addr, len: u8) -> Option<Self>
    where
        Self: Sized;
    type Addr: std::str::FromStr;
}

impl Net for Ipv4Net {
    type Addr = std::net::Ipv4Addr;
    fn from_addr(addr: Self::Addr, len: u8) -> Option<Self> {
        Ipv4Net::new(addr, len).ok()
    }
}

impl Net for Ipv6Net {
    type Addr = std::net::Ipv6Addr;
    fn from_addr(addr: Self::Addr, len: u8) -> Option<Self> {
        Ipv6Net::new(addr, len).ok()
    }
}

fn parse_net<N: Net<Addr = A>, A: std::str::FromStr>(text: &str, full: u8) -> Option<N> {
    if text.contains('/') {
        text.parse::<N>().ok()
    } else {
        N::from_addr(text.parse::<A>().ok()?, full)
    }
}

/// The most ranges and ports one `PortsSpec` may list (the spec sets no maximum; a bound keeps
/// the cost of one request small: see the overlap check).
pub const MAX_PORT_ENTRIES: usize = 256;

/// A set of ports: single ports and inclusive ranges, as the consumer wrote them (echoed back),
/// and the same set as sorted, merged intervals (what overlap checks compare, in linear time).
/// `None` in a flow means "all ports".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PortsWritten", into = "PortsWritten")]
pub struct PortsSpec {
    pub ranges: Vec<(u16, u16)>,
    pub ports: Vec<u16>,
    merged: Vec<(u16, u16)>,
}

/// The stored form: as written; the merged intervals are derived again when read.
#[derive(Serialize, Deserialize)]
struct PortsWritten {
    ranges: Vec<(u16, u16)>,
    ports: Vec<u16>,
}

impl From<PortsWritten> for PortsSpec {
    fn from(w: PortsWritten) -> Self {
        Self::new(w.ranges, w.ports)
    }
}

impl From<PortsSpec> for PortsWritten {
    fn from(p: PortsSpec) -> Self {
        Self {
            ranges: p.ranges,
            ports: p.ports,
        }
    }
}

impl PortsSpec {
    /// From checked values (every range with from <= to).
    pub fn new(ranges: Vec<(u16, u16)>, ports: Vec<u16>) -> Self {
        let mut all: Vec<(u16, u16)> = ranges
            .iter()
            .copied()
            .chain(ports.iter().map(|&p| (p, p)))
            .collect();
        all.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(all.len());
        for (from, to) in all {
            match merged.last_mut() {
                Some(last) if u32::from(from) <= u32::from(last.1) + 1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        Self {
            ranges,
            ports,
            merged,
        }
    }

    /// Builds from wire values, which arrive as wide integers so range errors are ours to name.
    pub fn parse(
        field: &str,
        ranges: Option<Vec<(i64, i64)>>,
        ports: Option<Vec<i64>>,
    ) -> Result<Self, Invalid> {
        if ranges.is_none() && ports.is_none() {
            return Err(Invalid::argument(format!("{field} needs ranges or ports")));
        }
        if ranges.as_ref().is_some_and(Vec::is_empty) || ports.as_ref().is_some_and(Vec::is_empty) {
            return Err(Invalid::argument(format!(
                "{field}: ranges and ports must not be empty arrays"
            )));
        }
        let entries = ranges.as_ref().map_or(0, Vec::len) + ports.as_ref().map_or(0, Vec::len);
        if entries > MAX_PORT_ENTRIES {
            return Err(Invalid::argument(format!(
                "{field} lists {entries} ranges and ports; at most {MAX_PORT_ENTRIES} are \
                 accepted (use ranges for many ports)"
            )));
        }
        let port = |p: i64| {
            u16::try_from(p).map_err(|_| {
                Invalid::out_of_range(format!("{field}: port {p} is not a port from 0 to 65535"))
            })
        };
        let mut checked_ranges = Vec::new();
        for (from, to) in ranges.unwrap_or_default() {
            let (from, to) = (port(from)?, port(to)?);
            if from > to {
                return Err(Invalid::out_of_range(format!(
                    "{field}: range from {from} is greater than to {to}"
                )));
            }
            checked_ranges.push((from, to));
        }
        let mut checked_ports = Vec::new();
        for p in ports.unwrap_or_default() {
            checked_ports.push(port(p)?);
        }
        Ok(Self::new(checked_ranges, checked_ports))
    }

    /// Whether some port is in both sets: one pass over both sorted interval lists.
    fn overlaps(&self, other: &Self) -> bool {
        let (mut a, mut b) = (
            self.merged.iter().peekable(),
            other.merged.iter().peekable(),
        );
        while let (Some(&&(a0, a1)), Some(&&(b0, b1))) = (a.peek(), b.peek()) {
            if a0 <= b1 && b0 <= a1 {
                return true;
            }
            if a1 < b1 {
                a.next();
            } else {
                b.next();
            }
        }
        false
    }
}

/// Everything that delimits the prioritised traffic of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub application_server: ApplicationServer,
    pub device_ports: Option<PortsSpec>,
    pub application_server_ports: Option<PortsSpec>,
    /// The device's own addresses, when the consumer gave them beside the identifier the
    /// session keeps (a phone number): the network's flow rules name them instead of `any`.
    #[serde(default, skip_serializing_if = "DeviceAddresses::is_empty")]
    pub device_addresses: DeviceAddresses,
}

/// A device's addresses as the core network sees them (the private one behind NAT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAddresses {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::Ipv6Addr>,
}

impl DeviceAddresses {
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_none()
    }
}

fn ports_overlap(a: &Option<PortsSpec>, b: &Option<PortsSpec>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.overlaps(b),
        _ => true,
    }
}

impl Flow {
    /// Two flows of the same device overlap when some packet could match both.
    pub fn overlaps(&self, other: &Flow) -> bool {
        self.application_server.overlaps(&other.application_server)
            && ports_overlap(&self.device_ports, &other.device_ports)
            && ports_overlap(
                &self.application_server_ports,
                &other.application_server_ports,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(v4: &str, ports: Option<PortsSpec>) -> Flow {
        Flow {
            device_addresses: Default::default(),
            application_server: ApplicationServer::parse(Some(v4), None).unwrap(),
            device_ports: None,
            application_server_ports: ports,
        }
    }

    fn ports(ranges: &[(i64, i64)], single: &[i64]) -> PortsSpec {
        PortsSpec::parse(
            "p",
            (!ranges.is_empty()).then(|| ranges.to_vec()),
            (!single.is_empty()).then(|| single.to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn a_cidr_overlaps_the_addresses_it_contains() {
        assert!(flow("198.51.100.0/24", None).overlaps(&flow("198.51.100.7", None)));
        assert!(flow("198.51.100.7", None).overlaps(&flow("198.51.100.0/24", None)));
        assert!(!flow("198.51.100.0/24", None).overlaps(&flow("198.51.101.7", None)));
    }

    #[test]
    fn disjoint_ports_do_not_overlap_and_absent_ports_mean_all() {
        let a = flow("10.0.0.1", Some(ports(&[(5000, 5010)], &[])));
        let b = flow("10.0.0.1", Some(ports(&[], &[5011, 6000])));
        let c = flow("10.0.0.1", Some(ports(&[], &[5010])));
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c));
        assert!(a.overlaps(&flow("10.0.0.1", None)));
    }

    #[test]
    fn ipv4_and_ipv6_servers_never_overlap() {
        let v6 = Flow {
            application_server: ApplicationServer::parse(None, Some("2001:db8::/64")).unwrap(),
            device_ports: None,
            device_addresses: Default::default(),
            application_server_ports: None,
        };
        assert!(!v6.overlaps(&flow("10.0.0.1", None)));
    }

    #[test]
    fn bad_addresses_masks_and_ranges_are_refused() {
        assert!(ApplicationServer::parse(Some("10.0.0.1/33"), None).is_err());
        assert!(ApplicationServer::parse(Some("10.0.0"), None).is_err());
        assert!(ApplicationServer::parse(None, Some("2001:db8::/129")).is_err());
        assert!(ApplicationServer::parse(None, None).is_err());
        assert!(PortsSpec::parse("p", Some(vec![(10, 5)]), None).is_err());
        assert!(PortsSpec::parse("p", None, Some(vec![70000])).is_err());
        assert!(PortsSpec::parse("p", None, Some(vec![])).is_err());
    }

    #[test]
    fn an_ipv4_mapped_ipv6_server_is_its_ipv4_address() {
        let mapped = Flow {
            application_server: ApplicationServer::parse(None, Some("::ffff:198.51.100.60"))
                .unwrap(),
            device_ports: None,
            application_server_ports: None,
            device_addresses: Default::default(),
        };
        assert!(mapped.overlaps(&flow("198.51.100.60", None)));
        assert!(mapped.overlaps(&flow("198.51.100.0/24", None)));
        assert!(!mapped.overlaps(&flow("198.51.100.61", None)));
    }

    #[test]
    fn more_port_entries_than_the_maximum_are_refused_and_the_maximum_is_fine() {
        let many: Vec<i64> = (0..=MAX_PORT_ENTRIES as i64).collect();
        let e = PortsSpec::parse("devicePorts", None, Some(many.clone())).unwrap_err();
        assert!(format!("{e:?}").contains("at most 256"), "{e:?}");
        assert!(PortsSpec::parse("devicePorts", None, Some(many[1..].to_vec())).is_ok());
    }

    #[test]
    fn adjacent_and_nested_entries_merge_and_the_written_form_is_kept() {
        let p = PortsSpec::new(vec![(10, 20), (15, 30), (40, 50)], vec![31, 60, 5]);
        assert_eq!(p.merged, vec![(5, 5), (10, 31), (40, 50), (60, 60)]);
        assert_eq!(p.ports, vec![31, 60, 5], "echoed as written");
        let stored = serde_json::to_string(&p).unwrap();
        let read: PortsSpec = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, p, "the merged form is derived again on read");
    }

    fn brute_force(a: &PortsSpec, b: &PortsSpec) -> bool {
        let all = |p: &PortsSpec| -> Vec<(u16, u16)> {
            p.ranges
                .iter()
                .copied()
                .chain(p.ports.iter().map(|&x| (x, x)))
                .collect()
        };
        all(a)
            .iter()
            .any(|&(a0, a1)| all(b).iter().any(|&(b0, b1)| a0 <= b1 && b0 <= a1))
    }

    fn spec() -> impl proptest::strategy::Strategy<Value = PortsSpec> {
        use proptest::prelude::*;
        let range = (0u16..200, 0u16..20).prop_map(|(from, len)| (from, from.saturating_add(len)));
        (
            proptest::collection::vec(range, 0..6),
            proptest::collection::vec(0u16..220, 0..6),
        )
            .prop_map(|(r, p)| PortsSpec::new(r, p))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::api::fuzzing::cases()))]

        #[test]
        fn the_linear_overlap_check_agrees_with_comparing_every_pair(a in spec(), b in spec()) {
            proptest::prop_assert_eq!(a.overlaps(&b), brute_force(&a, &b));
            proptest::prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
        }
    }
}
