//! The recorded inputs, as they are stored and exported (format version 1: fields are only
//! ever added, with defaults, so an older history still reads).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::network::{Grant, NetworkError};
use crate::notify::sink_client::Outcome;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// A request of an API facade that may change state, and the HTTP status it was answered.
    Command {
        api: String,
        op: String,
        client: String,
        /// The device a three-legged token spoke for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<Value>,
        /// The request body, secrets replaced by stand-ins (`REDACTEDxxx`, as long).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    /// What the network answered to `op` (provision, renew, release).
    Network { op: String, answer: NetworkAnswer },
    /// A notification the network posted to the callback route.
    Callback { body: Value },
    /// What a sink answered to the delivery of `event`.
    Sink { event: Uuid, answer: SinkAnswer },
    /// A timer job ran (expiry, grant renewal, purge), due at `due_ms`.
    Timer { job: String, due_ms: i64 },
    /// The server started with these lifecycle settings (a replay runs with them).
    Started {
        settings: super::format::LifecycleSettings,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkAnswer {
    Granted {
        grant: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_until_ms: Option<i64>,
        confirmed: bool,
    },
    Released,
    Refused {
        reason: String,
    },
    Unavailable {
        reason: String,
    },
    Busy {
        reason: String,
        retry_after_ms: u64,
    },
}

impl NetworkAnswer {
    pub fn of_grant(answer: &Result<Grant, NetworkError>) -> Self {
        match answer {
            Ok(g) => Self::Granted {
                grant: g.id.clone(),
                lease_until_ms: g.lease_until.map(|l| l.timestamp_millis()),
                confirmed: g.confirmed,
            },
            Err(e) => Self::of_error(e),
        }
    }

    pub fn of_release(answer: &Result<(), NetworkError>) -> Self {
        match answer {
            Ok(()) => Self::Released,
            Err(e) => Self::of_error(e),
        }
    }

    fn of_error(e: &NetworkError) -> Self {
        match e {
            NetworkError::Refused(reason) => Self::Refused {
                reason: reason.clone(),
            },
            NetworkError::Retryable(reason) => Self::Unavailable {
                reason: reason.clone(),
            },
            NetworkError::Busy {
                reason,
                retry_after,
            } => Self::Busy {
                reason: reason.clone(),
                retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }

    /// The answer as the network port gives it (a replay answering as recorded).
    pub fn to_grant(&self) -> Result<Grant, NetworkError> {
        match self {
            Self::Granted {
                grant,
                lease_until_ms,
                confirmed,
            } => Ok(Grant {
                id: grant.clone(),
                lease_until: lease_until_ms.and_then(chrono::DateTime::from_timestamp_millis),
                confirmed: *confirmed,
            }),
            Self::Released => Err(NetworkError::Refused(
                "recorded a release where a grant was asked for".into(),
            )),
            other => Err(other.to_error()),
        }
    }

    pub fn to_release(&self) -> Result<(), NetworkError> {
        match self {
            Self::Released | Self::Granted { .. } => Ok(()),
            other => Err(other.to_error()),
        }
    }

    fn to_error(&self) -> NetworkError {
        match self {
            Self::Refused { reason } => NetworkError::Refused(reason.clone()),
            Self::Busy {
                reason,
                retry_after_ms,
            } => NetworkError::Busy {
                reason: reason.clone(),
                retry_after: std::time::Duration::from_millis(*retry_after_ms),
            },
            Self::Unavailable { reason } => NetworkError::Retryable(reason.clone()),
            Self::Granted { .. } | Self::Released => {
                NetworkError::Retryable("recorded answer does not fit".into())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkAnswer {
    Delivered,
    Retry {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Gone,
    Permanent {
        error: String,
        refused: bool,
    },
}

impl SinkAnswer {
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Delivered => Self::Delivered,
            Outcome::Retry { error, retry_after } => Self::Retry {
                error: error.clone(),
                retry_after_ms: retry_after
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            },
            Outcome::Gone => Self::Gone,
            Outcome::Permanent { error, refused } => Self::Permanent {
                error: error.clone(),
                refused: *refused,
            },
        }
    }

    pub fn to_outcome(&self) -> Outcome {
        match self {
            Self::Delivered => Outcome::Delivered,
            Self::Retry {
                error,
                retry_after_ms,
            } => Outcome::Retry {
                error: error.clone(),
                retry_after: retry_after_ms.map(std::time::Duration::from_millis),
            },
            Self::Gone => Outcome::Gone,
            Self::Permanent { error, refused } => Outcome::Permanent {
                error: error.clone(),
                refused: *refused,
            },
        }
    }
}

/// Field names whose values are secrets wherever they appear in a request body (the sink
/// credential's secret and tokens, v0's notification token).
const SECRET_FIELDS: &[&str] = &[
    "secret",
    "accessToken",
    "refreshToken",
    "notificationAuthToken",
];

pub const REDACTED: &str = "REDACTED";

/// A secret's stand-in: `REDACTED`, padded with `x` to the secret's length so that a replay's
/// request passes the same length checks (v0 asks 20 to 256 characters of a token).
fn stand_in(secret: &str) -> String {
    let len = secret.chars().count();
    let mut s: String = REDACTED.chars().take(len).collect();
    s.extend(std::iter::repeat_n('x', len.saturating_sub(REDACTED.len())));
    s
}

/// `body` with every secret replaced by its stand-in (the shape kept: a replay still sends a
/// credential).
pub fn redacted(mut body: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if let (true, Some(secret)) = (SECRET_FIELDS.contains(&k.as_str()), v.as_str())
                    {
                        *v = Value::String(stand_in(secret));
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut body);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth_and_the_shape_stays() {
        let body = serde_json::json!({
            "sink": "https://x.example/cb",
            "sinkCredential": {"credentialType": "ACCESSTOKEN", "accessToken": "s3c",
                               "accessTokenType": "bearer"},
            "webhook": {"notificationUrl": "https://x", "notificationAuthToken": "t0ken-of-20-chars!!!"},
            "list": [{"refreshToken": "rr"}],
        });
        let out = redacted(body).to_string();
        for secret in ["s3c", "t0ken", "\"rr\""] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("\"accessTokenType\":\"bearer\""), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 1, "{out}");
        assert!(out.contains("\"REDACTEDxxxxxxxxxxxx\""), "{out}");
        assert!(out.contains("\"RED\""), "{out}");
    }

    #[test]
    fn every_answer_goes_back_to_what_the_port_gave() {
        let grant = Grant {
            id: "g-1".into(),
            lease_until: chrono::DateTime::from_timestamp_millis(1_900_000_000_000),
            confirmed: true,
        };
        assert_eq!(
            NetworkAnswer::of_grant(&Ok(grant.clone()))
                .to_grant()
                .unwrap(),
            grant
        );
        let busy = NetworkError::Busy {
            reason: "429".into(),
            retry_after: std::time::Duration::from_secs(3),
        };
        let back = NetworkAnswer::of_grant(&Err(busy)).to_grant().unwrap_err();
        assert_eq!(back.retry_after(), Some(std::time::Duration::from_secs(3)));
        let answer = SinkAnswer::Retry {
            error: "503".into(),
            retry_after_ms: Some(1500),
        };
        assert_eq!(SinkAnswer::of(&answer.to_outcome()), answer);
    }
}
