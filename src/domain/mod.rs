//! Domain types: what a session is, independent of HTTP and storage.

pub mod device;
pub mod eligibility;
pub mod flow;
pub mod profile;
pub mod session;

pub use device::{Device, DeviceIdentifiers, DeviceIpv4, PhoneNumber, SelectionError};
pub use eligibility::{DeviceRules, Eligibility, Verdict};
pub use flow::{ApplicationServer, DeviceAddresses, Flow, PortsSpec};
pub use profile::{Catalogue, ProfileStatus, QosProfile};
pub use session::{
    ApiVersion, ClientId, GrantState, PlainCredential, QosStatus, SealedSecret, Session, SessionId,
    SinkCredential, StatusInfo,
};

/// A value the wire offered that the domain cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub kind: InvalidKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// Wrong shape or format.
    Argument,
    /// A number outside the range the schema allows.
    OutOfRange,
}

impl Invalid {
    pub fn argument(message: impl Into<String>) -> Self {
        Self {
            kind: InvalidKind::Argument,
            message: message.into(),
        }
    }

    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self {
            kind: InvalidKind::OutOfRange,
            message: message.into(),
        }
    }
}
