//! The use cases behind both API facades: rules, then one transaction per request.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::auth::Caller;
use crate::core::{Core, Timings};
use crate::directory::DeviceDirectory;
use crate::domain::session::Transition;
use crate::domain::{
    ApiVersion, Catalogue, ClientId, Device, Flow, GrantState, PlainCredential, ProfileStatus,
    QosStatus, Session, SessionId, SinkCredential, StatusInfo,
};
use crate::domain::{QosProfile, Verdict};
use crate::jobs;
use crate::lifecycle::{self, Effects, ScheduledJob};
use crate::notify::address_policy::SinkPolicy;
use crate::secrets::SecretBox;
use crate::store::{Created, Write};

/// A create request after parsing: every value already valid on its own.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub device: Device,
    /// Every key the request named the device by (`DeviceIdentifiers::keys`), the kept
    /// identifier's first: the overlap check looks for live sessions under each.
    pub device_keys: Vec<String>,
    pub flow: Flow,
    pub qos_profile: String,
    pub duration_secs: i64,
    pub sink: Option<String>,
    /// In clear as the request carried it; sealed before it is stored.
    pub sink_credential: Option<PlainCredential>,
    pub api: ApiVersion,
    pub owner: ClientId,
}

/// How far an extension may go.
#[derive(Debug, Clone, Copy)]
pub enum ExtensionRule {
    /// The overall duration stays within the profile's maximum (QoD v1).
    ProfileMaximum,
    /// The profile's maximum, and the remaining time after the extension at most this many
    /// seconds as well (QoD v0).
    RemainingAtMost(i64),
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("session not found")]
    NotFound,
    /// The session exists but belongs to another client.
    #[error("the caller may not access this session")]
    Forbidden,
    /// No device of this deployment matches the identifier.
    #[error("the device is not known")]
    UnknownDevice,
    /// A known device the service is not offered to.
    #[error("the service is not offered to this device")]
    ServiceNotApplicable,
    /// The device directory cannot tell now.
    #[error("the device directory cannot answer: {0}")]
    DirectoryUnavailable(String),
    /// The caller's token speaks for another device than the session's (or the request's).
    #[error("the access token was issued for another device")]
    OtherDevice,
    #[error("the client holds its maximum of {0} active sessions")]
    QuotaExceeded(u64),
    #[error("QoS profile {0} does not exist")]
    UnknownProfile(String),
    #[error("QoS profile {0} is not available for new sessions")]
    ProfileNotApplicable(String),
    #[error("duration {requested} s is outside what profile {profile} allows: {min} to {max} s")]
    DurationOutOfRange {
        profile: String,
        requested: i64,
        min: i64,
        max: i64,
    },
    #[error("the flow overlaps an existing session of the same device")]
    Conflict,
    #[error("extension not allowed in state {0:?}")]
    ExtensionNotAllowed(QosStatus),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T> = std::result::Result<T, ServiceError>;

/// The use cases: the shared core, and what only they need.
#[derive(Clone)]
pub struct Service {
    core: Arc<Core>,
    catalogue: Catalogue,
    /// Seals sink tokens before they are stored.
    secrets: Arc<SecretBox>,
    timings: Timings,
    /// Active sessions one client may hold; 0 for no cap.
    max_active_sessions: u64,
    sink_policy: SinkPolicy,
    /// Which devices this deployment serves.
    directory: Arc<dyn DeviceDirectory>,
}

/// What the service is built from beside the core.
pub struct Offer {
    pub catalogue: Catalogue,
    pub directory: Arc<dyn DeviceDirectory>,
    /// Active sessions one client may hold; 0 for no cap.
    pub max_active_sessions: u64,
    pub sink_policy: SinkPolicy,
}

impl Service {
    pub fn new(core: Arc<Core>, secrets: Arc<SecretBox>, timings: Timings, offer: Offer) -> Self {
        Self {
            core,
            catalogue: offer.catalogue,
            secrets,
            timings,
            max_active_sessions: offer.max_active_sessions,
            sink_policy: offer.sink_policy,
            directory: offer.directory,
        }
    }

