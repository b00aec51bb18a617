//! Token verification: signature against the configured keys, then the claims, with time from
//! the injected clock (the JWT library's own time checks are off: they read the system clock,
//! and they skip `exp`/`nbf` claims of the wrong JSON type).

use std::collections::BTreeSet;
use std::time::Duration;

use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::Caller;
use super::keys::KeySet;
use crate::clock::SharedClock;
use crate::domain::{ClientId, Device, PhoneNumber};

/// Why a request is not authenticated. The reason goes to logs and metrics, never to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid(&'static str),
    Expired,
}

impl Refusal {
    /// Bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(_) => "invalid",
            Self::Expired => "expired",
        }
    }
}

/// What a valid token must say, and where the client and device are found in it.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    /// Claim naming the client; `azp` then `sub` are tried when it is absent.
    pub client_claim: String,
    /// Claim carrying the device of a three-legged token (an E.164 phone number).
    pub device_claim: String,
}

pub struct Verifier {
    keys: KeySet,
    rules: ClaimRules,
    clock: SharedClock,
}

/// Longest client id accepted; it is stored with every session.
const MAX_CLIENT_ID: usize = 256;

impl Verifier {
    pub fn new(keys: KeySet, rules: ClaimRules, clock: SharedClock) -> Self {
        Self { keys, rules, clock }
    }

    pub async fn verify(&self, token: &str) -> Result<Caller, Refusal> {
        let header = decode_header(token).map_err(|_| Refusal::Invalid("malformed token"))?;
        let key = self
            .keys
            .key_for(header.alg, header.kid.as_deref())
            .await
            .ok_or(Refusal::Invalid("no key for this token"))?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|_| Refusal::Invalid("bad signature or claims"))?
            .claims;
        self.check_claims(&claims)
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<Caller, Refusal> {
        let now = self.clock.now().timestamp();
        let leeway = i64::try_from(self.rules.leeway.as_secs()).unwrap_or(0);
        let time = |name: &'static str| -> Result<Option<i64>, Refusal> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                    .map(Some)
                    .ok_or(Refusal::Invalid("time claim is not a number")),
            }
        };
        let exp = time("exp")?.ok_or(Refusal::Invalid("no exp claim"))?;
        if now > exp.saturating_add(leeway) {
            return Err(Refusal::Expired);
        }
        if let Some(nbf) = time("nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(Refusal::Invalid("token not yet valid"));
        }
        if let Some(issuer) = &self.rules.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(Refusal::Invalid("wrong issuer"));
        }
        if let Some(audience) = &self.rules.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(Refusal::Invalid("wrong audience"));
            }
        }
        // The first of these claims that is present decides; one of the wrong type is a bad
        // token, never a reason to look at the next.
        let client = [self.rules.client_claim.as_str(), "azp", "sub"]
            .into_iter()
            .find_map(|name| claims.get(name))
            .ok_or(Refusal::Invalid("no client identity"))?
            .as_str()
            .filter(|c| !c.is_empty() && c.len() <= MAX_CLIENT_ID)
            .ok_or(Refusal::Invalid("bad client identity"))?;
        // Present means three-legged: a null is not a way to be two-legged.
        let device = match claims.get(&self.rules.device_claim) {
            None => None,
            Some(Value::String(phone)) => Some(Device::PhoneNumber(
                PhoneNumber::parse(phone).map_err(|_| Refusal::Invalid("bad device claim"))?,
            )),
            Some(_) => return Err(Refusal::Invalid("bad device claim")),
        };
        Ok(Caller::new(
            ClientId(client.to_owned()),
            scopes_of(claims),
            device,
        ))
    }
}

/// `scope` as a space-separated string (RFC 8693), or `scp` as a list or a string.
fn scopes_of(claims: &Map<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            // Space-separated (RFC 6749 §3.3): other whitespace is part of a (bad) scope.
            Some(Value::String(s)) => {
                out.extend(s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned));
            }
            Some(Value::Array(list)) => {
                out.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::clock::SystemClock;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            client_claim: "client_id".into(),
            device_claim: "phone_number".into(),
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(
            KeySet::shared_secret(&[1u8; 32]),
            rules(),
            Arc::new(SystemClock),
        )
    }

    fn sign(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(&[1u8; 32]),
        )
        .unwrap()
    }

    fn verify(token: &str) -> Result<Caller, Refusal> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(verifier().verify(token))
    }

    #[test]
    fn claims_of_the_wrong_type_are_refused_not_skipped() {
        let exp = chrono::Utc::now().timestamp() + 600;
        assert!(verify(&sign(&json!({"client_id": "a", "exp": exp}))).is_ok());
        for claims in [
            json!({"client_id": "a", "exp": exp.to_string()}),
            json!({"client_id": "a", "exp": exp, "nbf": "0"}),
            json!({"client_id": "a", "exp": null}),
            json!({"client_id": 7, "exp": exp}),
            json!({"client_id": "a", "exp": exp, "phone_number": 33612345678_i64}),
            json!({"client_id": "a", "exp": exp, "phone_number": "0612"}),
            json!({"client_id": 7, "sub": "someone", "exp": exp}),
            json!({"client_id": null, "sub": "someone", "exp": exp}),
            json!({"azp": ["x"], "sub": "someone", "exp": exp}),
            json!({"client_id": "a", "exp": exp, "phone_number": null}),
        ] {
            assert!(verify(&sign(&claims)).is_err(), "{claims}");
        }
    }

    #[test]
    fn the_client_falls_back_to_azp_then_sub_and_scopes_read_both_forms() {
        let exp = chrono::Utc::now().timestamp() + 600;
        let c = verify(&sign(
            &json!({"azp": "x", "sub": "y", "exp": exp, "scope": "a b"}),
        ))
        .unwrap();
        assert_eq!(c.client.as_str(), "x");
        assert!(c.has_scope("a") && c.has_scope("b") && !c.has_scope("c"));
        let c = verify(&sign(&json!({"sub": "y", "exp": exp, "scp": ["c"]}))).unwrap();
        assert_eq!(c.client.as_str(), "y");
        assert!(c.has_scope("c"));
        // Only the ASCII space separates scopes.
        let c = verify(&sign(
            &json!({"sub": "y", "exp": exp, "scope": "a\u{a0}b\u{2003}c d"}),
        ))
        .unwrap();
        assert!(c.has_scope("d") && !c.has_scope("a") && !c.has_scope("b") && !c.has_scope("c"));
        assert!(c.has_scope("a\u{a0}b\u{2003}c"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::api::fuzzing::cases()))]

        #[test]
        fn any_string_is_refused_without_panicking(token in ".{0,600}") {
            prop_assert!(verify(&token).is_err());
        }

        #[test]
        fn any_claims_under_a_valid_signature_verify_or_are_refused(
            claims in crate::api::fuzzing::json_value()
        ) {
            let _ = verify(&sign(&claims));
        }
    }
}
