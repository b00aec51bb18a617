//! v1 wire types (CAMARA QoD 1.1 / QoS Profiles 1.1) and their translation into domain types.
//! Required fields are `Option` here so a missing one gets a precise message, not serde's.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::auth::Caller;
use crate::domain::{
    ApplicationServer, Device, DeviceAddresses, DeviceIdentifiers, DeviceIpv4, Flow, Invalid,
    PhoneNumber, PortsSpec, SelectionError, Session,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceWire {
    phone_number: Option<String>,
    network_access_identifier: Option<String>,
    ipv4_address: Option<DeviceIpv4Wire>,
    ipv6_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceIpv4Wire {
    public_address: Option<String>,
    private_address: Option<String>,
    public_port: Option<i64>,
}

fn ipv4(field: &str, text: &str) -> Result<std::net::Ipv4Addr, Invalid> {
    text.parse()
        .map_err(|_| Invalid::argument(format!("{field} is not an IPv4 address")))
}

fn port(field: &str, p: i64) -> Result<u16, Invalid> {
    u16::try_from(p)
        .map_err(|_| Invalid::out_of_range(format!("{field} must be a port from 0 to 65535")))
}

/// A device as a request names it: the identifier the session keeps, the device's addresses
/// among those given (for the network's flow rules when the session keeps a phone number), and
/// every key the identifiers name it by (for the overlap check).
#[derive(Debug, Clone)]
pub struct NamedDevice {
    pub device: Device,
    pub addresses: DeviceAddresses,
    pub keys: Vec<String>,
}

impl NamedDevice {
    /// A device known by one identifier only (a three-legged token's).
    pub fn only(device: Device) -> Self {
        Self {
            keys: vec![device.key()],
            device,
            addresses: DeviceAddresses::default(),
        }
    }
}

impl DeviceWire {
    /// Parses every identifier, then selects the one the session is bound to.
    pub fn into_device(self) -> Result<Device, ApiError> {
        self.into_named_device().map(|named| named.device)
    }

    /// The selected identifier, with what else the request said of the device.
    pub fn into_named_device(self) -> Result<NamedDevice, ApiError> {
        let has_any = self.phone_number.is_some()
            || self.network_access_identifier.is_some()
            || self.ipv4_address.is_some()
            || self.ipv6_address.is_some();
        if !has_any {
            return Err(ApiError::invalid_argument(
                "device must contain at least one identifier",
            ));
        }
        let phone_number = self
            .phone_number
            .as_deref()
            .map(PhoneNumber::parse)
            .transpose()?;
        if let Some(nai) = &self.network_access_identifier
            && (nai.is_empty() || nai.len() > 256)
        {
            return Err(ApiError::invalid_argument(
                "device.networkAccessIdentifier is malformed",
            ));
        }
        let ipv4 = match self.ipv4_address {
            None => None,
            Some(w) => {
                let public = w.public_address.as_deref().ok_or_else(|| {
                    Invalid::argument("device.ipv4Address.publicAddress is required")
                })?;
                let public = ipv4("device.ipv4Address.publicAddress", public)?;
                let private = w
                    .private_address
                    .as_deref()
                    .map(|p| ipv4("device.ipv4Address.privateAddress", p))
                    .transpose()?;
                let public_port = w
                    .public_port
                    .map(|p| port("device.ipv4Address.publicPort", p))
                    .transpose()?;
                Some(DeviceIpv4::new(public, private, public_port)?)
            }
        };
        let ipv6 = self
            .ipv6_address
            .as_deref()
            .map(|t| {
                t.parse()
                    .map_err(|_| Invalid::argument("device.ipv6Address is not an IPv6 address"))
            })
            .transpose()?;
        let addresses = DeviceAddresses {
            ipv4: ipv4
                .as_ref()
                .map(|v4| v4.private_address.unwrap_or(v4.public_address)),
            ipv6,
        };
        let identifiers = DeviceIdentifiers {
            phone_number,
            network_access_identifier: self.network_access_identifier,
            ipv4,
            ipv6,
        };
        let device = identifiers.clone().select().map_err(|e| match e {
            SelectionError::Missing => ApiError::missing_identifier(),
            SelectionError::Unsupported => ApiError::unsupported_identifier(),
        })?;
        Ok(NamedDevice {
            keys: identifiers.keys(&device),
            device,
            addresses,
        })
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationServerWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6_address: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct PortRangeWire {
    from: i64,
    to: i64,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct PortsSpecWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    ranges: Option<Vec<PortRangeWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<i64>>,
}

impl ApplicationServerWire {
    pub fn from_domain(a: &ApplicationServer) -> Self {
        Self {
            ipv4_address: a.ipv4_text.clone(),
            ipv6_address: a.ipv6_text.clone(),
        }
    }
}

impl PortsSpecWire {
    fn parse(self, field: &str) -> Result<PortsSpec, Invalid> {
        PortsSpec::parse(
            field,
            self.ranges
                .map(|r| r.into_iter().map(|r| (r.from, r.to)).collect()),
            self.ports,
        )
    }

    pub fn from_domain(p: &PortsSpec) -> Self {
        Self {
            ranges: (!p.ranges.is_empty()).then(|| {
                p.ranges
                    .iter()
                    .map(|&(from, to)| PortRangeWire {
                        from: from.into(),
                        to: to.into(),
                    })
                    .collect()
            }),
            ports: (!p.ports.is_empty()).then(|| p.ports.iter().map(|&p| p.into()).collect()),
        }
    }
}

/// Builds the flow from its three wire parts.
pub fn parse_flow(
    server: Option<ApplicationServerWire>,
    device_ports: Option<PortsSpecWire>,
    server_ports: Option<PortsSpecWire>,
) -> Result<Flow, ApiError> {
    let server =
        server.ok_or_else(|| ApiError::invalid_argument("applicationServer is required"))?;
    Ok(Flow {
        application_server: ApplicationServer::parse(
            server.ipv4_address.as_deref(),
            server.ipv6_address.as_deref(),
        )?,
        device_ports: device_ports.map(|p| p.parse("devicePorts")).transpose()?,
        application_server_ports: server_ports
            .map(|p| p.parse("applicationServerPorts"))
            .transpose()?,
        device_addresses: Default::default(),
    })
}

/// `^[a-zA-Z0-9_.-]+$`, 3..=256 characters.
pub fn check_profile_name(name: &str) -> Result<(), ApiError> {
    let ok = (3..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(
            "qosProfile must match ^[a-zA-Z0-9_.-]+$ with 3 to 256 characters",
        ))
    }
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A session's flow as both API versions render it (flattened into their SessionInfo).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowInfo {
    application_server: ApplicationServerWire,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_ports: Option<PortsSpecWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_server_ports: Option<PortsSpecWire>,
}

impl From<&Flow> for FlowInfo {
    fn from(f: &Flow) -> Self {
        Self {
            application_server: ApplicationServerWire::from_domain(&f.application_server),
            device_ports: f.device_ports.as_ref().map(PortsSpecWire::from_domain),
            application_server_ports: f
                .application_server_ports
                .as_ref()
                .map(PortsSpecWire::from_domain),
        }
    }
}

/// The spec's SessionInfo. The sink credential is deliberately absent: it is never returned.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Device>,
    #[serde(flatten)]
    flow: FlowInfo,
    qos_profile: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sink: Option<String>,
    duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    qos_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_info: Option<&'static str>,
}

impl From<&Session> for SessionInfo {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id.to_string(),
            device: Some(s.device.clone()),
            flow: FlowInfo::from(&s.flow),
            qos_profile: s.qos_profile.clone(),
            sink: s.sink.clone(),
            duration: s.duration_secs,
            started_at: s.started_at.map(timestamp),
            expires_at: s.expires_at.map(timestamp),
            qos_status: s.status.as_str(),
            status_info: s.status_info.map(|i| i.as_str()),
        }
    }
}

impl SessionInfo {
    /// The session as `caller` sees it: a three-legged caller named no device, so none is
    /// returned (the spec returns the device only when the request provided it).
    pub fn for_caller(s: &Session, caller: &Caller) -> Self {
        let mut info = Self::from(s);
        if caller.device.is_some() {
            info.device = None;
        }
        info
    }
}
