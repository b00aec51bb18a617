//! Comparing what a replay produced with what the history recorded: per session the first
//! transition that differs, every command answered otherwise, every question the peers had no
//! recorded answer for. The report holds nothing of the run itself (no wall time, no paths), so
//! the same history on the same build gives the same report, byte for byte.

use std::collections::BTreeMap;

use serde::Serialize;

use super::driver::Produced;
use super::history::{Expected, Seen};
use crate::recording::format::Header;

#[derive(Debug, Serialize)]
pub struct Report {
    pub format: String,
    pub version: u32,
    pub recorded_by: String,
    pub lines: usize,
    pub sessions: usize,
    pub commands: usize,
    pub transitions_expected: usize,
    pub transitions_produced: usize,
    /// Divergences by kind (`transition`, `answer`, `unrecorded_question`).
    pub counts: BTreeMap<String, usize>,
    pub divergences: Vec<Divergence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The transition's place in its session's history (from 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Virtual time of the divergence (ms since the epoch).
    pub at_ms: i64,
    pub expected: String,
    pub actual: String,
}

impl Report {
    pub fn diverged(&self) -> bool {
        !self.divergences.is_empty()
    }

    pub fn compare(header: &Header, recorded: &Expected, produced: &Produced) -> Self {
        let mut divergences = Vec::new();
        let empty = Vec::new();
        let mut sessions: Vec<&String> = recorded.sessions.iter().collect();
        let mut extra: Vec<&String> = produced
            .transitions
            .keys()
            .filter(|s| !recorded.transitions.contains_key(*s))
            .collect();
        extra.retain(|s| {
            produced.transitions[*s]
                .first()
                .is_some_and(|t| t.at_ms <= recorded.end_ms)
        });
        extra.sort();
        sessions.extend(extra);
        for session in sessions {
            let expected = recorded.transitions.get(session).unwrap_or(&empty);
            let mut actual: &[Seen] = produced.transitions.get(session).unwrap_or(&empty);
            // Past the history's end the recording saw nothing more: what the replay did
            // there (in its grace) counts only where the recording has a transition.
            while actual.len() > expected.len()
                && actual.last().is_some_and(|a| a.at_ms > recorded.end_ms)
            {
                actual = &actual[..actual.len() - 1];
            }
            if let Some(d) = first_difference(session, expected, actual) {
                divergences.push(d);
            }
        }
        for a in &produced.answers {
            if a.expected != a.actual {
                divergences.push(Divergence {
                    kind: "answer",
                    session: a.session.clone(),
                    index: None,
                    at_ms: a.at_ms,
                    expected: format!("{} answered {}", a.op, a.expected),
                    actual: format!("{} answered {}", a.op, a.actual),
                });
            }
        }
        let mut unanswered = produced.unanswered.clone();
        unanswered.retain(|(_, _, at)| *at <= recorded.end_ms);
        unanswered.sort_by(|a, b| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
        for (session, what, at_ms) in unanswered {
            divergences.push(Divergence {
                kind: "unrecorded_question",
                session: Some(session),
                index: None,
                at_ms,
                expected: "no such question".into(),
                actual: what,
            });
        }
        let mut counts = BTreeMap::new();
        for d in &divergences {
            *counts.entry(d.kind.to_owned()).or_insert(0) += 1;
        }
        Self {
            format: header.format.clone(),
            version: header.version,
            recorded_by: header.build.clone(),
            lines: recorded.lines,
            sessions: recorded.sessions.len(),
            commands: produced.commands,
            transitions_expected: recorded.transitions.values().map(Vec::len).sum(),
            transitions_produced: produced.transitions.values().map(Vec::len).sum(),
            counts,
            divergences,
        }
    }

    /// The report as text, one divergence a line.
    pub fn text(&self) -> String {
        let mut out = format!(
            "replay of a {} v{} history recorded by {}: {} lines, {} sessions, {} commands\n\
             transitions: {} recorded, {} produced\n",
            self.format,
            self.version,
            self.recorded_by,
            self.lines,
            self.sessions,
            self.commands,
            self.transitions_expected,
            self.transitions_produced,
        );
        if self.divergences.is_empty() {
            out.push_str("divergences: none\n");
            return out;
        }
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out.push_str(&format!(
            "divergences: {} ({})\n",
            self.divergences.len(),
            counts.join(", ")
        ));
        for d in &self.divergences {
            let at = chrono::DateTime::from_timestamp_millis(d.at_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| d.at_ms.to_string());
            let place = match (&d.session, d.index) {
                (Some(s), Some(i)) => format!("session {s} transition #{i}"),
                (Some(s), None) => format!("session {s}"),
                (None, _) => "no session".to_owned(),
            };
            out.push_str(&format!(
                "{}: {place} at {at}: expected {}, got {}\n",
                d.kind, d.expected, d.actual
            ));
        }
        out
    }
}

fn first_difference(session: &str, expected: &[Seen], actual: &[Seen]) -> Option<Divergence> {
    let none = "nothing".to_owned();
    (0..expected.len().max(actual.len())).find_map(|i| {
        let (e, a) = (expected.get(i), actual.get(i));
        if let (Some(e), Some(a)) = (e, a)
            && e.same(a)
        {
            return None;
        }
        Some(Divergence {
            kind: "transition",
            session: Some(session.to_owned()),
            index: Some(i),
            at_ms: e.or(a).map_or(0, |s| s.at_ms),
            expected: e.map_or(none.clone(), Seen::describe),
            actual: a.map_or(none.clone(), Seen::describe),
        })
    })
}
