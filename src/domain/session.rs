//! A QoS session, its CAMARA status and the state of its network grant.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Device, Flow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A session id as the API writes it: a UUID in its canonical form (lowercase hex with
    /// hyphens, 36 characters); braces, `urn:uuid:`, upper case or missing hyphens are not one.
    pub fn parse_canonical(raw: &str) -> Option<Self> {
        let id = Uuid::try_parse(raw).ok()?;
        (id.hyphenated().to_string() == raw).then_some(Self(id))
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The API client a session belongs to (from its token's client claim); only it may see or
/// change the session. Empty for sessions created without authentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct ClientId(pub String);

impl ClientId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> anyhow::Result<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => anyhow::bail!("unknown {} {other:?}", stringify!($name)),
                }
            }
        }
    };
}

// The API version a session was created through: it decides its notifications' format and
// some lifecycle rules (v0 purges an expired session at once, keeps a terminated one 360 s).
text_enum!(ApiVersion {
    V0 = "v0",
    V1 = "v1",
});

text_enum!(QosStatus {
    Requested = "REQUESTED",
    Available = "AVAILABLE",
    Unavailable = "UNAVAILABLE",
});

text_enum!(StatusInfo {
    DurationExpired = "DURATION_EXPIRED",
    NetworkTerminated = "NETWORK_TERMINATED",
    DeleteRequested = "DELETE_REQUESTED",
});

text_enum!(GrantState {
    None = "none",
    Provisioning = "provisioning",
    Granted = "granted",
    Releasing = "releasing",
    Released = "released",
});

/// A secret as stored: sealed with the server's key (see `crate::secrets`). Debug never
/// prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedSecret(pub String);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<sealed>")
    }
}

/// The consumer's token for its notification sink, sealed. Only delivery opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkCredential {
    pub access_token: SealedSecret,
    pub access_token_expires_utc: DateTime<Utc>,
}

/// A sink token as a request carries it, before the service seals it.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredential {
    pub access_token: String,
    pub access_token_expires_utc: DateTime<Utc>,
}

impl std::fmt::Debug for PlainCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredential")
            .field("access_token", &"<redacted>")
            .field("access_token_expires_utc", &self.access_token_expires_utc)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    /// Bumped on every change; jobs carry the revision they were scheduled for.
    pub revision: i64,
    pub status: QosStatus,
    pub status_info: Option<StatusInfo>,
    pub device: Device,
    pub flow: Flow,
    pub qos_profile: String,
    /// Requested (REQUESTED), overall (AVAILABLE) or effective (UNAVAILABLE) duration.
    pub duration_secs: i64,
    pub sink: Option<String>,
    pub sink_credential: Option<SinkCredential>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// Scheduled end while AVAILABLE; the termination time once UNAVAILABLE.
    pub expires_at: Option<DateTime<Utc>>,
    pub grant_state: GrantState,
    pub grant_id: Option<String>,
    /// When the network's grant ends unless renewed (AVAILABLE sessions).
    pub lease_until: Option<DateTime<Utc>>,
    /// Deleted by its consumer: invisible to the API while its grant is released and purged.
    pub deleted: bool,
    pub api: ApiVersion,
    pub owner: ClientId,
    /// A provisioning attempt was repeated, so the network may hold a grant whose id we never
    /// learned: releasing must search for it.
    pub stray_grant_possible: bool,
}

/// One state change, recorded in `session_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<QosStatus>,
    /// A QoS status, or `PURGED` when the session's row is removed.
    pub to: &'static str,
    pub reason: &'static str,
}

pub const PURGED: &str = "PURGED";

/// Every change of a session goes through these methods: each moves the revision on once (the
/// store refuses a write whose revision did not move past the one it read), and the grant
/// state moves only here.
impl Session {
    fn bump(&mut self) {
        self.revision += 1;
    }

    /// Provisioning is about to call the network: a crash from here on may leave a grant.
    pub fn mark_provisioning(&mut self) {
        self.grant_state = GrantState::Provisioning;
        self.bump();
    }

    /// A provisioning attempt is repeated after one whose outcome is unknown: the network may
    /// hold a grant whose id we never learned, which a release must search for.
    pub fn note_repeated_attempt(&mut self) {
        self.stray_grant_possible = true;
        self.bump();
    }

    /// The network accepted the request without confirming the QoS yet (it will by an event).
    pub fn accept_grant(&mut self, grant_id: String, lease_until: Option<DateTime<Utc>>) {
        self.grant_state = GrantState::Granted;
        self.grant_id = Some(grant_id);
        self.lease_until = lease_until;
        self.bump();
    }

