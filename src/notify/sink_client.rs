//! The HTTP client that posts CloudEvents to consumers' sinks, and how it classifies answers.
//! Host names are resolved by our own resolver, which refuses non-public addresses; the
//! connection then goes to exactly the addresses it checked, so DNS rebinding cannot slip an
//! internal address in between. Redirects are never followed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::address_policy::{SinkPolicy, non_public_reason};
use crate::config::NotifySettings;

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// Worth another attempt; the sink may have said when.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// 410 Gone: the consumer asks us to stop sending to this sink.
    Gone,
    /// Will never succeed as is (4xx, bad URL, refused address).
    Permanent {
        error: String,
        refused: bool,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

struct CheckedResolver {
    allow_private: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let refused = addrs
                .iter()
                .find_map(|a| non_public_reason(a.ip()).map(|w| (a.ip(), w)))
                .filter(|_| !allow_private);
            if let Some((ip, why)) = refused {
                return Err(Box::new(Refused(format!(
                    "sink host {host} resolves to {ip}, a {why} address (--allow-private-sinks)"
                ))) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct SinkClient {
    http: reqwest::Client,
    policy: SinkPolicy,
}

impl SinkClient {
    pub fn new(settings: &NotifySettings) -> anyhow::Result<Arc<Self>> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .no_proxy()
            .user_agent(concat!("qod/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(CheckedResolver {
                allow_private: settings.allow_private_sinks,
            }));
        if let Some(path) = &settings.sink_ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading sink CA file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing sink CA file {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "sink CA file {} holds no certificate",
                path.display()
            );
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Arc::new(Self {
            http: builder.build().context("building the sink HTTP client")?,
            policy: SinkPolicy {
                allow_insecure: settings.allow_insecure_sinks,
                allow_private: settings.allow_private_sinks,
            },
        }))
    }

    fn check_url(&self, sink: &str) -> Result<Url, String> {
        self.policy.check(sink)
    }

    /// Per-sink key for concurrency limits: scheme, host and port.
    pub fn sink_key(sink: &str) -> String {
        Url::parse(sink)
            .ok()
            .map(|u| {
                format!(
                    "{}://{}:{}",
                    u.scheme(),
                    u.host_str().unwrap_or(""),
                    u.port_or_known_default().unwrap_or(0)
                )
            })
            .unwrap_or_else(|| sink.to_owned())
    }
}

#[async_trait::async_trait]
impl super::CallbackSink for SinkClient {
    async fn post(
        &self,
        sink: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Outcome {
        let url = match self.check_url(sink) {
            Ok(u) => u,
            Err(error) => {
                return Outcome::Permanent {
                    error,
                    refused: true,
                };
            }
        };
        let mut req = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/cloudevents+json")
            .body(body);
        if let Some(token) = bearer {
            // A token no header can carry fails every attempt alike: give up at once.
            match reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(value) if super::address_policy::is_header_safe_token(token) => {
                    req = req.header(AUTHORIZATION, value);
                }
                _ => {
                    return Outcome::Permanent {
                        error: "the sink token cannot be sent in a header (control characters)"
                            .into(),
                        refused: false,
                    };
                }
            }
        }
        match req.send().await {
            Ok(resp) => classify(resp.status(), resp.headers(), now),
            Err(e) => classify_error(&e),
        }
    }
}

fn classify(status: StatusCode, headers: &HeaderMap, now: DateTime<Utc>) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    if status == StatusCode::GONE {
        return Outcome::Gone;
    }
    let retryable = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    let error = format!("sink answered {status}");
    if retryable {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        Outcome::Retry { error, retry_after }
    } else {
        Outcome::Permanent {
            error,
            refused: false,
        }
    }
}

fn classify_error(e: &reqwest::Error) -> Outcome {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Outcome::Permanent {
                error: refused.0.clone(),
                refused: true,
            };
        }
        source = err.source();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Outcome::Retry {
        error: format!("sink {kind}: {}", error_chain(e)),
        retry_after: None,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn answers_are_classified_as_the_retry_policy_needs() {
        let now = Utc::now();
        let h = HeaderMap::new();
        assert!(matches!(
            classify(StatusCode::NO_CONTENT, &h, now),
            Outcome::Delivered
        ));
        assert!(matches!(classify(StatusCode::GONE, &h, now), Outcome::Gone));
        for retry in [408, 429, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(retry).unwrap();
            assert!(
                matches!(classify(s, &h, now), Outcome::Retry { .. }),
                "{retry}"
            );
        }
        for permanent in [400, 401, 403, 404, 413] {
            let s = StatusCode::from_u16(permanent).unwrap();
            assert!(
                matches!(classify(s, &h, now), Outcome::Permanent { .. }),
                "{permanent}"
            );
        }
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let settings = |insecure, private| NotifySettings {
            allow_insecure_sinks: insecure,
            allow_private_sinks: private,
            sink_ca_file: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            per_sink_concurrency: 1,
            public_url: Some("http://x".into()),
        };
        let strict = SinkClient::new(&settings(false, false)).unwrap();
        assert!(strict.check_url("http://example.com/cb").is_err());
        assert!(strict.check_url("https://10.0.0.1/cb").is_err());
        assert!(strict.check_url("https://[::1]:8443/cb").is_err());
        assert!(strict.check_url("https://example.com/cb").is_ok());
        let lax = SinkClient::new(&settings(true, true)).unwrap();
        assert!(lax.check_url("http://127.0.0.1:9/cb").is_ok());
        assert!(lax.check_url("ftp://example.com/cb").is_err());
    }
}
