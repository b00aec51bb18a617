//! The authenticated caller of one request.

use std::collections::BTreeSet;

use crate::domain::{ClientId, Device};

/// Scope names as the API specifications spell them.
pub mod scopes {
    pub const V1_CREATE: &str = "quality-on-demand:sessions:create";
    pub const V1_READ: &str = "quality-on-demand:sessions:read";
    pub const V1_DELETE: &str = "quality-on-demand:sessions:delete";
    pub const V1_UPDATE: &str = "quality-on-demand:sessions:update";
    pub const V1_RETRIEVE_BY_DEVICE: &str = "quality-on-demand:sessions:retrieve-by-device";
    pub const PROFILES_READ: &str = "qos-profiles:read";
    pub const V0_WRITE: &str = "qod-sessions-write";
    pub const V0_READ: &str = "qod-sessions-read";
    pub const V0_DELETE: &str = "qod-sessions-delete";

    /// Every scope this server knows: what a development token gets.
    pub const ALL: [&str; 9] = [
        V1_CREATE,
        V1_READ,
        V1_DELETE,
        V1_UPDATE,
        V1_RETRIEVE_BY_DEVICE,
        PROFILES_READ,
        V0_WRITE,
        V0_READ,
        V0_DELETE,
    ];
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub client: ClientId,
    scopes: Option<BTreeSet<String>>,
    /// The device a three-legged token was issued for; such a caller acts for it alone.
    pub device: Option<Device>,
}

impl Caller {
    pub fn new(client: ClientId, scopes: BTreeSet<String>, device: Option<Device>) -> Self {
        Self {
            client,
            scopes: Some(scopes),
            device,
        }
    }

    /// The caller when authentication is off: one client with every scope.
    pub fn anonymous() -> Self {
        Self {
            client: ClientId::default(),
            scopes: None,
            device: None,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.contains(scope))
    }

    /// Whether this caller may see a session of `owner` bound to `device`.
    pub fn may_access(&self, owner: &ClientId, device: &Device) -> bool {
        *owner == self.client && self.device.as_ref().is_none_or(|d| d == device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;

    fn phone(p: &str) -> Device {
        Device::PhoneNumber(PhoneNumber::parse(p).unwrap())
    }

    #[test]
    fn a_caller_reaches_only_its_own_sessions_and_a_bound_caller_only_its_device() {
        let a = ClientId("a".into());
        let two_legged = Caller::new(a.clone(), BTreeSet::new(), None);
        assert!(two_legged.may_access(&a, &phone("+33600000001")));
        assert!(!two_legged.may_access(&ClientId("b".into()), &phone("+33600000001")));
        let bound = Caller::new(a.clone(), BTreeSet::new(), Some(phone("+33600000001")));
        assert!(bound.may_access(&a, &phone("+33600000001")));
        assert!(!bound.may_access(&a, &phone("+33600000002")));
    }

    #[test]
    fn scopes_are_checked_exactly_and_anonymous_has_all() {
        let c = Caller::new(
            ClientId("a".into()),
            [scopes::V1_READ.to_owned()].into(),
            None,
        );
        assert!(c.has_scope(scopes::V1_READ));
        assert!(!c.has_scope(scopes::V1_CREATE));
        assert!(Caller::anonymous().has_scope(scopes::V1_CREATE));
    }
}
