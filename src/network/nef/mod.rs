//! The network through a NEF's AsSessionWithQoS API (3GPP TS 29.122, T8): provision = POST a
//! subscription, renew = PATCH its `qosDuration`, release = DELETE it (404 counts as released).
//! The subscription id comes from `Location` (or `self`), never from our session id.
//!
//! No orphans: the job marks the intent before the POST; a provisioning attempt after one whose
//! outcome is unknown first asks the NEF for the subscriptions of the UE and adopts the one
//! carrying this session's callback URL; a release deletes the known subscription and any other
//! one carrying that URL (a POST that timed out may have created it after all).

pub mod callback;
pub mod rules;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::{Response, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

use super::{Grant, GrantRef, Network, NetworkError, ProvisionRequest};
use crate::clock::SharedClock;
use crate::domain::{Device, SessionId};
use callback::CallbackUrls;
use rules::{FlowInfo, flow_infos, ue_address};
use token::TokenSource;

/// Where the NEF is and how to talk to it.
#[derive(Debug, Clone)]
pub struct NefSettings {
    /// Base of the API, e.g. `https://nef.example/3gpp-as-session-with-qos/v1`.
    pub url: String,
    /// The SCS/AS id path segment; `None` for NEFs without it (a vendor variant).
    pub scs_as_id: Option<String>,
    pub timeout: Duration,
    /// OAuth2 client credentials: token URL, client id, secret, scope.
    pub oauth: Option<(String, String, crate::config::Redacted, Option<String>)>,
    /// `qosProfile` → `[qosReference, altQoSReferences...]`; a profile not listed is its own
    /// reference.
    pub qos_references: BTreeMap<String, Vec<String>>,
    pub ca_file: Option<std::path::PathBuf>,
    /// The 201 only means "accepted": the session waits for SUCCESSFUL_RESOURCES_ALLOCATION.
    pub await_allocation: bool,
    /// Ask the NEF for a TestNotification on each new subscription.
    pub request_test_notification: bool,
    /// Fields added to every subscription as they are (`dnn`, `snssai`, `supportedFeatures`...,
    /// which some NEFs require).
    pub extra_fields: serde_json::Map<String, Value>,
}

pub struct NefNetwork {
    http: reqwest::Client,
    collection: String,
    token: Option<TokenSource>,
    callbacks: CallbackUrls,
    references: BTreeMap<String, Vec<String>>,
    clock: SharedClock,
    await_allocation: bool,
    request_test_notification: bool,
    extra_fields: serde_json::Map<String, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Subscription<'a> {
    notification_destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ue_ipv4_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ue_ipv6_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpsi: Option<String>,
    flow_info: Vec<FlowInfo>,
    qos_reference: &'a str,
    #[serde(rename = "altQoSReferences", skip_serializing_if = "<[_]>::is_empty")]
    alt_qos_references: &'a [String],
    qos_duration: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    request_test_notification: bool,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, Value>,
}

impl NefNetwork {
    pub fn new(
        settings: &NefSettings,
        callbacks: CallbackUrls,
        clock: SharedClock,
    ) -> anyhow::Result<Arc<Self>> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build()?;
        let base = settings.url.trim_end_matches('/');
        let collection = match &settings.scs_as_id {
            Some(id) => format!("{base}/{id}/subscriptions"),
            None => format!("{base}/subscriptions"),
        };
        let token = settings.oauth.as_ref().map(|(url, id, secret, scope)| {
            TokenSource::new(
                http.clone(),
                url.clone(),
                id.clone(),
                secret.clone(),
                scope.clone(),
                clock.clone(),
            )
        });
        Ok(Arc::new(Self {
            http,
            collection,
            token,
            callbacks,
            references: settings.qos_references.clone(),
            clock,
            await_allocation: settings.await_allocation,
            request_test_notification: settings.request_test_notification,
            extra_fields: settings.extra_fields.clone(),
        }))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, NetworkError> {
        // The work's trace context and the caller's correlator go on to the NEF.
        let here = crate::trace::current();
        let mut request = request;
        if let Some(span) = here.span {
            request = request.header("traceparent", span.to_string());
        }
        if let Some(correlator) = here.correlator {
            request = request.header("x-correlator", correlator);
        }
        let request = match &self.token {
            Some(t) => request.bearer_auth(t.bearer().await?),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            NetworkError::Retryable(format!(
                "NEF unreachable or slow: {}",
                super::with_causes(&e)
            ))
        })?;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(t) = &self.token
        {
            t.invalidate().await;
        }
        Ok(response)
    }