    /// A grant arrived for a session that no longer wants it: it is to be released.
    pub fn give_back_grant(&mut self, grant_id: String) {
        self.grant_state = GrantState::Releasing;
        self.grant_id = Some(grant_id);
        self.bump();
    }

    /// The network confirmed the release.
    pub fn mark_released(&mut self) {
        self.grant_state = GrantState::Released;
        self.bump();
    }

    /// Deleted by its consumer: hidden from the API from now on.
    pub fn hide(&mut self) {
        self.deleted = true;
        self.bump();
    }

    /// An AVAILABLE session's overall duration becomes `duration_secs` (its end moves).
    pub fn extend_to(&mut self, duration_secs: i64) -> Transition {
        self.duration_secs = duration_secs;
        if let Some(started) = self.started_at {
            self.expires_at = Some(started + chrono::Duration::seconds(duration_secs));
        }
        self.note_available("EXTENDED")
    }

    /// The network extended the grant's lease (never shortened by a late answer).
    pub fn renewed(&mut self, lease_until: DateTime<Utc>) -> Transition {
        self.lease_until = Some(lease_until.max(self.lease_until.unwrap_or(lease_until)));
        self.note_available("GRANT_RENEWED")
    }

    /// REQUESTED -> AVAILABLE when the network granted the QoS.
    pub fn make_available(&mut self, now: DateTime<Utc>, grant_id: String) -> Transition {
        let from = self.status;
        self.status = QosStatus::Available;
        self.started_at = Some(now);
        self.expires_at = Some(now + chrono::Duration::seconds(self.duration_secs));
        self.grant_state = GrantState::Granted;
        self.grant_id = Some(grant_id);
        self.bump();
        Transition {
            from: Some(from),
            to: QosStatus::Available.as_str(),
            reason: "NETWORK_GRANTED",
        }
    }

    /// An AVAILABLE session changed without leaving AVAILABLE (extended, grant renewed, QoS
    /// (not) guaranteed): a new revision and the event that records why.
    pub fn note_available(&mut self, reason: &'static str) -> Transition {
        self.bump();
        Transition {
            from: Some(QosStatus::Available),
            to: QosStatus::Available.as_str(),
            reason,
        }
    }

    /// Any state -> UNAVAILABLE. The grant, if any might exist, must then be released.
    ///
    /// The spec's `expiresAt` and `duration` of an UNAVAILABLE session are when it ended and how
    /// long it ran: a session that expired ended at its scheduled `expiresAt` however late the
    /// expiry job ran (after a restart, seconds later), so both stay as they were; one ended
    /// early ends now, with the effective duration. The event records the actual moment.
    pub fn make_unavailable(&mut self, now: DateTime<Utc>, info: StatusInfo) -> Transition {
        let from = self.status;
        let ran_its_course = info == StatusInfo::DurationExpired
            && self.started_at.is_some()
            && self.expires_at.is_some_and(|end| end <= now);
        if !ran_its_course {
            if let Some(started) = self.started_at {
                let effective = (now - started).num_milliseconds().div_euclid(1000);
                self.duration_secs = effective.clamp(1, self.duration_secs.max(1));
            }
            self.expires_at = Some(now);
        }
        self.status = QosStatus::Unavailable;
        self.status_info = Some(info);
        if matches!(
            self.grant_state,
            GrantState::Granted | GrantState::Provisioning
        ) {
            self.grant_state = GrantState::Releasing;
        }
        self.bump();
        Transition {
            from: Some(from),
            to: QosStatus::Unavailable.as_str(),
            reason: info.as_str(),
        }
    }

    /// Whether the network may hold (or be about to hold) a grant for this session.
    pub fn needs_release(&self) -> bool {
        matches!(
            self.grant_state,
            GrantState::Provisioning | GrantState::Granted | GrantState::Releasing
        )
    }

    /// How long an UNAVAILABLE session stays readable before it is purged.
    pub fn retention(
        &self,
        configured: chrono::Duration,
        remaining: chrono::Duration,
    ) -> chrono::Duration {
        let network_hold = chrono::Duration::seconds(360);
        match (self.deleted, self.status_info, self.api) {
            (true, _, _) => chrono::Duration::zero(),
            (false, Some(StatusInfo::NetworkTerminated), ApiVersion::V0) => {
                configured.max(network_hold)
            }
            (false, Some(StatusInfo::NetworkTerminated), ApiVersion::V1) => {
                remaining.clamp(chrono::Duration::zero(), network_hold)
            }
            (false, Some(StatusInfo::DurationExpired), ApiVersion::V0) => chrono::Duration::zero(),
            _ => configured,
        }
    }
}
