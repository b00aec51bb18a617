//! The keys tokens are checked against: one shared HS256 secret (development), or a JWKS of
//! RS256/ES256 public keys from a file and/or a URL. A fetched JWKS is cached; it is fetched
//! again when it is older than the refresh interval, or when a token names a key it lacks
//! (the provider rotated keys), at most once per cool-down.

use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

const REFRESH_EVERY: Duration = Duration::from_secs(600);
const REFETCH_COOL_DOWN: Duration = Duration::from_secs(30);
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Clone)]
struct Entry {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

pub struct KeySet {
    secret: Option<DecodingKey>,
    fixed: Vec<Entry>,
    remote: Option<Remote>,
}

struct Remote {
    url: String,
    http: reqwest::Client,
    cache: RwLock<Vec<Entry>>,
    /// Last fetch attempt; also serialises fetches.
    attempted: Mutex<Option<Instant>>,
    fetched: RwLock<Option<Instant>>,
}

impl KeySet {
    /// HS256 with a shared secret. Only for development: whoever verifies can also mint.
    pub fn shared_secret(secret: &[u8]) -> Self {
        Self {
            secret: Some(DecodingKey::from_secret(secret)),
            fixed: Vec::new(),
            remote: None,
        }
    }

    /// Public keys from a JWKS document and/or a JWKS URL (fetched now; a failure is retried
    /// when a token arrives).
    pub async fn jwks(document: Option<&str>, url: Option<String>) -> anyhow::Result<Self> {
        let fixed = match document {
            Some(text) => parse_jwks(text)?,
            None => Vec::new(),
        };
        let remote = match url {
            None => None,
            Some(url) => Some(Remote {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?,
                url,
                cache: RwLock::new(Vec::new()),
                attempted: Mutex::new(None),
                fetched: RwLock::new(None),
            }),
        };
        anyhow::ensure!(
            !fixed.is_empty() || remote.is_some(),
            "the JWKS holds no RS256 or ES256 signing key"
        );
        let set = Self {
            secret: None,
            fixed,
            remote,
        };
        if let Some(remote) = &set.remote
            && let Err(e) = remote.refresh(Duration::ZERO).await
        {
            tracing::warn!(url = %remote.url, error = %format!("{e:#}"), "JWKS not fetched yet; tokens fail until it is");
        }
        Ok(set)
    }

    /// The key for a token's algorithm and key id, if this set holds one.
    pub async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Option<DecodingKey> {
        if let Some(secret) = &self.secret {
            return (alg == Algorithm::HS256).then(|| secret.clone());
        }
        if !matches!(alg, Algorithm::RS256 | Algorithm::ES256) {
            return None;
        }
        if let Some(found) = pick(&self.fixed, alg, kid) {
            return Some(found);
        }
        let remote = self.remote.as_ref()?;
        let stale = remote
            .fetched
            .read()
            .await
            .is_none_or(|t| t.elapsed() > REFRESH_EVERY);
        let found = pick(&remote.cache.read().await, alg, kid);
        if found.is_some() && !stale {
            return found;
        }
        if let Err(e) = remote.refresh(REFETCH_COOL_DOWN).await {
            tracing::warn!(url = %remote.url, error = %format!("{e:#}"), "JWKS refresh failed");
        }
        pick(&remote.cache.read().await, alg, kid).or(found)
    }
}

impl Remote {
    /// Fetches the JWKS unless another fetch happened within `cool_down`.
    async fn refresh(&self, cool_down: Duration) -> anyhow::Result<()> {
        let mut attempted = self.attempted.lock().await;
        if attempted.is_some_and(|t| t.elapsed() < cool_down) {
            return Ok(());
        }
        *attempted = Some(Instant::now());
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .context("fetching the JWKS")?
            .error_for_status()
            .context("fetching the JWKS")?;
        let body = response.bytes().await.context("reading the JWKS")?;
        anyhow::ensure!(body.len() <= MAX_JWKS_BYTES, "the JWKS is too large");
        let entries = parse_jwks(std::str::from_utf8(&body).context("JWKS is not UTF-8")?)?;
        *self.cache.write().await = entries;
        *self.fetched.write().await = Some(Instant::now());
        Ok(())
    }
}

/// With a key id, the key of that id and algorithm; without, the only key of the algorithm.
fn pick(entries: &[Entry], alg: Algorithm, kid: Option<&str>) -> Option<DecodingKey> {
    let mut candidates = entries
        .iter()
        .filter(|e| e.alg == alg && kid.is_none_or(|k| e.kid.as_deref() == Some(k)));
    let first = candidates.next()?;
    if kid.is_none() && candidates.next().is_some() {
        return None;
    }
    Some(first.key.clone())
}

/// The RS256 and ES256 signing keys of a JWKS document; other keys are skipped.
fn parse_jwks(text: &str) -> anyhow::Result<Vec<Entry>> {
    let set: JwkSet = serde_json::from_str(text).context("not a JWKS document")?;
    Ok(set.keys.iter().filter_map(entry).collect())
}

fn entry(jwk: &Jwk) -> Option<Entry> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    Some(Entry {
        kid: jwk.common.key_id.clone(),
        alg,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}