    /// The error a non-success answer means for the job.
    async fn failure(&self, what: &str, response: Response) -> NetworkError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::notify::sink_client::parse_retry_after(v, self.clock.now()));
        let detail = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|p| {
                p.get("detail")
                    .or(p.get("cause"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let reason = format!("{what}: NEF answered {status} {detail}");
        match (status.as_u16(), retry_after) {
            (403 | 429 | 503, Some(after)) => NetworkError::Busy {
                reason,
                retry_after: after,
            },
            (401 | 408 | 425 | 429 | 500..=599, _) => NetworkError::Retryable(reason),
            _ => NetworkError::Refused(reason),
        }
    }

    fn member(&self, id: &str) -> String {
        format!("{}/{id}", self.collection)
    }

    /// Seconds from now to `until`, rounded up: the network grants at least as long as asked.
    fn seconds_until(&self, until: DateTime<Utc>) -> i64 {
        let millis = (until - self.clock.now()).num_milliseconds();
        (millis + 999).div_euclid(1000).max(1)
    }

    /// Until when the answer grants: what was asked, unless the network granted a shorter
    /// `qosDuration` (or a vendor's earlier `expirationTime`).
    fn lease(&self, answer: &Value, asked: DateTime<Utc>, asked_secs: i64) -> DateTime<Utc> {
        let now = self.clock.now();
        let granted = answer
            .get("qosDuration")
            .and_then(Value::as_i64)
            .filter(|secs| *secs < asked_secs)
            .map(|secs| now + chrono::Duration::seconds(secs))
            .or_else(|| {
                answer
                    .get("expirationTime")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
            });
        granted.map_or(asked, |g| g.min(asked))
    }

    /// The subscriptions that carry this session's callback URL (ours), by id.
    async fn find_ours(
        &self,
        session: SessionId,
        device: Option<&Device>,
    ) -> Result<Vec<String>, NetworkError> {
        let mut request = self.http.get(&self.collection);
        if let Some(address) = device.and_then(ue_address) {
            let family = if address.contains(':') {
                "ipv6Addr"
            } else {
                "ipv4Addr"
            };
            request = request.query(&[(
                "ip-addrs",
                serde_json::json!([{ family: address }]).to_string(),
            )]);
        }
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(self.failure("listing subscriptions", response).await);
        }
        let list: Vec<Value> = response.json().await.map_err(|e| {
            NetworkError::Retryable(format!("subscription list: {}", super::with_causes(&e)))
        })?;
        // By the session's part of the URL: the public URL may have changed since (a restart
        // on another address), the session's path has not.
        let ours = format!("{}/{session}/", callback::PATH);
        Ok(list
            .iter()
            .filter(|s| {
                s.get("notificationDestination")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.contains(&ours))
            })
            .filter_map(|s| s.get("self").and_then(Value::as_str).map(subscription_id))
            .collect())
    }
}

/// The subscription id in a `Location`/`self` value: the last path segment of a URI, or the
/// value itself when it is a bare id.
pub fn subscription_id(location: &str) -> String {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_owned()
}

