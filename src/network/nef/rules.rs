//! The subscription's flow description: per address family of the application server, one
//! `flowInfo` with its two IPFilterRules (TS 29.214 §5.3.8): uplink `permit in` from the UE to
//! the server and downlink `permit out` from the server to the UE. Ranges stay ranges; ports are
//! `p`, `a-b` or comma lists; a CIDR stays a CIDR.

use ipnet::IpNet;
use serde::Serialize;

use crate::domain::{Device, Flow, PortsSpec};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowInfo {
    pub flow_id: u32,
    pub flow_descriptions: Vec<String>,
}

/// The UE's address as the core network sees it (the private address behind NAT), if known.
pub fn ue_address(device: &Device) -> Option<String> {
    match device {
        Device::Ipv4Address(v4) => {
            Some(v4.private_address.unwrap_or(v4.public_address).to_string())
        }
        Device::Ipv6Address(v6) => Some(v6.to_string()),
        Device::PhoneNumber(_) => None,
    }
}

pub fn flow_infos(device: &Device, flow: &Flow) -> Vec<FlowInfo> {
    let ue_v4 = matches!(device, Device::Ipv4Address(_));
    let ue_v6 = matches!(device, Device::Ipv6Address(_));
    // The session's identifier names the UE's address when it is one; a phone number does
    // not, and then the addresses the consumer gave beside it do (else `any`).
    let given = flow.device_addresses;
    let ue_in = |family_v4: bool| match ue_address(device) {
        Some(own) => own,
        None if family_v4 => given.ipv4.map_or("any".to_owned(), |a| a.to_string()),
        None => given.ipv6.map_or("any".to_owned(), |a| a.to_string()),
    };
    let server = &flow.application_server;
    let mut families = Vec::new();
    // A UE known by one family only talks to the server over that family.
    if let Some(net) = server.ipv4.filter(|_| !ue_v6) {
        families.push((host_or_net(net.into()), ue_in(true)));
    }
    if let Some(net) = server.ipv6.filter(|_| !ue_v4) {
        families.push((host_or_net(net.into()), ue_in(false)));
    }
    let ue_ports = ports(flow.device_ports.as_ref());
    let as_ports = ports(flow.application_server_ports.as_ref());
    families
        .into_iter()
        .zip(1..)
        .map(|((server, ue), flow_id)| FlowInfo {
            flow_id,
            flow_descriptions: vec![
                format!("permit in ip from {ue}{ue_ports} to {server}{as_ports}"),
                format!("permit out ip from {server}{as_ports} to {ue}{ue_ports}"),
            ],
        })
        .collect()
}

/// A single host as its bare address, a network in CIDR notation.
fn host_or_net(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// ` 80,443,8000-8010` (with its leading space), or nothing for any port.
fn ports(spec: Option<&PortsSpec>) -> String {
    let Some(spec) = spec else {
        return String::new();
    };
    let mut parts: Vec<String> = spec
        .ranges
        .iter()
        .map(|(from, to)| {
            if from == to {
                from.to_string()
            } else {
                format!("{from}-{to}")
            }
        })
        .collect();
    parts.extend(spec.ports.iter().map(u16::to_string));
    if parts.is_empty() {
        return String::new();
    }
    format!(" {}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ApplicationServer, DeviceIpv4, PhoneNumber};

    fn flow(v4: Option<&str>, v6: Option<&str>, ports: Option<PortsSpec>) -> Flow {
        Flow {
            application_server: ApplicationServer::parse(v4, v6).unwrap(),
            device_ports: None,
            device_addresses: Default::default(),
            application_server_ports: ports,
        }
    }

    #[test]
    fn ipv4_ue_to_a_cidr_with_ranges_kept_as_ranges() {
        let device = Device::Ipv4Address(
            DeviceIpv4::new(
                "203.0.113.5".parse().unwrap(),
                Some("10.0.0.7".parse().unwrap()),
                None,
            )
            .unwrap(),
        );
        let ports = PortsSpec::new(vec![(5000, 5010)], vec![443, 80]);
        let infos = flow_infos(
            &device,
            &flow(Some("198.51.100.0/24"), Some("2001:db8::1"), Some(ports)),
        );
        assert_eq!(
            infos,
            vec![FlowInfo {
                flow_id: 1,
                flow_descriptions: vec![
                    "permit in ip from 10.0.0.7 to 198.51.100.0/24 5000-5010,443,80".into(),
                    "permit out ip from 198.51.100.0/24 5000-5010,443,80 to 10.0.0.7".into(),
                ],
            }]
        );
    }

    #[test]
    fn a_phone_identified_ue_gets_one_flow_per_server_family() {
        let device = Device::PhoneNumber(PhoneNumber::parse("+33612345678").unwrap());
        let infos = flow_infos(
            &device,
            &flow(Some("198.51.100.9"), Some("2001:db8::/32"), None),
        );
        assert_eq!(infos.len(), 2);
        assert_eq!(
            infos[0].flow_descriptions[0],
            "permit in ip from any to 198.51.100.9"
        );
        assert_eq!(infos[1].flow_id, 2);
        assert_eq!(
            infos[1].flow_descriptions[1],
            "permit out ip from 2001:db8::/32 to any"
        );
        assert!(infos.iter().all(|f| f.flow_descriptions.len() <= 2));
    }

    #[test]
    fn an_ipv6_ue_talks_to_the_ipv6_server_address() {
        let device = Device::Ipv6Address("2001:db8:1::5".parse().unwrap());
        let infos = flow_infos(
            &device,
            &flow(Some("198.51.100.9"), Some("2001:db8::1"), None),
        );
        assert_eq!(infos.len(), 1);
        assert_eq!(
            infos[0].flow_descriptions[0],
            "permit in ip from 2001:db8:1::5 to 2001:db8::1"
        );
    }

    #[test]
    fn a_phone_identified_ue_with_a_given_address_is_named_by_it_in_that_family() {
        let device = Device::PhoneNumber(PhoneNumber::parse("+33612345678").unwrap());
        let mut both = flow(Some("198.51.100.9"), Some("2001:db8::/32"), None);
        both.device_addresses.ipv4 = Some("10.0.0.7".parse().unwrap());
        let infos = flow_infos(&device, &both);
        assert_eq!(
            infos[0].flow_descriptions,
            vec![
                "permit in ip from 10.0.0.7 to 198.51.100.9".to_owned(),
                "permit out ip from 198.51.100.9 to 10.0.0.7".to_owned(),
            ]
        );
        assert_eq!(
            infos[1].flow_descriptions[0], "permit in ip from any to 2001:db8::/32",
            "no IPv6 address was given"
        );
    }
}
