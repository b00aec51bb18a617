//! The exported history: JSON Lines, a header line, then one line per input or transition in
//! time order. Version 1; a later version only adds fields (with defaults) or record kinds, so
//! a history exported by an older build still reads (`tests/fixtures/` holds one to prove it).

use serde::{Deserialize, Serialize};

use super::input::Input;
use crate::store::{HistoryEntry, HistoryRow};

pub const FORMAT: &str = "qod-history";
pub const VERSION: u32 = 1;

/// The first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The build that wrote the file (`qod 0.1.0`).
    pub build: String,
    /// The window exported, `[since_ms, until_ms)`.
    pub since_ms: i64,
    pub until_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The settings the lifecycle ran with: a replay runs with them too.
    pub settings: LifecycleSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleSettings {
    pub provision_timeout_ms: u64,
    pub grant_lifetime_ms: u64,
    pub retention_ms: u64,
    pub max_active_sessions: u64,
    /// The sink policy, which decides whether a create is accepted.
    #[serde(default)]
    pub allow_insecure_sinks: bool,
    #[serde(default)]
    pub allow_private_sinks: bool,
}

impl LifecycleSettings {
    pub fn of(settings: &crate::config::Settings) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            provision_timeout_ms: ms(settings.provision_timeout),
            grant_lifetime_ms: ms(settings.grant_lifetime),
            retention_ms: ms(settings.retention),
            max_active_sessions: settings.auth.max_active_sessions,
            allow_insecure_sinks: settings.notify.allow_insecure_sinks,
            allow_private_sinks: settings.notify.allow_private_sinks,
        }
    }

    /// These settings over `settings` (a replay runs as the recording server did).
    pub fn apply(&self, settings: &mut crate::config::Settings) {
        let d = std::time::Duration::from_millis;
        settings.provision_timeout = d(self.provision_timeout_ms);
        settings.grant_lifetime = d(self.grant_lifetime_ms);
        settings.retention = d(self.retention_ms);
        settings.auth.max_active_sessions = self.max_active_sessions;
        settings.notify.allow_insecure_sinks = self.allow_insecure_sinks;
        settings.notify.allow_private_sinks = self.allow_private_sinks;
    }
}

/// Every line after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Line {
    Input {
        at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(flatten)]
        input: Input,
    },
    Transition {
        at_ms: i64,
        session: String,
        revision: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        to: String,
        reason: String,
    },
}

impl Line {
    /// A stored row as a line; an input this build cannot read is an error naming it.
    pub fn of_row(row: HistoryRow) -> anyhow::Result<Self> {
        Ok(match row.entry {
            HistoryEntry::Input(body) => Self::Input {
                at_ms: row.at_ms,
                session: row.session,
                input: serde_json::from_str(&body).map_err(|e| {
                    anyhow::anyhow!("a recorded input at {} ms does not read: {e}", row.at_ms)
                })?,
            },
            HistoryEntry::Transition {
                revision,
                from,
                to,
                reason,
            } => Self::Transition {
                at_ms: row.at_ms,
                session: row.session.unwrap_or_default(),
                revision,
                from,
                to,
                reason,
            },
        })
    }

    pub fn at_ms(&self) -> i64 {
        match self {
            Self::Input { at_ms, .. } | Self::Transition { at_ms, .. } => *at_ms,
        }
    }
}

/// Reads a history file: its header, then its lines in order. Errors name the line.
pub fn read(text: &str) -> anyhow::Result<(Header, Vec<Line>)> {
    let (header, lines) = reader(std::io::Cursor::new(text.as_bytes()))?;
    Ok((header, lines.collect::<anyhow::Result<Vec<Line>>>()?))
}

/// A history read as it streams in: its header, then an iterator over its lines (a large
/// history is never held as text).
pub fn reader<R: std::io::BufRead>(
    input: R,
) -> anyhow::Result<(Header, impl Iterator<Item = anyhow::Result<Line>>)> {
    let mut lines = input
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()));
    let (_, first) = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("the history is empty (no header line)"))?;
    let header: Header = serde_json::from_str(&first?)
        .map_err(|e| anyhow::anyhow!("line 1 is not a history header: {e}"))?;
    anyhow::ensure!(
        header.format == FORMAT,
        "line 1: format {:?} is not {FORMAT:?}",
        header.format
    );
    anyhow::ensure!(
        header.version <= VERSION,
        "the history is version {}; this build reads up to version {VERSION}",
        header.version
    );
    let body = lines.map(|(n, l)| {
        let l = l.map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
        serde_json::from_str(&l).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))
    });
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_it_was_written() {
        let lines = [
            Line::Input {
                at_ms: 5,
                session: Some("s".into()),
                input: Input::Timer {
                    job: "expire_session".into(),
                    due_ms: 4,
                },
            },
            Line::Transition {
                at_ms: 6,
                session: "s".into(),
                revision: 3,
                from: Some("AVAILABLE".into()),
                to: "UNAVAILABLE".into(),
                reason: "DURATION_EXPIRED".into(),
            },
        ];
        for line in lines {
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), line, "{text}");
        }
        let text = serde_json::to_string(&Line::Input {
            at_ms: 1,
            session: None,
            input: Input::Callback {
                body: serde_json::json!({"a": 1}),
            },
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"record":"input","at_ms":1,"input":"callback","body":{"a":1}}"#
        );
    }

    #[test]
    fn a_file_of_a_newer_version_or_another_format_is_refused_by_name() {
        let newer = r#"{"format":"qod-history","version":99,"build":"x","since_ms":0,"until_ms":1,"settings":{"provision_timeout_ms":1,"grant_lifetime_ms":1,"retention_ms":1,"max_active_sessions":0}}"#;
        let e = read(newer).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        let other = newer.replace("qod-history", "other");
        let e = read(&other).unwrap_err().to_string();
        assert!(e.contains("\"other\""), "{e}");
        let bad = format!("{}\n{{\"record\":\"nope\"}}", newer.replace("99", "1"));
        let e = read(&bad).unwrap_err().to_string();
        assert!(e.starts_with("line 2:"), "{e}");
    }
}
