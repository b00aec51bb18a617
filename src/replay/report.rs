//! Comparing what a replay produced with what the history recorded: per session the first
//! transition that differs, every command answered otherwise, every question the peers had no
//! recorded answer for. The report holds nothing of the run itself (no wall time, no paths), so
//! the same history on the same build gives the same report, byte for byte.

use std::collections::{BTreeMap, HashMap};

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

    /// The report of a run whose transitions `compared` has seen.
    pub fn compare(header: &Header, compared: Comparison, produced: &Produced) -> Self {
        let mut divergences = compared.divergences();
        for a in &produced.answers {
            divergences.push(Divergence {
                kind: "answer",
                session: a.session.clone(),
                index: None,
                at_ms: a.at_ms,
                expected: format!("{} answered {}", a.op, a.expected),
                actual: format!("{} answered {}", a.op, a.actual),
            });
        }
        let mut unanswered = produced.unanswered.clone();
        unanswered.retain(|(_, _, at)| *at <= compared.end_ms);
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
            lines: compared.lines,
            sessions: compared.order.len(),
            commands: produced.commands,
            transitions_expected: compared.expected,
            transitions_produced: compared.produced,
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

/// The transitions a run produced, compared with the recorded ones as they come (each
/// session's in time order): per session only a count and its first difference are kept.
pub struct Comparison {
    /// The sessions in the order the history names them.
    order: Vec<String>,
    recorded: HashMap<String, (Vec<Seen>, Compared)>,
    /// Sessions the history does not name.
    extra: HashMap<String, Compared>,
    end_ms: i64,
    lines: usize,
    expected: usize,
    produced: usize,
}

#[derive(Default)]
struct Compared {
    came: usize,
    difference: Option<Box<Divergence>>,
}

impl Comparison {
    pub fn new(recorded: Expected) -> Self {
        let expected = recorded.transitions.values().map(Vec::len).sum();
        Self {
            order: recorded.sessions,
            recorded: (recorded.transitions.into_iter())
                .map(|(s, t)| (s, (t, Compared::default())))
                .collect(),
            extra: HashMap::new(),
            end_ms: recorded.end_ms,
            lines: recorded.lines,
            expected,
            produced: 0,
        }
    }

    /// The divergences, per session in the order the history names them, then the sessions
    /// the history does not name (that began before its end) in the order of their ids.
    fn divergences(&self) -> Vec<Divergence> {
        let mut out = Vec::new();
        for session in &self.order {
            let Some((expected, compared)) = self.recorded.get(session) else {
                continue;
            };
            if let Some(d) = &compared.difference {
                out.push((**d).clone());
            } else if let Some(missing) = expected.get(compared.came) {
                // Everything that came was as recorded; the first that did not come differs.
                out.push(transition(session, compared.came, Some(missing), None));
            }
        }
        // A session the history does not name differs at its first transition, unless that
        // came after the history's end (then none of its transitions counts).
        let mut extra: Vec<(&String, &Divergence)> = (self.extra.iter())
            .filter_map(|(s, c)| Some((s, c.difference.as_deref()?)))
            .collect();
        extra.sort_by_key(|(s, _)| *s);
        out.extend(extra.into_iter().map(|(_, d)| d.clone()));
        out
    }
}

impl super::driver::Transitions for Comparison {
    fn push(&mut self, session: &str, actual: Seen) {
        self.produced += 1;
        let (expected, compared): (&[Seen], &mut Compared) = match self.recorded.get_mut(session) {
            Some((expected, compared)) => (expected, compared),
            None => (&[], self.extra.entry(session.to_owned()).or_default()),
        };
        let index = compared.came;
        compared.came += 1;
        // Past the history's end the recording saw nothing more: what the replay did there
        // (in its grace) counts only where the recording has a transition.
        if compared.difference.is_some() || (index >= expected.len() && actual.at_ms > self.end_ms)
        {
            return;
        }
        let recorded = expected.get(index);
        if recorded.is_some_and(|e| e.same(&actual)) {
            return;
        }
        let difference = transition(session, index, recorded, Some(&actual));
        compared.difference = Some(Box::new(difference));
    }
}

fn transition(
    session: &str,
    index: usize,
    expected: Option<&Seen>,
    actual: Option<&Seen>,
) -> Divergence {
    let describe = |s: Option<&Seen>| s.map_or_else(|| "nothing".to_owned(), Seen::describe);
    Divergence {
        kind: "transition",
        session: Some(session.to_owned()),
        index: Some(index),
        at_ms: expected.or(actual).map_or(0, |s| s.at_ms),
        expected: describe(expected),
        actual: describe(actual),
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::Transitions;
    use super::super::history::Names;
    use super::*;

    /// `(session, at_ms, to)`: each session's states in a chain from none.
    fn chain(names: &mut Names, rows: &[(&str, i64, &str)]) -> Vec<(String, Seen)> {
        let mut last: HashMap<&str, &str> = HashMap::new();
        rows.iter()
            .map(|&(session, at, to)| {
                let from = last.insert(session, to);
                (session.to_owned(), names.seen(at, from, to, "R"))
            })
            .collect()
    }

    fn compare(recorded: &[(&str, i64, &str)], produced: &[(&str, i64, &str)]) -> Vec<String> {
        let mut names = Names::default();
        let mut expected = Expected {
            transitions: HashMap::new(),
            sessions: Vec::new(),
            start_ms: 0,
            end_ms: 100,
            lines: recorded.len(),
        };
        for (session, seen) in chain(&mut names, recorded) {
            if !expected.transitions.contains_key(&session) {
                expected.sessions.push(session.clone());
            }
            expected.transitions.entry(session).or_default().push(seen);
        }
        let mut comparison = Comparison::new(expected);
        for (session, seen) in chain(&mut names, produced) {
            comparison.push(&session, seen);
        }
        (comparison.divergences().iter())
            .map(|d| {
                let (s, i) = (d.session.as_deref().unwrap_or("-"), d.index.unwrap_or(99));
                format!("{s}#{i}@{}: {} / {}", d.at_ms, d.expected, d.actual)
            })
            .collect()
    }

    const RECORDED: &[(&str, i64, &str)] = &[
        ("b", 1, "REQUESTED"),
        ("a", 2, "REQUESTED"),
        ("b", 3, "AVAILABLE"),
        ("a", 4, "AVAILABLE"),
        ("a", 90, "UNAVAILABLE"),
    ];

    #[test]
    fn the_same_transitions_do_not_diverge_and_what_the_grace_adds_is_not_counted() {
        assert!(compare(RECORDED, RECORDED).is_empty());
        let mut later = RECORDED.to_vec();
        // After the history's end: a session's further transition and a session it never saw.
        later.extend([("b", 150, "UNAVAILABLE"), ("z", 160, "REQUESTED")]);
        assert!(
            compare(RECORDED, &later).is_empty(),
            "{:?}",
            compare(RECORDED, &later)
        );
    }

    #[test]
    fn each_session_reports_its_first_difference_in_the_order_the_history_names_them() {
        let mut produced = RECORDED.to_vec();
        produced[3] = ("a", 5, "UNAVAILABLE");
        // Late, but the history has a transition there: compared, and the same.
        produced[2] = ("b", 120, "AVAILABLE");
        produced.push(("c", 50, "REQUESTED"));
        assert_eq!(
            compare(RECORDED, &produced),
            [
                "a#1@4: REQUESTED -> AVAILABLE (R) / REQUESTED -> UNAVAILABLE (R)",
                "c#0@50: nothing / none -> REQUESTED (R)",
            ]
        );
    }

    #[test]
    fn a_recorded_transition_that_never_came_is_the_difference() {
        let short = &RECORDED[..4];
        assert_eq!(
            compare(RECORDED, short),
            ["a#2@90: AVAILABLE -> UNAVAILABLE (R) / nothing"]
        );
        assert_eq!(
            compare(RECORDED, &[]),
            [
                "b#0@1: none -> REQUESTED (R) / nothing",
                "a#0@2: none -> REQUESTED (R) / nothing",
            ]
        );
    }
}
