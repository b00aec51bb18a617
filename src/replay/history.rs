//! A recorded history as a replay uses it: the inputs it drives in time order, the answers the
//! peers gave (in the order they were asked, per session), and the transitions to expect.
//!
//! A day's history holds millions of these, so they are kept small: request bodies as the JSON
//! text they are sent as (a parsed object costs a map node per field), and the few distinct
//! names (operations, clients, states, reasons) shared, not copied per line.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::domain::SessionId;
use crate::recording::format::{Header, Line};
use crate::recording::{Input, NetworkAnswer, SinkAnswer};

/// Per session, the network's answers in the order given: the operation, its instant, the answer.
/// (A session asks a few questions: one list, searched, is smaller than a queue per operation.)
pub type NetworkAnswers = HashMap<SessionId, Vec<(&'static str, i64, NetworkAnswer)>>;
/// Per session, the sinks' answers to its deliveries in order, with their instants.
pub type SinkAnswers = HashMap<SessionId, VecDeque<(i64, SinkAnswer)>>;

/// The network operations a history records answers to.
pub const NETWORK_OPS: [&str; 3] = ["provision", "renew", "release"];

/// What the replay does at `at_ms`.
#[derive(Debug, Clone)]
pub enum Step {
    /// An API command, with the answer the recording server gave.
    Command {
        at_ms: i64,
        api: Arc<str>,
        op: Arc<str>,
        client: Arc<str>,
        /// The phone number a three-legged token spoke for.
        phone: Option<Arc<str>>,
        /// The request body as JSON text.
        body: Option<Box<str>>,
        status: u16,
        /// The session the command named or created.
        session: Option<String>,
    },
    /// A network event notification for `session`, as JSON text.
    Callback {
        at_ms: i64,
        session: String,
        body: Box<str>,
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
    pub from: Option<Arc<str>>,
    pub to: Arc<str>,
    pub reason: Arc<str>,
}

/// One shared copy of each distinct name.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(name);
        self.0.insert(new.clone());
        new
    }

    /// A transition as compared.
    pub fn seen(&mut self, at_ms: i64, from: Option<&str>, to: &str, reason: &str) -> Seen {
        Seen {
            at_ms,
            from: from.map(|f| self.get(f)),
            to: self.get(to),
            reason: self.get(reason),
        }
    }
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

/// A history split as a replay uses it: what drives the run, and what the run is compared with.
pub struct History {
    pub header: Header,
    pub inputs: Inputs,
    pub expected: Expected,
}

/// What the replay is driven by (handed to the run and dropped as it is used).
#[derive(Default)]
pub struct Inputs {
    pub steps: Vec<Step>,
    pub network: NetworkAnswers,
    pub sinks: SinkAnswers,
    /// When each timer's first attempt started: (session, queue, due time) to the instant.
    pub firings: HashMap<(SessionId, &'static str, i64), i64>,
}

/// What the replay's transitions are compared with.
pub struct Expected {
    /// Per session, its transitions; `sessions` gives the sessions in order of appearance.
    pub transitions: HashMap<String, Vec<Seen>>,
    pub sessions: Vec<String>,
    /// The first and last instant the history covers.
    pub start_ms: i64,
    pub end_ms: i64,
    pub lines: usize,
}

impl History {
    /// The history of `lines` as they stream in.
    pub fn read(
        mut header: Header,
        lines: impl Iterator<Item = anyhow::Result<Line>>,
    ) -> anyhow::Result<Self> {
        let mut inputs = Inputs::default();
        let mut expected = Expected {
            transitions: HashMap::new(),
            sessions: Vec::new(),
            start_ms: i64::MAX,
            end_ms: header.until_ms,
            lines: 0,
        };
        let mut known = HashSet::new();
        let mut names = Names::default();
        let mut note = |sessions: &mut Vec<String>, session: &str| {
            if known.insert(session.to_owned()) {
                sessions.push(session.to_owned());
            }
        };
        for line in lines {
            let line = line?;
            expected.lines += 1;
            expected.start_ms = expected.start_ms.min(line.at_ms());
            expected.end_ms = expected.end_ms.max(line.at_ms());
            match line {
                Line::Transition {
                    at_ms,
                    session,
                    from,
                    to,
                    reason,
                    ..
                } => {
                    note(&mut expected.sessions, &session);
                    let seen = names.seen(at_ms, from.as_deref(), &to, &reason);
                    expected.transitions.entry(session).or_default().push(seen);
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
                    } => inputs.steps.push(Step::Command {
                        at_ms,
                        api: names.get(&api),
                        op: names.get(&op),
                        client: names.get(&client),
                        phone: device
                            .as_ref()
                            .and_then(|d| d["phoneNumber"].as_str())
                            .map(|p| names.get(p)),
                        body: body.map(|b| b.to_string().into_boxed_str()),
                        status: status.unwrap_or(0),
                        session,
                    }),
                    Input::Callback { body } => {
                        if let Some(session) = session {
                            inputs.steps.push(Step::Callback {
                                at_ms,
                                session,
                                body: body.to_string().into_boxed_str(),
                            });
                        }
                    }
                    // An answer to a question this build cannot ask (an operation it does
                    // not know, a session named otherwise) is never asked for.
                    Input::Network { op, answer } => {
                        let op = NETWORK_OPS.into_iter().find(|o| *o == op);
                        if let (Some(session), Some(op)) = (session_id(&session), op) {
                            let all = inputs.network.entry(session).or_default();
                            all.push((op, at_ms, answer));
                        }
                    }
                    Input::Sink { answer, .. } => {
                        if let Some(session) = session_id(&session) {
                            let all = inputs.sinks.entry(session).or_default();
                            all.push_back((at_ms, answer));
                        }
                    }
                    // Timers fire by themselves in the replay's virtual time, when they fired.
                    Input::Timer { job, due_ms } => {
                        let queue = crate::jobs::QUEUES.iter().find(|q| **q == job);
                        if let (Some(session), Some(queue)) = (session_id(&session), queue) {
                            inputs
                                .firings
                                .entry((session, queue, due_ms))
                                .or_insert(at_ms);
                        }
                    }
                    // The recording server's own settings beat the exporting tool's.
                    Input::Started { settings } => header.settings = settings,
                },
            }
        }
        if expected.lines == 0 {
            expected.start_ms = header.since_ms;
        }
        // A history is in time order; a stable sort keeps the order written within a millisecond.
        inputs.steps.sort_by_key(Step::at_ms);
        // What the lists grew by beyond their lengths is given back (most hold a few entries).
        inputs.steps.shrink_to_fit();
        inputs.network.values_mut().for_each(Vec::shrink_to_fit);
        inputs.sinks.values_mut().for_each(VecDeque::shrink_to_fit);
        (expected.transitions.values_mut()).for_each(Vec::shrink_to_fit);
        Ok(Self {
            header,
            inputs,
            expected,
        })
    }
}

fn session_id(session: &Option<String>) -> Option<SessionId> {
    session.as_deref().and_then(SessionId::parse_canonical)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const S1: &str = "0b8a3f64-5d2c-4e1a-9f3b-1c2d3e4f5a6b";
    const S2: &str = "7e6d5c4b-3a29-4180-8f7e-6d5c4b3a2918";

    fn input(at_ms: i64, session: Option<&str>, input: Input) -> Line {
        Line::Input {
            at_ms,
            session: session.map(str::to_owned),
            input,
        }
    }

    fn transition(at_ms: i64, session: &str, from: Option<&str>, to: &str) -> Line {
        Line::Transition {
            at_ms,
            session: session.into(),
            revision: 1,
            from: from.map(str::to_owned),
            to: to.into(),
            reason: "NETWORK_GRANTED".into(),
        }
    }

    fn network(op: &str) -> Input {
        Input::Network {
            op: op.into(),
            answer: NetworkAnswer::Released,
        }
    }

    fn timer(job: &str, due_ms: i64) -> Input {
        Input::Timer {
            job: job.into(),
            due_ms,
        }
    }

    #[test]
    fn a_history_is_held_as_the_replay_uses_it_and_what_it_cannot_ask_is_left_out() {
        let header: Header = serde_json::from_str(
            r#"{"format":"qod-history","version":1,"build":"x","since_ms":0,"until_ms":50,"settings":{"provision_timeout_ms":1,"grant_lifetime_ms":1,"retention_ms":1,"max_active_sessions":0}}"#,
        )
        .unwrap();
        let body = json!({"qosProfile": "QOS_E", "device": {"phoneNumber": "+33612345678"}});
        let lines = vec![
            input(
                3,
                Some(S1),
                Input::Command {
                    api: "v1".into(),
                    op: "create".into(),
                    client: "c".into(),
                    device: Some(json!({"phoneNumber": "+33612345678"})),
                    body: Some(body.clone()),
                    status: Some(201),
                },
            ),
            transition(4, S1, None, "REQUESTED"),
            transition(5, S2, None, "REQUESTED"),
            input(6, Some(S1), network("provision")),
            input(7, Some(S1), network("teleport")),
            input(8, Some(S1), network("release")),
            input(9, Some("not-a-session"), network("provision")),
            input(10, Some(S1), timer("expire_session", 9)),
            input(11, Some(S1), timer("no_such_job", 9)),
        ];
        let h = History::read(header, lines.into_iter().map(Ok)).unwrap();
        let Step::Command {
            phone, body: sent, ..
        } = &h.inputs.steps[0]
        else {
            panic!("{:?}", h.inputs.steps);
        };
        assert_eq!(phone.as_deref(), Some("+33612345678"));
        let sent: Value = serde_json::from_str(sent.as_deref().unwrap()).unwrap();
        assert_eq!(sent, body);
        let (s1, s2) = (&h.expected.transitions[S1], &h.expected.transitions[S2]);
        assert!(Arc::ptr_eq(&s1[0].to, &s2[0].to), "one copy of a name");
        assert_eq!(h.expected.sessions, [S1, S2]);
        let id = SessionId::parse_canonical(S1).unwrap();
        let ops: Vec<_> = h.inputs.network[&id].iter().map(|a| (a.0, a.1)).collect();
        assert_eq!(ops, [("provision", 6), ("release", 8)]);
        assert_eq!(h.inputs.network.len(), 1);
        let firings: Vec<_> = h.inputs.firings.iter().collect();
        assert_eq!(firings, [(&(id, "expire_session", 9), &10)]);
        assert_eq!((h.expected.start_ms, h.expected.end_ms), (3, 50));
    }
}
