//! The QoS profile catalogue: operator data, shaped like the qos-profiles API's `QosProfile`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProfileStatus {
    Active,
    Inactive,
    Deprecated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeUnit {
    Days,
    Hours,
    Minutes,
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

/// The spec's `Duration` object: a value and a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeSpan {
    pub value: u32,
    pub unit: TimeUnit,
}

impl TimeSpan {
    pub const fn seconds(value: u32) -> Self {
        Self {
            value,
            unit: TimeUnit::Seconds,
        }
    }

    pub const fn millis(value: u32) -> Self {
        Self {
            value,
            unit: TimeUnit::Milliseconds,
        }
    }

    /// Whole seconds, rounding sub-second spans down.
    pub fn as_secs(&self) -> i64 {
        let v = i64::from(self.value);
        match self.unit {
            TimeUnit::Days => v * 86_400,
            TimeUnit::Hours => v * 3_600,
            TimeUnit::Minutes => v * 60,
            TimeUnit::Seconds => v,
            TimeUnit::Milliseconds => v / 1_000,
            TimeUnit::Microseconds => v / 1_000_000,
            TimeUnit::Nanoseconds => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateUnit {
    #[serde(rename = "bps")]
    Bps,
    #[serde(rename = "kbps")]
    Kbps,
    #[serde(rename = "Mbps")]
    Mbps,
    #[serde(rename = "Gbps")]
    Gbps,
    #[serde(rename = "Tbps")]
    Tbps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub value: u32,
    pub unit: RateUnit,
}

const fn mbps(value: u32) -> Option<Rate> {
    Some(Rate {
        value,
        unit: RateUnit::Mbps,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QosProfile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: ProfileStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_min_upstream_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upstream_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upstream_burst_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_min_downstream_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downstream_rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downstream_burst_rate: Option<Rate>,
    pub min_duration: TimeSpan,
    pub max_duration: TimeSpan,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_delay_budget: Option<TimeSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<TimeSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_error_loss_rate: Option<u8>,
    /// The devices this profile is offered to; `None`: every device. Configuration only,
    /// never shown in the API.
    #[serde(default, skip_serializing)]
    pub devices: Option<super::DeviceRules>,
}

impl QosProfile {
    /// Whether `device` may use this profile; a restricted profile is offered to no one when
    /// no device is named.
    pub fn offered_to(&self, device: Option<&super::Device>) -> bool {
        match (&self.devices, device) {
            (None, _) => true,
            (Some(rules), Some(device)) => rules.matches(device),
            (Some(_), None) => false,
        }
    }

    pub fn duration_range(&self) -> std::ops::RangeInclusive<i64> {
        self.min_duration.as_secs().max(1)..=self.max_duration.as_secs()
    }
}

/// Profiles by name, in the order the operator listed them. Shared, not copied: the API's
/// state (which holds it) is cloned several times for every request.
#[derive(Debug, Clone)]
pub struct Catalogue {
    profiles: std::sync::Arc<[QosProfile]>,
}

impl Catalogue {
    pub fn new(profiles: Vec<QosProfile>) -> anyhow::Result<Self> {
        for (i, p) in profiles.iter().enumerate() {
            let name_ok = (3..=256).contains(&p.name.len())
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            anyhow::ensure!(
                name_ok,
                "QoS profile name {:?} does not match the spec's pattern: 3 to 256 letters, \
                 digits, '_', '.' or '-'",
                p.name
            );
            anyhow::ensure!(
                !profiles[..i].iter().any(|q| q.name == p.name),
                "QoS profile {} is listed twice",
                p.name
            );
            let range = p.duration_range();
            anyhow::ensure!(
                range.start() <= range.end(),
                "QoS profile {}: minDuration exceeds maxDuration",
                p.name
            );
        }
        Ok(Self {
            profiles: profiles.into(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&QosProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    pub fn all(&self) -> &[QosProfile] {
        &self.profiles
    }

    /// The profiles with this name and this status, each criterion only when given, offered
    /// to `device` (without one, only the unrestricted profiles).
    pub fn matching(
        &self,
        name: Option<&str>,
        status: Option<ProfileStatus>,
        device: Option<&super::Device>,
    ) -> Vec<QosProfile> {
        self.profiles
            .iter()
            .filter(|p| name.is_none_or(|n| p.name == n))
            .filter(|p| status.is_none_or(|s| p.status == s))
            .filter(|p| p.offered_to(device))
            .cloned()
            .collect()
    }

    /// The four classic profiles: E(xtreme low latency), S, M, L (throughput classes).
    pub fn builtin() -> Self {
        let profile =
            |name: &str, description: &str, up, down, delay_ms, jitter_ms, priority, loss| {
                QosProfile {
                    name: name.to_owned(),
                    description: Some(description.to_owned()),
                    status: ProfileStatus::Active,
                    target_min_upstream_rate: up,
                    max_upstream_rate: None,
                    max_upstream_burst_rate: None,
                    target_min_downstream_rate: down,
                    max_downstream_rate: None,
                    max_downstream_burst_rate: None,
                    min_duration: TimeSpan::seconds(1),
                    max_duration: TimeSpan::seconds(86_400),
                    priority: Some(priority),
                    packet_delay_budget: Some(TimeSpan::millis(delay_ms)),
                    jitter: Some(TimeSpan::millis(jitter_ms)),
                    packet_error_loss_rate: Some(loss),
                    devices: None,
                }
            };
        Self {
            profiles: std::sync::Arc::from([
                profile(
                    "QOS_E",
                    "Low latency and jitter for interactive and real-time flows",
                    mbps(2),
                    mbps(5),
                    10,
                    5,
                    10,
                    3,
                ),
                profile(
                    "QOS_S",
                    "Prioritised throughput, small (about 1 Mbps down)",
                    mbps(1),
                    mbps(1),
                    100,
                    30,
                    40,
                    6,
                ),
                profile(
                    "QOS_M",
                    "Prioritised throughput, medium (about 10 Mbps down)",
                    mbps(2),
                    mbps(10),
                    100,
                    30,
                    40,
                    6,
                ),
                profile(
                    "QOS_L",
                    "Prioritised throughput, large (about 50 Mbps down)",
                    mbps(5),
                    mbps(50),
                    100,
                    30,
                    40,
                    6,
                ),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_are_active_and_valid() {
        let c = Catalogue::builtin();
        let again = Catalogue::new(c.all().to_vec()).unwrap();
        for name in ["QOS_E", "QOS_S", "QOS_M", "QOS_L"] {
            let p = again.get(name).unwrap();
            assert_eq!(p.status, ProfileStatus::Active);
            assert_eq!(p.duration_range(), 1..=86_400);
        }
    }

    #[test]
    fn a_catalogue_with_bad_bounds_or_duplicates_is_refused() {
        let mut p = Catalogue::builtin().all()[0].clone();
        p.min_duration = TimeSpan::seconds(100);
        p.max_duration = TimeSpan::seconds(10);
        assert!(Catalogue::new(vec![p]).is_err());
        let q = Catalogue::builtin().all()[0].clone();
        assert!(Catalogue::new(vec![q.clone(), q]).is_err());
    }

    #[test]
    fn time_spans_convert_to_seconds() {
        assert_eq!(
            TimeSpan {
                value: 2,
                unit: TimeUnit::Hours
            }
            .as_secs(),
            7_200
        );
        assert_eq!(TimeSpan::millis(1_500).as_secs(), 1);
    }
}