#[async_trait]
impl Network for NefNetwork {
    async fn provision(&self, req: &ProvisionRequest) -> Result<Grant, NetworkError> {
        if req.uncertain
            && let Some(id) = self
                .find_ours(req.session, Some(&req.device))
                .await?
                .into_iter()
                .next()
        {
            tracing::info!(session = %req.session, subscription = %id, "adopting the subscription an earlier attempt created");
            return Ok(Grant {
                id,
                lease_until: Some(req.until),
                confirmed: !self.await_allocation,
            });
        }
        let references = self
            .references
            .get(&req.qos_profile)
            .cloned()
            .unwrap_or_else(|| vec![req.qos_profile.clone()]);
        let (reference, alternatives) = references.split_first().ok_or_else(|| {
            NetworkError::Refused(format!("no QoS reference for {}", req.qos_profile))
        })?;
        let address = ue_address(&req.device);
        let body = Subscription {
            notification_destination: self.callbacks.url(req.session),
            ue_ipv4_addr: address.clone().filter(|a| !a.contains(':')),
            ue_ipv6_addr: address.filter(|a| a.contains(':')),
            gpsi: match &req.device {
                Device::PhoneNumber(p) => {
                    Some(format!("msisdn-{}", p.as_str().trim_start_matches('+')))
                }
                _ => None,
            },
            flow_info: flow_infos(&req.device, &req.flow),
            qos_reference: reference,
            alt_qos_references: alternatives,
            qos_duration: self.seconds_until(req.until),
            request_test_notification: self.request_test_notification,
            extra: &self.extra_fields,
        };
        tracing::debug!(session = %req.session, uncertain = req.uncertain, "creating the subscription");
        let response = self
            .send(self.http.post(&self.collection).json(&body))
            .await?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(self.failure("creating the subscription", response).await);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(subscription_id);
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let id = location
            .or_else(|| {
                answer
                    .get("self")
                    .and_then(Value::as_str)
                    .map(subscription_id)
            })
            .filter(|id| !id.is_empty())
            .ok_or_else(|| NetworkError::Retryable("the NEF's 201 named no subscription".into()))?;
        Ok(Grant {
            lease_until: Some(self.lease(&answer, req.until, body.qos_duration)),
            id,
            confirmed: !self.await_allocation,
        })
    }

    async fn renew(&self, grant: &GrantRef, until: DateTime<Utc>) -> Result<Grant, NetworkError> {
        let Some(id) = grant.grant_id.clone() else {
            return Err(NetworkError::Refused("no subscription to renew".into()));
        };
        let asked_secs = self.seconds_until(until);
        let patch = serde_json::json!({ "qosDuration": asked_secs });
        let response = self
            .send(
                self.http
                    .patch(self.member(&id))
                    .header(header::CONTENT_TYPE, "application/merge-patch+json")
                    .body(patch.to_string()),
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.failure("renewing the subscription", response).await);
        }
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        Ok(Grant {
            lease_until: Some(self.lease(&answer, until, asked_secs)),
            id,
            confirmed: true,
        })
    }

    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError> {
        let mut ids: Vec<String> = grant.grant_id.iter().cloned().collect();
        // A search lists the UE's subscriptions, or all of ours for a UE known by phone number
        // only: done only when an attempt's outcome was lost.
        if grant.search || ids.is_empty() {
            for id in self.find_ours(grant.session, grant.device.as_ref()).await? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        tracing::debug!(session = %grant.session, ?ids, "deleting subscriptions");
        for id in ids {
            let response = self.send(self.http.delete(self.member(&id))).await?;
            if !(response.status().is_success() || response.status() == StatusCode::NOT_FOUND) {
                return Err(self.failure("deleting the subscription", response).await);
            }
        }
        Ok(())
    }

    /// A GET of a subscription that does not exist: any answer but 401/403 or a 5xx means
    /// the NEF is there and takes our token (a 404 is the expected one).
    async fn check(&self) -> Result<(), NetworkError> {
        let response = self
            .send(self.http.get(self.member("qod-reachability-check")))
            .await?;
        match response.status().as_u16() {
            401 | 403 => Err(NetworkError::Refused(format!(
                "the NEF refused this server's credentials ({})",
                response.status()
            ))),
            500..=599 => Err(self.failure("reachability check", response).await),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subscription_id;

    #[test]
    fn subscription_ids_are_taken_from_uris_or_bare_ids() {
        assert_eq!(
            subscription_id("https://nef/3gpp-as-session-with-qos/v1/as1/subscriptions/ab12"),
            "ab12"
        );
        assert_eq!(subscription_id("https://nef/x/subscriptions/42/"), "42");
        assert_eq!(subscription_id("5f0c1e"), "5f0c1e");
    }
}