    /// Refuses a device this deployment does not serve: unknown (404) or not offered the
    /// service (422). Checked before anything is stored.
    pub async fn check_device(&self, device: &Device) -> Result<()> {
        match self.directory.judge(device).await {
            Ok(Verdict::Eligible) => Ok(()),
            Ok(Verdict::Unknown) => Err(ServiceError::UnknownDevice),
            Ok(Verdict::NotApplicable) => Err(ServiceError::ServiceNotApplicable),
            Err(e) => Err(ServiceError::DirectoryUnavailable(e.0)),
        }
    }

    /// The profiles on offer to `device` (only the unrestricted ones without a device), with
    /// this name and status when given.
    pub async fn profiles(
        &self,
        device: Option<&Device>,
        name: Option<&str>,
        status: Option<ProfileStatus>,
    ) -> Result<Vec<QosProfile>> {
        if let Some(device) = device {
            self.check_device(device).await?;
        }
        Ok(self.catalogue.matching(name, status, device))
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The QoS profiles on offer.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// What sink URLs are accepted.
    pub fn sink_policy(&self) -> &SinkPolicy {
        &self.sink_policy
    }

    fn now(&self) -> DateTime<Utc> {
        self.core.clock.now()
    }

    pub async fn create(&self, req: NewSession) -> Result<Session> {
        let profile = self
            .catalogue
            .get(&req.qos_profile)
            .ok_or_else(|| ServiceError::UnknownProfile(req.qos_profile.clone()))?;
        self.check_device(&req.device).await?;
        if profile.status != ProfileStatus::Active || !profile.offered_to(Some(&req.device)) {
            return Err(ServiceError::ProfileNotApplicable(profile.name.clone()));
        }
        let range = profile.duration_range();
        if !range.contains(&req.duration_secs) {
            return Err(ServiceError::DurationOutOfRange {
                profile: profile.name.clone(),
                requested: req.duration_secs,
                min: *range.start(),
                max: *range.end(),
            });
        }
        let now = self.now();
        let device_keys = req.device_keys;
        let session = Session {
            id: in_span(SessionId(self.core.random.session_id())),
            revision: 1,
            status: QosStatus::Requested,
            status_info: None,
            device: req.device,
            flow: req.flow,
            qos_profile: req.qos_profile,
            duration_secs: req.duration_secs,
            sink: req.sink,
            sink_credential: req.sink_credential.map(|c| SinkCredential {
                access_token: self.secrets.seal(&c.access_token),
                access_token_expires_utc: c.access_token_expires_utc,
            }),
            created_at: now,
            started_at: None,
            expires_at: None,
            grant_state: GrantState::None,
            grant_id: None,
            deleted: false,
            api: req.api,
            lease_until: None,
            stray_grant_possible: false,
            owner: req.owner,
        };
        let mut fx = Effects::default();
        fx.record(
            &session,
            Transition {
                from: None,
                to: QosStatus::Requested.as_str(),
                reason: "CREATED",
            },
            now,
        );
        let deadline =
            now + chrono::Duration::from_std(self.timings.provision_timeout).unwrap_or_default();
        fx.schedule(ScheduledJob::new(
            jobs::ProvisionSession {
                session_id: session.id,
                deadline_ms: Some(deadline.timestamp_millis()),
            },
            now,
        ));

        let (created, written) = self
            .core
            .store
            .create_session(session.clone(), device_keys, self.max_active_sessions, fx)
            .await?;
        written.publish(&self.core);
        match created {
            Created::Stored => Ok(session),
            Created::Conflict => Err(ServiceError::Conflict),
            Created::QuotaExceeded => {
                self.core
                    .metrics
                    .client_limited
                    .with_label_values(&["quota"])
                    .inc();
                Err(ServiceError::QuotaExceeded(self.max_active_sessions))
            }
        }
    }

    pub async fn get(&self, id: SessionId, caller: &Caller) -> Result<Session> {
        in_span(id);
        visible(self.core.store.session(id).await?, caller)
    }

    /// The caller's visible sessions of a device; other clients' sessions are not listed.
    pub async fn retrieve(&self, device: &Device, caller: &Caller) -> Result<Vec<Session>> {
        if caller.device.as_ref().is_some_and(|d| d != device) {
            return Err(ServiceError::OtherDevice);
        }
        self.check_device(device).await?;
        Ok(self
            .core
            .store
            .visible_sessions(&caller.client, &device.key())
            .await?)
    }

    /// Ends the session for its consumer: it disappears from the API at once; its grant is
    /// released and its row purged by jobs.
    pub async fn delete(&self, id: SessionId, caller: &Caller) -> Result<()> {
        in_span(id);
        let now = self.now();
        let retention = self.timings.retention;
        let caller = caller.clone();
        lifecycle::change(&self.core, id, move |current, fx| {
            let mut session = match visible(current, &caller) {
                Ok(s) => s,
                Err(e) => return Ok((Write::Nothing, Err(e))),
            };
            Self::end_for_consumer(&mut session, retention, now, fx);
            Ok((Write::update(session), Ok(())))
        })
        .await?
    }

    /// Hides the session and schedules the rest: its purge, or its termination first.
    fn end_for_consumer(
        session: &mut Session,
        retention: std::time::Duration,
        now: chrono::DateTime<chrono::Utc>,
        fx: &mut Effects,
    ) {
        let id = session.id;
        session.hide();
        if session.status == QosStatus::Unavailable {
            fx.schedule(ScheduledJob::new(jobs::PurgeSession::new(id), now));
        } else {
            lifecycle::terminate(retention, session, StatusInfo::DeleteRequested, now, fx);
        }
    }

    /// Moves `expiresAt`: v1 caps the overall duration at the profile's maximum; v0 caps the
    /// remaining time (`expiresAt` − now) at 86,400 s.
    pub async fn extend(
        &self,
        id: SessionId,
        caller: &Caller,
        additional_secs: i64,
        rule: ExtensionRule,
    ) -> Result<Session> {
        in_span(id);
        let now = self.now();
        let caller = caller.clone();
        let catalogue = self.catalogue.clone();
        let lifetime = self.timings.grant_lifetime;
        lifecycle::change(&self.core, id, move |current, fx| {
            let mut session = match visible(current, &caller) {
                Ok(s) => s,
                Err(e) => return Ok((Write::Nothing, Err(e))),
            };
            if session.status != QosStatus::Available {
                let refused = ServiceError::ExtensionNotAllowed(session.status);
                return Ok((Write::Nothing, Err(refused)));
            }
            let Some(started) = session.started_at else {
                anyhow::bail!("AVAILABLE session {id} has no startedAt");
            };
            // The profile's maximum bounds the overall duration through either API.
            let profile_max = catalogue
                .get(&session.qos_profile)
                .map(|p| *p.duration_range().end())
                .unwrap_or(session.duration_secs);
            let max = match rule {
                ExtensionRule::ProfileMaximum => profile_max,
                ExtensionRule::RemainingAtMost(cap) => {
                    profile_max.min((now - started).num_seconds().max(0).saturating_add(cap))
                }
            };
            let new_duration = session
                .duration_secs
                .saturating_add(additional_secs)
                .min(max)
                .max(session.duration_secs);
            if new_duration == session.duration_secs {
                return Ok((Write::Nothing, Ok(session)));
            }
            let old_expires = session.expires_at.unwrap_or(now);
            let t = session.extend_to(new_duration);
            fx.record(&session, t, now);
            let expires = session.expires_at.unwrap_or(now);
            // The previous expiry job stays queued and finds the session not yet due.
            fx.schedule(ScheduledJob::new(
                jobs::ExpireSession { session_id: id },
                expires,
            ));
            // A grant that covered the old end only needs renewing now; one already short of
            // it has its renewal queued, which will reach the new end.
            if session.lease_until.is_some_and(|l| l >= old_expires) {
                lifecycle::schedule_renewal(&session, lifetime, fx);
            }
            Ok((Write::update(session.clone()), Ok(session)))
        })
        .await?
    }
}

/// The stored session if it is visible (not deleted) and the caller may see it.
fn visible(session: Option<Session>, caller: &Caller) -> Result<Session> {
    match session {
        Some(s) if !s.deleted && caller.may_access(&s.owner, &s.device) => Ok(s),
        Some(s) if !s.deleted && s.owner == caller.client => Err(ServiceError::OtherDevice),
        Some(s) if !s.deleted => Err(ServiceError::Forbidden),
        _ => Err(ServiceError::NotFound),
    }
}

/// Names the session on the request's span (its logs and its exported span).
fn in_span(id: SessionId) -> SessionId {
    tracing::Span::current().record("session_id", tracing::field::display(id));
    id
}
