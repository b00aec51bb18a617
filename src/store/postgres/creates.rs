//! Creates decided together inside a batch: a create costs the database a lock, its checks and
//! its inserts, and one statement each for a whole batch costs little more than for one.
//!
//! The checks are atomic across nodes as before: every create takes, for the transaction, an
//! advisory lock per owner (with a quota: the count must not race) or per owner and device key
//! (so that two creates naming one device meet), all of a batch's at once in key order, before
//! it reads what it is checked against. Within a batch the creates are decided in arrival
//! order, each against the live sessions read and the creates accepted before it.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::super::port::Created;
use super::sessions;
use crate::domain::{Flow, Session};

/// A create as the batch decides it.
pub(super) struct Create {
    pub session: Session,
    /// Every key the device is known by, the kept one first.
    pub keys: Vec<String>,
    /// The owner's most live sessions (0: no limit).
    pub quota: u64,
}

impl Create {
    pub fn new(session: Session, device_keys: Vec<String>, quota: u64) -> Self {
        let keys = super::super::device_keys_of(&session, device_keys);
        Self {
            session,
            keys,
            quota,
        }
    }

    /// The advisory locks this create takes: creates that could conflict take the same one.
    fn locks(&self) -> Vec<i64> {
        let owner = self.session.owner.as_str();
        if self.quota > 0 {
            vec![lock_key(&["owner", owner])]
        } else {
            self.keys
                .iter()
                .map(|k| lock_key(&["device", owner, k]))
                .collect()
        }
    }
}

/// Takes the creates' locks, reads what they are checked against, and decides each.
pub(super) async fn decide(
    c: &mut PgConnection,
    creates: &[&Create],
) -> anyhow::Result<Vec<Created>> {
    if creates.is_empty() {
        return Ok(Vec::new());
    }
    let mut locks: Vec<i64> = creates.iter().flat_map(|c| c.locks()).collect();
    locks.sort_unstable();
    locks.dedup();
    // Unnested in the order given: every batch takes its locks in key order, so no two wait
    // for each other in a cycle.
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::bigint[]) AS k")
        .bind(&locks)
        .execute(&mut *c)
        .await?;
    let mut quotas: Vec<(String, u64)> = creates
        .iter()
        .filter(|c| c.quota > 0)
        .map(|c| (c.session.owner.as_str().to_owned(), c.quota))
        .collect();
    quotas.sort();
    quotas.dedup_by(|a, b| a.0 == b.0);
    let mut live_counts = sessions::live_counts(c, &quotas).await?;
    let mut wanted: Vec<(String, String)> = creates
        .iter()
        .flat_map(|c| {
            let owner = c.session.owner.as_str();
            c.keys.iter().map(move |k| (owner.to_owned(), k.clone()))
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    // Only the flows are compared.
    let mut live: HashMap<(String, String), Vec<Flow>> = HashMap::new();
    for (owner, key, session) in sessions::live_for_devices(c, &wanted).await? {
        live.entry((owner, key)).or_default().push(session.flow);
    }
    let mut decided = Vec::with_capacity(creates.len());
    for create in creates {
        let s = &create.session;
        let owner = s.owner.as_str();
        let count = live_counts.get(owner).copied().unwrap_or(0);
        if create.quota > 0 && count >= create.quota {
            decided.push(Created::QuotaExceeded);
            continue;
        }
        let overlaps = create.keys.iter().any(|k| {
            live.get(&(owner.to_owned(), k.clone()))
                .is_some_and(|others| others.iter().any(|o| o.overlaps(&s.flow)))
        });
        if overlaps {
            decided.push(Created::Conflict);
            continue;
        }
        if create.quota > 0 {
            live_counts.insert(owner.to_owned(), count + 1);
        }
        for k in &create.keys {
            live.entry((owner.to_owned(), k.clone()))
                .or_default()
                .push(s.flow.clone());
        }
        decided.push(Created::Stored);
    }
    Ok(decided)
}

/// A stable 64-bit key for an advisory lock.
fn lock_key(parts: &[&str]) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}
