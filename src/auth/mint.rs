//! Minting tokens with the HS256 key this server verifies in development mode (or a configured
//! shared secret): what `qod serve` prints at start and `qod token issue` hands out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Map, Value, json};

use super::verifier::ClaimRules;
use crate::domain::PhoneNumber;

/// Issuer of development tokens when none is configured.
pub const DEV_ISSUER: &str = "qod-dev";

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub client: String,
    pub scopes: Vec<String>,
    /// Makes the token three-legged: it speaks for this device only.
    pub device_phone: Option<String>,
    pub ttl: Duration,
}

pub fn mint_hs256(
    secret: &[u8],
    rules: &ClaimRules,
    request: &TokenRequest,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !request.client.is_empty(),
        "the client id must not be empty"
    );
    let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX / 2);
    anyhow::ensure!(ttl > 0, "the token lifetime must be at least a second");
    let mut claims = Map::new();
    claims.insert(
        "iss".into(),
        json!(rules.issuer.as_deref().unwrap_or(DEV_ISSUER)),
    );
    claims.insert("sub".into(), json!(request.client));
    claims.insert(rules.client_claim.clone(), json!(request.client));
    if let Some(aud) = &rules.audience {
        claims.insert("aud".into(), json!(aud));
    }
    claims.insert("iat".into(), json!(now.timestamp()));
    claims.insert("exp".into(), json!(now.timestamp().saturating_add(ttl)));
    claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    claims.insert("scope".into(), json!(request.scopes.join(" ")));
    if let Some(phone) = &request.device_phone {
        PhoneNumber::parse(phone).map_err(|e| anyhow::anyhow!(e.message))?;
        claims.insert(rules.device_claim.clone(), Value::String(phone.clone()));
    }
    Ok(encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}
