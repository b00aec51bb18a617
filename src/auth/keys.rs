//! The keys tokens are checked against: one shared HS256 secret (development), or a JWKS of
//! RS256/ES256 public keys from a file and/or a URL. A fetched JWKS is cached; it is fetched
//! again when it is older than the refresh interval, or when a token names a key it lacks
//! (the provider rotated keys), at most once per cool-down.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use crate::clock::SharedClock;

const REFRESH_EVERY: Duration = Duration::from_secs(600);
const REFETCH_COOL_DOWN: Duration = Duration::from_secs(30);
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);
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
    clock: SharedClock,
    /// When the JWKS was last fetched and tried; also serialises fetches.
    times: Mutex<FetchTimes>,
}

#[derive(Default)]
struct FetchTimes {
    fetched: Option<DateTime<Utc>>,
    attempted: Option<DateTime<Utc>>,
    /// Last fetch caused by a token naming a key the cache lacked.
    for_unknown_key: Option<DateTime<Utc>>,
}

/// Why a fetch is wanted; each reason has its own pace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The cache is older than the refresh interval (or empty after a failure).
    Stale,
    /// A token names a key the cache lacks.
    UnknownKey,
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
    pub async fn jwks(
        document: Option<&str>,
        url: Option<String>,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
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
                clock,
                times: Mutex::new(FetchTimes::default()),
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
            && let Err(e) = remote.refresh(Want::Stale).await
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
        let found = pick(&remote.cache.read().await, alg, kid);
        let want = if found.is_none() {
            Want::UnknownKey
        } else {
            Want::Stale
        };
        if let Err(e) = remote.refresh(want).await {
            tracing::warn!(url = %remote.url, error = %format!("{e:#}"), "JWKS refresh failed");
        }
        pick(&remote.cache.read().await, alg, kid).or(found)
    }
}

impl Remote {
    /// Fetches the JWKS if `want` justifies it now: a stale cache once per refresh interval
    /// (failures retried after a short pause), an unknown key once per cool-down.
    async fn refresh(&self, want: Want) -> anyhow::Result<()> {
        // A periodic refresh already under way must not hold up tokens whose key is cached;
        // a token naming an unknown key waits for it.
        let mut times = match want {
            Want::Stale => match self.times.try_lock() {
                Ok(times) => times,
                Err(_) => return Ok(()),
            },
            Want::UnknownKey => self.times.lock().await,
        };
        let since = |t: Option<DateTime<Utc>>| t.map_or(Duration::MAX, |t| self.clock.since(t));
        let due = match want {
            Want::Stale => {
                since(times.fetched) > REFRESH_EVERY && since(times.attempted) > RETRY_FAILED_AFTER
            }
            Want::UnknownKey => since(times.for_unknown_key) > REFETCH_COOL_DOWN,
        };
        if !due {
            return Ok(());
        }
        times.attempted = Some(self.clock.now());
        if want == Want::UnknownKey {
            times.for_unknown_key = times.attempted;
        }
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
        times.fetched = Some(self.clock.now());
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
