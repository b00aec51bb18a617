//! What the fake NEF does beyond the contract: delays, faults and event timing, from a TOML
//! file (`qod fake-nef --behaviour FILE`). Every field is optional.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// SUCCESSFUL_RESOURCES_ALLOCATION is posted this long after a 201 (none when absent).
    pub allocation_delay_ms: Option<u64>,
    /// Post every event twice.
    #[serde(default)]
    pub duplicate_events: bool,
    /// Post the allocation event before answering the POST.
    #[serde(default)]
    pub early_events: bool,
    /// The first N creations answer only after `slow_ms` (beyond the client's timeout); the
    /// subscription exists anyway.
    #[serde(default)]
    pub slow_posts: u32,
    #[serde(default)]
    pub slow_ms: u64,
    /// Every creation answers this long after it was made (a network that takes its time:
    /// jobs are in flight when a node stops).
    #[serde(default)]
    pub latency_ms: u64,
    /// The slow creations make their subscription only after the delay, when the client has
    /// given up (a retry that looks first finds nothing).
    #[serde(default)]
    pub slow_posts_create_late: bool,
    /// UE addresses or GPSIs the NEF does not know: creating for them answers 404.
    #[serde(default)]
    pub unknown_ues: Vec<String>,
    /// QoS references the NEF accepts; any when empty.
    #[serde(default)]
    pub qos_references: Vec<String>,
    /// Subscription fields this NEF requires beyond the contract (`dnn`, `snssai`...): a
    /// creation without one answers 400.
    #[serde(default)]
    pub required_fields: Vec<String>,
    /// Require this bearer token (the OAuth2 token endpoint below issues it).
    pub require_token: Option<String>,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// The first `times` requests of `method` answer `status` (with `Retry-After` when given).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub method: String,
    pub status: u16,
    pub retry_after_secs: Option<u64>,
    pub times: u32,
}

impl Behaviour {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
