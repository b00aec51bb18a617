//! A recorded history as a replay uses it: the inputs it drives in time order, the answers the
//! peers gave (in the order they were asked, per session), and the transitions to expect.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::domain::SessionId;
use crate::jobs::TimerFirings;
use crate::recording::format::{Header, Line};
use crate::recording::{Input, NetworkAnswer, SinkAnswer};

/// Per (session, operation), the network's answers in order, with their instants.
pub type NetworkAnswers = HashMap<(String, String), VecDeque<(i64, NetworkAnswer)>>;
/// Per session, the sinks' answers to its deliveries in order, with their instants.
pub type SinkAnswers = HashMap<String, VecDeque<(i64, SinkAnswer)>>;

/// What the replay does at `at_ms`.
#[derive(Debug, Clone)]
pub enum Step {
    /// An API command, with the answer the recording server gave.
    Command {
        at_ms: i64,
        api: String,
        op: String,
        client: String,
        device: Option<Value>,
        body: Option<Value>,
        status: u16,
        /// The session the command named or created.
        session: Option<String>,
    },
    /// A network event notification for `session`.
    Callback {
        at_ms: i64,
        session: String,
        body: Value,
    },
}

impl Step {
    pub fn at_ms(&self) -> i64 {
        match self {
            Self::Command { at_ms, .. } | Self::Callback { at_ms, .. } => *at_ms,
        }
    }
}

/// A transition as compared: what a consumer sees change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub at_ms: i64,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
}

impl Seen {
    /// `REQUESTED -> AVAILABLE (NETWORK_GRANTED)`.
    pub fn describe(&self) -> String {
        format!(
            "{} -> {} ({})",
            self.from.as_deref().unwrap_or("none"),
            self.to,
            self.reason
        )
    }

    pub fn same(&self, other: &Self) -> bool {
        (&self.from, &self.to, &self.reason) == (&other.from, &other.to, &other.reason)
    }
}

pub struct History {
    pub header: Header,
    pub steps: Vec<Step>,
    pub network: NetworkAnswers,
    pub sinks: SinkAnswers,
    /// Per session, its transitions; `sessions` gives the sessions in order of appearance.
    pub transitions: HashMap<String, Vec<Seen>>,
    pub sessions: Vec<String>,
    /// When each timer fired.
    pub firings: TimerFirings,
    /// The first and last instant the history covers.
    pub start_ms: i64,
    pub end_ms: i64,
    pub lines: usize,
}

impl History {
    /// The history of `lines` as they stream in.
    pub fn read(
        header: Header,
        lines: impl Iterator<Item = anyhow::Result<Line>>,
    ) -> anyhow::Result<Self> {
        let mut h = Self {
            start_ms: i64::MAX,
            end_ms: header.until_ms,
            lines: 0,
            header,
            steps: Vec::new(),
            network: HashMap::new(),
            sinks: HashMap::new(),
            transitions: HashMap::new(),
            sessions: Vec::new(),
            firings: TimerFirings::default(),
        };
        let mut known = std::collections::HashSet::new();
        let mut note = |h: &mut Self, session: &str| {
            if known.insert(session.to_owned()) {
                h.sessions.push(session.to_owned());
            }
        };
        for line in lines {
            let line = line?;
            h.lines += 1;
            h.start_ms = h.start_ms.min(line.at_ms());
            h.end_ms = h.end_ms.max(line.at_ms());
            match line {
                Line::Transition {
                    at_ms,
                    session,
                    from,
                    to,
                    reason,
                    ..
                } => {
                    note(&mut h, &session);
                    h.transitions.entry(session).or_default().push(Seen {
                        at_ms,
                        from,
                        to,
                        reason,
                    });
                }
                Line::Input {
                    at_ms,
                    session,
                    input,
                } => match input {
                    Input::Command {
                        api,
                        op,
                        client,
                        device,
                        body,
                        status,
                    } => h.steps.push(Step::Command {
                        at_ms,
                        api,
                        op,
                        client,
                        device,
                        body,
                        status: status.unwrap_or(0),
                        session,
                    }),
                    Input::Callback { body } => {
                        if let Some(session) = session {
                            h.steps.push(Step::Callback {
                                at_ms,
                                session,
                                body,
                            });
                        }
                    }
                    Input::Network { op, answer } => {
                        if let Some(session) = session {
                            h.network
                                .entry((session, op))
                                .or_default()
                                .push_back((at_ms, answer));
                        }
                    }
                    Input::Sink { answer, .. } => {
                        if let Some(session) = session {
                            h.sinks
                                .entry(session)
                                .or_default()
                                .push_back((at_ms, answer));
                        }
                    }
                    // Timers fire by themselves in the replay's virtual time, when they fired.
                    Input::Timer { job, due_ms } => {
                        if let Some(session) =
                            session.as_deref().and_then(SessionId::parse_canonical)
                        {
                            h.firings
                                .starts
                                .entry((session, job, due_ms))
                                .or_insert(at_ms);
                        }
                    }
                    // The recording server's own settings beat the exporting tool's.
                    Input::Started { settings } => h.header.settings = settings,
                },
            }
        }
        if h.lines == 0 {
            h.start_ms = h.header.since_ms;
        }
        // A history is in time order; a stable sort keeps the order written within a millisecond.
        h.steps.sort_by_key(Step::at_ms);
        Ok(h)
    }
}
