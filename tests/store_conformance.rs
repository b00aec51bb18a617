//! The store conformance suite: one set of tests that every implementation of the storage
//! port must pass, the concurrent cases included. Each backend instantiates the whole suite
//! with `suite!`; a new backend adds one line and one constructor.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use qod::domain::session::Transition;
use qod::domain::{
    ApiVersion, ApplicationServer, ClientId, Device, Flow, GrantState, PhoneNumber, QosStatus,
    Session, SessionId, StatusInfo,
};
use qod::jobs::{ExpireSession, JobKind, PurgeSession};
use qod::lifecycle::{Effects, ScheduledJob};
use qod::store::{
    Claim, Created, GrantLedger, HistoryEntry, NotificationFilter, Provisioned, RoundTime, Settled,
    Settlement, SharedStore, StaleRevision, Write, state,
};

mod common;

struct Backend {
    store: SharedStore,
    ledger: Arc<dyn GrantLedger>,
    /// Where the store is: another node opens it here.
    settings: qod::Settings,
    _dir: tempfile::TempDir,
}

async fn sqlite(_: &str) -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("qod.db").display());
    let settings = qod::Settings::for_database(url).unwrap();
    let store = qod::store::open_sqlite(&settings).await.unwrap();
    Some(Backend {
        store: store.clone(),
        ledger: store,
        settings,
        _dir: dir,
    })
}

/// A fresh database on the test cluster (None: PostgreSQL tests are skipped here).
async fn postgres(test: &str) -> Option<Backend> {
    let url = common::pg::fresh_database(test).await?;
    let settings = qod::Settings::for_database(url).unwrap();
    let opened = qod::store::open_store(&settings).await.unwrap();
    Some(Backend {
        store: opened.shared(),
        ledger: opened.ledger(),
        settings,
        _dir: tempfile::tempdir().unwrap(),
    })
}

macro_rules! suite {
    ($backend:ident: $($test:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(backend) = super::$backend(stringify!($test)).await else {
                        return;
                    };
                    super::$test(&backend).await;
                }
            )+
        }
    };
}

/// Every backend passes the common tests; a store shared by several processes passes the
/// tests of leases, fencing and leadership too.
macro_rules! suites {
    (common: [$($common:ident),+ $(,)?], shared: [$($shared:ident),+ $(,)?]) => {
        suite!(sqlite: $($common),+);
        suite!(postgres: $($common),+, $($shared),+);
    };
}

suites!(common: [
    a_created_session_reads_back_as_it_was_stored,
    only_one_of_concurrent_overlapping_creates_is_stored,
    the_quota_counts_live_sessions_of_the_owner_only,
    concurrent_creates_keep_the_quota_and_store_all_that_fit,
    a_decided_change_is_stored_with_its_events_and_jobs,
    a_write_at_a_stale_revision_is_refused_and_changes_nothing,
    a_write_that_does_not_move_the_revision_on_is_refused,
    concurrent_changes_of_one_session_all_apply_in_turn,
    a_decision_that_panics_fails_alone_and_the_store_lives_on,
    a_deleted_session_is_gone_and_a_change_sees_nothing,
    a_device_named_by_several_keys_conflicts_under_each_while_live,
    history_is_purged_past_the_cutoff_in_bounded_batches,
    transitions_read_back_each_session_together_in_time_order,
    concurrent_claims_never_hand_out_a_job_twice,
    a_job_is_claimed_only_when_due_and_retries_wait_for_their_time,
    claims_of_a_stopped_process_can_be_handed_back,
    events_of_a_session_are_delivered_one_after_another,
    delivery_state_is_recorded_and_dead_letters_can_be_revived,
    the_census_counts_what_is_stored,
    the_grant_ledger_keeps_one_grant_per_session,
], shared: [
    a_lapsed_lease_passes_the_job_on_and_fences_the_first_claim,
    a_renewed_lease_keeps_the_job_with_its_node,
    a_lease_lapses_on_the_wall_clock_not_on_the_clock_port,
    a_stopping_node_hands_back_only_its_own_claims,
    the_maintenance_role_has_one_holder_until_its_term_lapses,
    a_node_stalled_in_a_write_does_not_hold_the_others_up,
]);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_900_000_000_000).unwrap()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn session(phone: &str, server: &str, owner: &str) -> Session {
    Session {
        id: SessionId(uuid::Uuid::new_v4()),
        revision: 1,
        status: QosStatus::Requested,
        status_info: None,
        device: Device::PhoneNumber(PhoneNumber::parse(phone).unwrap()),
        flow: Flow {
            application_server: ApplicationServer::parse(Some(server), None).unwrap(),
            device_ports: None,
            application_server_ports: None,
            device_addresses: Default::default(),
        },
        qos_profile: "QOS_E".into(),
        duration_secs: 60,
        sink: None,
        sink_credential: None,
        created_at: t0(),
        started_at: None,
        expires_at: None,
        grant_state: GrantState::None,
        grant_id: None,
        lease_until: None,
        deleted: false,
        api: ApiVersion::V1,
        owner: ClientId(owner.into()),
        stray_grant_possible: false,
    }
}

fn with_sink(mut s: Session) -> Session {
    s.sink = Some("https://sink.example/notify".into());
    s
}

fn created(s: &Session) -> Effects {
    let mut fx = Effects::default();
    fx.record(
        s,
        Transition {
            from: None,
            to: "REQUESTED",
            reason: "CREATED",
        },
        s.created_at,
    );
    fx
}

async fn create(b: &Backend, s: &Session) -> Created {
    b.store
        .create_session(s.clone(), vec![], 0, created(s))
        .await
        .unwrap()
        .0
}

/// A change whose decision is `f` over the session as read; returns the store's answer.
async fn change(
    b: &Backend,
    id: SessionId,
    f: impl FnOnce(Option<Session>, &mut Effects) -> Write + Send + 'static,
) -> anyhow::Result<Effects> {
    let decide: qod::store::Decide = Box::new(move |s, fx| {
        let write = f(s, fx);
        Ok((write, Box::new(()) as Box<dyn std::any::Any + Send>))
    });
    b.store.change_session(id, decide).await.map(|(_, fx)| fx)
}

/// Makes a session AVAILABLE with a grant, as provisioning does.
async fn make_available(b: &Backend, id: SessionId) {
    change(b, id, |s, fx| {
        let mut s = s.unwrap();
        let t = s.make_available(t0(), "g-1".into());
        fx.record(&s, t, t0());
        Write::update(s)
    })
    .await
    .unwrap();
}

/// One dispatcher round of `owner` claiming up to `limit` jobs of `queue` due at `now` (on
/// both clocks).
async fn claim_once(
    store: &SharedStore,
    owner: &str,
    queue: &'static str,
    limit: usize,
    now: DateTime<Utc>,
) -> Vec<qod::store::Claimed> {
    claim_at(store, owner, queue, limit, RoundTime::at(ms(now))).await
}

async fn claim_at(
    store: &SharedStore,
    owner: &str,
    queue: &'static str,
    limit: usize,
    at: RoundTime,
) -> Vec<qod::store::Claimed> {
    store
        .queue_round(
            owner,
            Arc::new(Vec::new()),
            vec![Claim { queue, limit }],
            at,
        )
        .await
        .unwrap()
}

/// Makes a session UNAVAILABLE for `why`, as a termination does.
async fn end(b: &Backend, id: SessionId, why: StatusInfo) {
    change(b, id, move |s, fx| {
        let mut s = s.unwrap();
        let t = s.make_unavailable(t0(), why);
        fx.record(&s, t, t0());
        Write::update(s)
    })
    .await
    .unwrap();
}

/// Claims everything due at `now` for `queue` as `owner`, in rounds of `limit`.
async fn claim_rounds(
    store: &SharedStore,
    owner: &str,
    queue: &'static str,
    limit: usize,
    now: DateTime<Utc>,
) -> Vec<i64> {
    let mut ids = Vec::new();
    loop {
        let round = claim_once(store, owner, queue, limit, now).await;
        let rows: Vec<i64> = round
            .into_iter()
            .flat_map(|c| c.rows)
            .map(|r| r.id)
            .collect();
        if rows.is_empty() {
            return ids;
        }
        ids.extend(rows);
    }
}

async fn claim_all(b: &Backend, queue: &'static str, now: DateTime<Utc>) -> Vec<i64> {
    claim_rounds(&b.store, "test", queue, 50, now).await
}

async fn a_created_session_reads_back_as_it_was_stored(b: &Backend) {
    let s = session("+33612345678", "198.51.100.10", "shop");
    assert_eq!(create(b, &s).await, Created::Stored);
    let read = b.store.session(s.id).await.unwrap().expect("stored");
    assert_eq!(format!("{read:?}"), format!("{s:?}"));
    let key = s.device.key();
    let mine = b
        .store
        .visible_sessions(&ClientId("shop".into()), &key)
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|s| s.id).collect::<Vec<_>>(), vec![s.id]);
    let theirs = b
        .store
        .visible_sessions(&ClientId("other".into()), &key)
        .await
        .unwrap();
    assert!(theirs.is_empty(), "another owner sees nothing");
    assert!(
        b.store
            .session(SessionId(uuid::Uuid::new_v4()))
            .await
            .unwrap()
            .is_none()
    );
}

async fn only_one_of_concurrent_overlapping_creates_is_stored(b: &Backend) {
    let creates = (0..20).map(|_| {
        let store = b.store.clone();
        // One owner: the overlap check is per owner.
        let s = session("+33612345678", "198.51.100.10", "client-0");
        tokio::spawn(async move {
            store
                .create_session(s.clone(), vec![], 0, created(&s))
                .await
        })
    });
    let outcomes: Vec<Created> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().0)
        .collect();
    let stored = outcomes.iter().filter(|c| **c == Created::Stored).count();
    let conflicts = outcomes.iter().filter(|c| **c == Created::Conflict).count();
    assert_eq!((stored, conflicts), (1, 19), "{outcomes:?}");
    // Another application server of the same device does not overlap.
    let other = session("+33612345678", "198.51.100.11", "client-0");
    assert_eq!(create(b, &other).await, Created::Stored);
}

async fn the_quota_counts_live_sessions_of_the_owner_only(b: &Backend) {
    let first = session("+33600000001", "198.51.100.10", "shop");
    let second = session("+33600000002", "198.51.100.10", "shop");
    let third = session("+33600000003", "198.51.100.10", "shop");
    let elsewhere = session("+33600000004", "198.51.100.10", "other");
    for s in [&first, &second, &elsewhere] {
        let (c, _) = b
            .store
            .create_session(s.clone(), vec![], 2, created(s))
            .await
            .unwrap();
        assert_eq!(c, Created::Stored);
    }
    let (c, fx) = b
        .store
        .create_session(third.clone(), vec![], 2, created(&third))
        .await
        .unwrap();
    assert_eq!(c, Created::QuotaExceeded);
    assert_eq!(
        fx.transitions().count(),
        0,
        "a refused create writes nothing"
    );
    assert!(b.store.session(third.id).await.unwrap().is_none());
    // Once one has ended, there is room again.
    end(b, first.id, StatusInfo::NetworkTerminated).await;
    let (c, _) = b
        .store
        .create_session(third.clone(), vec![], 2, created(&third))
        .await
        .unwrap();
    assert_eq!(c, Created::Stored);
}

/// Creates arriving together (on PostgreSQL, decided in one batch) are checked against each
/// other as well as against what was stored before.
async fn concurrent_creates_keep_the_quota_and_store_all_that_fit(b: &Backend) {
    let before = session("+33600000100", "198.51.100.10", "shop");
    assert_eq!(create(b, &before).await, Created::Stored);
    let creates = (0..30).map(|i| {
        let store = b.store.clone();
        // Every third for another owner, without a quota; the shop's devices all differ.
        let (owner, quota) = if i % 3 == 0 {
            ("other", 0)
        } else {
            ("shop", 5)
        };
        let s = session(&format!("+336000002{i:02}"), "198.51.100.10", owner);
        tokio::spawn(async move {
            let (c, fx) = store
                .create_session(s.clone(), vec![], quota, created(&s))
                .await
                .unwrap();
            (owner, s.id, c, fx.transitions().count())
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let count =
        |owner: &str, c: Created| outcomes.iter().filter(|o| o.0 == owner && o.2 == c).count();
    // The shop held one before: four more fit.
    assert_eq!(count("shop", Created::Stored), 4, "{outcomes:?}");
    assert_eq!(count("shop", Created::QuotaExceeded), 16, "{outcomes:?}");
    assert_eq!(count("other", Created::Stored), 10, "{outcomes:?}");
    for (owner, id, c, transitions) in &outcomes {
        let stored = b.store.session(*id).await.unwrap();
        match c {
            Created::Stored => {
                assert_eq!(
                    stored.map(|s| s.owner.as_str().to_owned()),
                    Some((*owner).to_owned())
                );
                assert_eq!(*transitions, 1, "a stored create writes its transition");
            }
            _ => {
                assert!(stored.is_none(), "a refused create stores nothing");
                assert_eq!(*transitions, 0, "a refused create writes nothing");
            }
        }
    }
}

async fn a_decided_change_is_stored_with_its_events_and_jobs(b: &Backend) {
    let s = session("+33612345678", "198.51.100.10", "shop");
    create(b, &s).await;
    let expires = t0() + chrono::Duration::seconds(60);
    let fx = change(b, s.id, move |read, fx| {
        let mut read = read.expect("the session is read for the decision");
        let t = read.make_available(t0(), "g-1".into());
        fx.record(&read, t, t0());
        fx.schedule(ScheduledJob::new(
            ExpireSession {
                session_id: read.id,
            },
            expires,
        ));
        Write::update(read)
    })
    .await
    .unwrap();
    assert_eq!(fx.jobs().len(), 1);
    let stored = b.store.session(s.id).await.unwrap().unwrap();
    assert_eq!(stored.status, QosStatus::Available);
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.grant_id.as_deref(), Some("g-1"));
    assert_eq!(stored.expires_at, Some(expires));
    // The job committed with the change: not before it is due, then exactly once.
    assert!(
        claim_all(
            b,
            ExpireSession::QUEUE,
            expires - chrono::Duration::milliseconds(1)
        )
        .await
        .is_empty()
    );
    assert_eq!(claim_all(b, ExpireSession::QUEUE, expires).await.len(), 1);
}

async fn a_write_at_a_stale_revision_is_refused_and_changes_nothing(b: &Backend) {
    let s = session("+33612345678", "198.51.100.10", "shop");
    create(b, &s).await;
    let stale = b.store.session(s.id).await.unwrap().unwrap();
    make_available(b, s.id).await;
    // A decision that writes a copy read before the last change.
    let error = change(b, s.id, move |_, fx| {
        let mut copy = stale;
        let t = copy.make_unavailable(t0(), StatusInfo::NetworkTerminated);
        fx.record(&copy, t, t0());
        fx.schedule(ScheduledJob::new(PurgeSession::new(copy.id), t0()));
        Write::update(copy)
    })
    .await
    .expect_err("a stale write is an error");
    let stale = error
        .downcast_ref::<StaleRevision>()
        .expect("StaleRevision");
    assert_eq!((stale.written, stale.stored), (2, 2));
    let stored = b.store.session(s.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.revision), (QosStatus::Available, 2));
    assert!(
        claim_all(b, PurgeSession::QUEUE, t0()).await.is_empty(),
        "the refused change's jobs were not written"
    );
}

async fn a_write_that_does_not_move_the_revision_on_is_refused(b: &Backend) {
    let s = session("+33612345678", "198.51.100.10", "shop");
    create(b, &s).await;
    let error = change(b, s.id, |read, _| {
        let mut read = read.unwrap();
        read.duration_secs = 999;
        Write::update(read)
    })
    .await
    .expect_err("an unversioned write is an error");
    assert!(error.downcast_ref::<StaleRevision>().is_some(), "{error:#}");
    assert_eq!(
        b.store.session(s.id).await.unwrap().unwrap().duration_secs,
        60
    );
}

async fn concurrent_changes_of_one_session_all_apply_in_turn(b: &Backend) {
    let s = session("+33612345678", "198.51.100.10", "shop");
    create(b, &s).await;
    make_available(b, s.id).await;
    let changes = (0..40).map(|_| {
        let store = b.store.clone();
        let id = s.id;
        tokio::spawn(async move {
            let decide: qod::store::Decide = Box::new(|read, fx| {
                let mut read = read.unwrap();
                let t = read.note_available("QOS_GUARANTEED");
                fx.record(&read, t, t0());
                Ok((
                    Write::update(read),
                    Box::new(()) as Box<dyn std::any::Any + Send>,
                ))
            });
            store.change_session(id, decide).await
        })
    });
    for r in futures::future::join_all(changes).await {
        r.unwrap().expect("each change reads the one before it");
    }
    assert_eq!(b.store.session(s.id).await.unwrap().unwrap().revision, 42);
}

async fn a_deleted_session_is_gone_and_a_change_sees_nothing(b: &Backend) {
    let s = session("+33612345678", "198.51.100.10", "shop");
    create(b, &s).await;
    change(b, s.id, |read, _| {
        assert!(read.is_some());
        Write::Delete
    })
    .await
    .unwrap();
    assert!(b.store.session(s.id).await.unwrap().is_none());
    let seen = Arc::new(std::sync::Mutex::new(None));
    let saw = seen.clone();
    change(b, s.id, move |read, _| {
        *saw.lock().unwrap() = Some(read.is_none());
        Write::Nothing
    })
    .await
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(true));
    // A decision that writes a session that is not there is an error.
    assert!(change(b, s.id, |_, _| Write::Delete).await.is_err());
}

async fn a_device_named_by_several_keys_conflicts_under_each_while_live(b: &Backend) {
    let first = session("+33612345678", "198.51.100.10", "shop");
    let keys = vec![first.device.key(), "ipv4:203.0.113.50".to_owned()];
    let stored = b
        .store
        .create_session(first.clone(), keys, 0, created(&first))
        .await
        .unwrap()
        .0;
    assert_eq!(stored, Created::Stored);
    // Another request of the same client names the same device by its address only (kept as
    // another phone number here: what counts is the key the two share).
    let by_address = session("+33699999999", "198.51.100.10", "shop");
    let create_by_address = |s: Session| async move {
        b.store
            .create_session(
                s.clone(),
                vec![s.device.key(), "ipv4:203.0.113.50".into()],
                0,
                created(&s),
            )
            .await
            .unwrap()
            .0
    };
    assert_eq!(
        create_by_address(by_address.clone()).await,
        Created::Conflict
    );
    // A request that shares no key does not conflict, nor one of another client.
    let unrelated = session("+33688888888", "198.51.100.10", "shop");
    assert_eq!(create(b, &unrelated).await, Created::Stored);
    let other_client = session("+33612345678", "198.51.100.10", "other");
    assert_eq!(create(b, &other_client).await, Created::Stored);
    // Once the first has ended, its aliases no longer block anyone; once it is deleted they
    // are gone with it.
    end(b, first.id, StatusInfo::DeleteRequested).await;
    let again = session("+33699999999", "198.51.100.10", "shop");
    assert_eq!(create_by_address(again.clone()).await, Created::Stored);
    change(b, first.id, |_, _| Write::Delete).await.unwrap();
    end(b, again.id, StatusInfo::DeleteRequested).await;
    let last = session("+33677777777", "198.51.100.10", "shop");
    assert_eq!(create_by_address(last).await, Created::Stored);
}

async fn history_is_purged_past_the_cutoff_in_bounded_batches(b: &Backend) {
    let live = session("+33600000001", "198.51.100.10", "shop");
    create(b, &live).await;
    for i in 2..5 {
        let gone = session(&format!("+3360000000{i}"), "198.51.100.10", "shop");
        create(b, &gone).await;
        change(b, gone.id, |_, _| Write::Delete).await.unwrap();
    }
    let at = ms(t0());
    let none = b.store.purge_history(at, 2).await.unwrap();
    assert_eq!(none.total(), 0, "nothing older than the cutoff: {none:?}");
    let after = at + 1;
    let first = b.store.purge_history(after, 2).await.unwrap();
    assert_eq!(first.events, 2, "a batch is bounded: {first:?}");
    let second = b.store.purge_history(after, 2).await.unwrap();
    assert_eq!(second.events, 1, "{second:?}");
    let third = b.store.purge_history(after, 2).await.unwrap();
    assert_eq!(
        third.total(),
        0,
        "the live session's event stays: {third:?}"
    );
}

async fn transitions_read_back_each_session_together_in_time_order(b: &Backend) {
    let [x, mut y, z] =
        ["1", "2", "3"].map(|n| session(&format!("+3360000000{n}"), "198.51.100.10", "shop"));
    // Written after its creation but stamped before it (a job that decided at an earlier
    // instant than it committed): time order, not the order written, is what was recorded.
    y.created_at = t0() + chrono::Duration::seconds(1);
    // Interleaved: a session's transitions are not next to each other in time.
    create(b, &x).await;
    create(b, &y).await;
    make_available(b, x.id).await;
    create(b, &z).await;
    make_available(b, y.id).await;
    let rows = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = rows.clone();
    let read = b
        .store
        .read_transitions(Box::new(move |row| {
            if let HistoryEntry::Transition { revision, to, .. } = row.entry {
                let session = row.session.unwrap();
                sink.lock().unwrap().push((session, revision, to));
            }
            Ok(())
        }))
        .await
        .unwrap();
    let [x, y, z] = [x.id, y.id, z.id].map(|id| id.to_string());
    let mut expected = vec![
        (x.clone(), 1, "REQUESTED".to_owned()),
        (x, 2, "AVAILABLE".to_owned()),
        (y.clone(), 2, "AVAILABLE".to_owned()),
        (y, 1, "REQUESTED".to_owned()),
        (z, 1, "REQUESTED".to_owned()),
    ];
    // By session id, each session's in time order (a stable sort keeps it).
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(*rows.lock().unwrap(), expected);
    assert_eq!(read, 5);
}

async fn enqueue(b: &Backend, jobs: impl IntoIterator<Item = ScheduledJob>) {
    let mut fx = Effects::default();
    for job in jobs {
        fx.schedule(job);
    }
    b.store.commit(fx).await.unwrap();
}

fn expiry(due: DateTime<Utc>) -> ScheduledJob {
    ScheduledJob::new(
        ExpireSession {
            session_id: SessionId(uuid::Uuid::new_v4()),
        },
        due,
    )
}

async fn concurrent_claims_never_hand_out_a_job_twice(b: &Backend) {
    enqueue(b, (0..300).map(|_| expiry(t0()))).await;
    let claimers = (0..4).map(|n| {
        let store = b.store.clone();
        tokio::spawn(async move {
            claim_rounds(&store, &format!("node-{n}"), ExpireSession::QUEUE, 17, t0()).await
        })
    });
    let all: Vec<i64> = futures::future::join_all(claimers)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 300, "every job claimed");
    assert_eq!(distinct.len(), 300, "no job claimed twice");
}

async fn a_job_is_claimed_only_when_due_and_retries_wait_for_their_time(b: &Backend) {
    let later = t0() + chrono::Duration::seconds(10);
    enqueue(b, [expiry(t0()), expiry(later)]).await;
    let round = claim_once(&b.store, "test", ExpireSession::QUEUE, 10, t0()).await;
    assert_eq!(round.len(), 1);
    assert_eq!(round[0].rows.len(), 1, "only the due job");
    // On a shared store the claim just made is due again when its lease lapses, if sooner.
    let next = if b.store.shared() {
        ms(later).min(ms(t0() + lease()) + 1)
    } else {
        ms(later)
    };
    assert_eq!(
        round[0].next_due_ms,
        Some(next),
        "and when the next one is due"
    );
    let first = round[0].rows[0].clone();
    assert_eq!(first.attempt, 0);
    // Retried for 5 s later: not claimable before, claimable then, with its attempt count.
    let retry_at = t0() + chrono::Duration::seconds(5);
    let retry = Settlement::Retry {
        fence: first.fence(),
        attempt: 1,
        due_at_ms: ms(retry_at),
    };
    b.store
        .queue_round("test", Arc::new(vec![retry]), Vec::new(), RoundTime::at(0))
        .await
        .unwrap();
    assert!(claim_all(b, ExpireSession::QUEUE, t0()).await.is_empty());
    let round = claim_once(&b.store, "test", ExpireSession::QUEUE, 10, retry_at).await;
    let again = &round[0].rows;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (first.id, 1));
    // Done (by the claim that holds it now): deleted, never handed out again.
    b.store
        .queue_round(
            "test",
            Arc::new(vec![Settlement::Done(again[0].fence())]),
            Vec::new(),
            RoundTime::at(0),
        )
        .await
        .unwrap();
    let rest = claim_all(b, ExpireSession::QUEUE, later).await;
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0], first.id);
}

async fn claims_of_a_stopped_process_can_be_handed_back(b: &Backend) {
    enqueue(b, (0..5).map(|_| expiry(t0()))).await;
    assert_eq!(claim_all(b, ExpireSession::QUEUE, t0()).await.len(), 5);
    assert!(claim_all(b, ExpireSession::QUEUE, t0()).await.is_empty());
    assert_eq!(b.store.release_claims(None).await.unwrap(), 5);
    assert_eq!(claim_all(b, ExpireSession::QUEUE, t0()).await.len(), 5);
}

/// Records two transitions of `s` that each owe its sink an event: AVAILABLE, UNAVAILABLE.
async fn two_events(b: &Backend, s: &Session) -> Vec<uuid::Uuid> {
    create(b, s).await;
    make_available(b, s.id).await;
    end(b, s.id, StatusInfo::DurationExpired).await;
    let filter = NotificationFilter {
        session: Some(s.id),
        limit: 10,
        ..Default::default()
    };
    let listed = b.store.notifications(filter).await.unwrap();
    assert_eq!(listed.len(), 2);
    listed.iter().map(|n| n.id).collect()
}

fn delivery(id: uuid::Uuid, at: DateTime<Utc>) -> ScheduledJob {
    ScheduledJob::new(qod::jobs::DeliverNotification::new(id), at)
}

async fn events_of_a_session_are_delivered_one_after_another(b: &Backend) {
    let s = with_sink(session("+33612345678", "198.51.100.10", "shop"));
    let ids = two_events(b, &s).await;
    let queue = qod::jobs::DeliverNotification::QUEUE;
    assert_eq!(
        claim_all(b, queue, t0()).await.len(),
        1,
        "only the first event has a job"
    );
    let first = b
        .store
        .notification_for_delivery(ids[0])
        .await
        .unwrap()
        .unwrap();
    let second = b
        .store
        .notification_for_delivery(ids[1])
        .await
        .unwrap()
        .unwrap();
    assert!(!first.behind_earlier && second.behind_earlier);
    assert_eq!(first.notification.state, state::PENDING);
    let settled = Settled {
        id: ids[0],
        final_state: state::DELIVERED,
        attempts: 1,
        error: None,
        at: t0(),
    };
    let fx = b
        .store
        .settle_notification(settled.clone(), delivery)
        .await
        .unwrap();
    assert_eq!(fx.jobs().len(), 1, "the settlement starts the next event");
    let second = b
        .store
        .notification_for_delivery(ids[1])
        .await
        .unwrap()
        .unwrap();
    assert!(!second.behind_earlier);
    assert_eq!(claim_all(b, queue, t0()).await.len(), 1);
    // Settling again changes nothing and starts nothing.
    let again = b
        .store
        .settle_notification(settled, delivery)
        .await
        .unwrap();
    assert!(again.jobs().is_empty());
}

async fn delivery_state_is_recorded_and_dead_letters_can_be_revived(b: &Backend) {
    let s = with_sink(session("+33612345678", "198.51.100.10", "shop"));
    let ids = two_events(b, &s).await;
    let next = t0() + chrono::Duration::seconds(2);
    let fx = b
        .store
        .retry_notification(ids[0], 1, "503".into(), next, delivery(ids[0], next))
        .await
        .unwrap();
    assert_eq!(fx.jobs().len(), 1);
    let n = b
        .store
        .notification_for_delivery(ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            n.notification.attempts,
            n.notification.last_error.as_deref()
        ),
        (1, Some("503"))
    );
    assert_eq!(n.notification.next_attempt_at, Some(next));

    let sink = s.sink.clone().unwrap();
    b.store.mark_sink_gone(sink.clone(), t0()).await.unwrap();
    assert!(
        b.store
            .notification_for_delivery(ids[0])
            .await
            .unwrap()
            .unwrap()
            .sink_gone
    );
    let dead = Settled {
        id: ids[0],
        final_state: state::DEAD,
        attempts: 2,
        error: Some("410".into()),
        at: t0(),
    };
    b.store.settle_notification(dead, delivery).await.unwrap();
    let census = b.store.census(ms(t0())).await.unwrap();
    assert_eq!(census.dead_notifications, 1);
    let transition_at = b
        .store
        .notification_for_delivery(ids[0])
        .await
        .unwrap()
        .unwrap()
        .notification
        .created_at;
    assert_eq!(census.oldest_dead_ms, Some(ms(transition_at)));
    let only_dead = NotificationFilter {
        state: Some(state::DEAD),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        b.store
            .notifications(only_dead.clone())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !b.store
            .revive_notification(ids[1], delivery(ids[1], t0()))
            .await
            .unwrap(),
        "a pending event is no dead letter"
    );
    assert!(
        b.store
            .revive_notification(ids[0], delivery(ids[0], t0()))
            .await
            .unwrap()
    );
    let revived = b
        .store
        .notification_for_delivery(ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revived.notification.state, state::PENDING);
    assert!(!revived.sink_gone, "reviving vouches for the sink again");
    assert!(b.store.notifications(only_dead).await.unwrap().is_empty());
}

async fn the_census_counts_what_is_stored(b: &Backend) {
    let a = session("+33600000001", "198.51.100.10", "shop");
    let mut c = session("+33600000002", "198.51.100.10", "shop");
    c.qos_profile = "QOS_L".into();
    let d = session("+33600000003", "198.51.100.10", "shop");
    create(b, &a).await;
    create(b, &c).await;
    create(b, &d).await;
    make_available(b, c.id).await;
    let waited = t0() - chrono::Duration::milliseconds(2500);
    enqueue(
        b,
        [
            expiry(waited),
            expiry(t0()),
            expiry(t0() + chrono::Duration::seconds(9)),
        ],
    )
    .await;
    let census = b.store.census(ms(t0())).await.unwrap();
    let count = |status, grant, profile: &str| {
        census
            .sessions
            .iter()
            .filter(|c| c.status == status && c.grant == grant && c.profile == profile)
            .map(|c| c.count)
            .sum::<i64>()
    };
    assert_eq!(count(QosStatus::Requested, GrantState::None, "QOS_E"), 2);
    assert_eq!(count(QosStatus::Available, GrantState::Granted, "QOS_L"), 1);
    assert_eq!(count(QosStatus::Available, GrantState::Granted, "QOS_E"), 0);
    assert_eq!(census.dead_notifications, 0);
    assert_eq!(census.oldest_dead_ms, None);
    let expiries = census
        .queues
        .iter()
        .find(|d| d.queue == ExpireSession::QUEUE)
        .expect("the expiry queue is counted");
    assert_eq!(
        (expiries.due, expiries.scheduled, expiries.claimed),
        (2, 1, 0)
    );
    assert_eq!(
        expiries.oldest_due_ms,
        Some(ms(waited)),
        "the oldest due job"
    );
    b.store.ping().await.unwrap();
}

async fn the_grant_ledger_keeps_one_grant_per_session(b: &Backend) {
    let (s, other) = (
        SessionId(uuid::Uuid::new_v4()),
        SessionId(uuid::Uuid::new_v4()),
    );
    let until = t0() + chrono::Duration::seconds(60);
    let first = b
        .ledger
        .provision(s, "g-1".into(), false, t0(), until)
        .await
        .unwrap();
    assert_eq!(first, Provisioned::Granted("g-1".into()));
    let again = b
        .ledger
        .provision(s, "g-2".into(), false, t0(), until)
        .await
        .unwrap();
    assert_eq!(
        again,
        Provisioned::Granted("g-1".into()),
        "asking twice returns the grant"
    );
    let refused = b
        .ledger
        .provision(other, "g-3".into(), true, t0(), until)
        .await
        .unwrap();
    assert_eq!(refused, Provisioned::Refused);
    assert_eq!(b.ledger.active().await.unwrap(), 1);
    let later = until + chrono::Duration::seconds(60);
    assert_eq!(
        b.ledger.extend(s, None, later).await.unwrap().as_deref(),
        Some("g-1")
    );
    assert_eq!(b.ledger.extend(other, None, later).await.unwrap(), None);
    b.ledger.release(s, None, t0()).await.unwrap();
    b.ledger
        .release(other, Some("unknown".into()), t0())
        .await
        .unwrap();
    assert_eq!(b.ledger.active().await.unwrap(), 0);
    assert_eq!(
        b.ledger
            .provision(s, "g-4".into(), false, t0(), until)
            .await
            .unwrap(),
        Provisioned::AlreadyReleased
    );
    assert_eq!(
        b.ledger.extend(s, Some("g-1".into()), later).await.unwrap(),
        None
    );
}

/// The lease every test store is opened with (the settings' default).
fn lease() -> chrono::Duration {
    let settings = qod::Settings::for_database("sqlite::memory:").unwrap();
    chrono::Duration::from_std(settings.job_lease).unwrap()
}

async fn a_lapsed_lease_passes_the_job_on_and_fences_the_first_claim(b: &Backend) {
    enqueue(b, [expiry(t0())]).await;
    let first = claim_once(&b.store, "node-a", ExpireSession::QUEUE, 10, t0()).await;
    let held = first[0].rows[0].clone();
    assert_eq!(first[0].taken_over, 0);
    // While the lease runs, nobody else gets the job.
    let during = t0() + lease() - chrono::Duration::milliseconds(1);
    assert!(
        claim_once(&b.store, "node-b", ExpireSession::QUEUE, 10, during).await[0]
            .rows
            .is_empty()
    );
    // Once it lapsed, another node claims it with the next epoch.
    let after = t0() + lease() + chrono::Duration::milliseconds(1);
    let second = claim_once(&b.store, "node-b", ExpireSession::QUEUE, 10, after).await;
    let taken = second[0].rows[0].clone();
    assert_eq!(taken.id, held.id);
    assert!(
        taken.epoch > held.epoch,
        "{} after {}",
        taken.epoch,
        held.epoch
    );
    assert_eq!(second[0].taken_over, 1);
    // The first claim's writes are refused and write nothing; the second claim's go through.
    let before = b.store.write_counts().fenced;
    let mut fx = Effects::default();
    fx.schedule(expiry(t0()));
    let refused = qod::store::fence::scope(held.fence(), b.store.commit(fx))
        .await
        .expect_err("a write of a lost claim is refused");
    assert!(qod::store::fence::Fenced::caused(&refused), "{refused:#}");
    let mut fx = Effects::default();
    fx.schedule(expiry(t0() + chrono::Duration::days(1)));
    qod::store::fence::scope(taken.fence(), b.store.commit(fx))
        .await
        .expect("the current claim writes");
    // So is the first claim's settlement: the job stays with node-b.
    b.store
        .queue_round(
            "node-a",
            Arc::new(vec![Settlement::Done(held.fence())]),
            Vec::new(),
            RoundTime::at(0),
        )
        .await
        .unwrap();
    assert_eq!(
        b.store.write_counts().fenced,
        before + 2,
        "both refusals counted"
    );
    let waiting = claim_rounds(&b.store, "node-c", ExpireSession::QUEUE, 10, after).await;
    assert!(
        waiting.is_empty(),
        "only the far job waits, not the refused one: {waiting:?}"
    );
    b.store
        .queue_round(
            "node-b",
            Arc::new(vec![Settlement::Done(taken.fence())]),
            Vec::new(),
            RoundTime::at(0),
        )
        .await
        .unwrap();
    let much_later = t0() + chrono::Duration::days(2);
    let left = claim_rounds(&b.store, "node-c", ExpireSession::QUEUE, 10, much_later).await;
    assert_eq!(
        left.len(),
        1,
        "the finished job is gone, the far one is left: {left:?}"
    );
    assert_ne!(left[0], held.id);
}

async fn a_renewed_lease_keeps_the_job_with_its_node(b: &Backend) {
    enqueue(b, [expiry(t0())]).await;
    let claimed = claim_once(&b.store, "node-a", ExpireSession::QUEUE, 10, t0()).await;
    assert_eq!(claimed[0].rows.len(), 1);
    // The heartbeat renews the lease before it lapses...
    let beat = t0() + lease() / 2;
    assert_eq!(b.store.renew_leases("node-a", ms(beat)).await.unwrap(), 1);
    assert_eq!(b.store.renew_leases("node-b", ms(beat)).await.unwrap(), 0);
    let past_first_term = t0() + lease() + chrono::Duration::milliseconds(1);
    assert!(
        claim_once(
            &b.store,
            "node-b",
            ExpireSession::QUEUE,
            10,
            past_first_term
        )
        .await[0]
            .rows
            .is_empty()
    );
    // ...and a round's next due time tells when the renewed lease lapses.
    let round = claim_once(
        &b.store,
        "node-b",
        ExpireSession::QUEUE,
        10,
        past_first_term,
    )
    .await;
    assert_eq!(round[0].next_due_ms, Some(ms(beat + lease()) + 1));
    let past_renewal = beat + lease() + chrono::Duration::milliseconds(1);
    let taken = claim_once(&b.store, "node-b", ExpireSession::QUEUE, 10, past_renewal).await;
    assert_eq!(taken[0].rows.len(), 1);
}

/// Virtual time may jump a day ahead (a test, a replay): the node holding a job has not
/// stopped for it, and keeps the job until its lease lapses in real time.
async fn a_lease_lapses_on_the_wall_clock_not_on_the_clock_port(b: &Backend) {
    enqueue(b, [expiry(t0())]).await;
    let wall = ms(t0()) - 5_000_000;
    let start = RoundTime {
        now_ms: ms(t0()),
        wall_ms: wall,
    };
    let held = claim_at(&b.store, "node-a", ExpireSession::QUEUE, 10, start).await;
    assert_eq!(held[0].rows.len(), 1);
    let a_day_on = RoundTime {
        now_ms: ms(t0() + chrono::Duration::days(1)),
        wall_ms: wall + 1,
    };
    let round = claim_at(&b.store, "node-b", ExpireSession::QUEUE, 10, a_day_on).await;
    assert!(round[0].rows.is_empty(), "the lease still runs");
    // The lapse is told on the clock port: as far ahead of its now as it is on the wall.
    let lease_ms = lease().num_milliseconds();
    assert_eq!(round[0].next_due_ms, Some(a_day_on.now_ms + lease_ms));
    // Renewals count from the wall clock too.
    assert_eq!(
        b.store.renew_leases("node-a", wall + 1_000).await.unwrap(),
        1
    );
    let past_first = RoundTime {
        now_ms: a_day_on.now_ms,
        wall_ms: wall + lease_ms + 1,
    };
    let round = claim_at(&b.store, "node-b", ExpireSession::QUEUE, 10, past_first).await;
    assert!(round[0].rows.is_empty(), "renewed from the wall clock");
    let past_renewal = RoundTime {
        now_ms: a_day_on.now_ms,
        wall_ms: wall + 1_000 + lease_ms + 1,
    };
    let taken = claim_at(&b.store, "node-b", ExpireSession::QUEUE, 10, past_renewal).await;
    assert_eq!(taken[0].rows.len(), 1, "lapsed on the wall clock");
    assert_eq!(taken[0].taken_over, 1);
}

async fn a_stopping_node_hands_back_only_its_own_claims(b: &Backend) {
    enqueue(b, (0..6).map(|_| expiry(t0()))).await;
    let a = claim_once(&b.store, "node-a", ExpireSession::QUEUE, 2, t0()).await;
    let c = claim_once(&b.store, "node-c", ExpireSession::QUEUE, 4, t0()).await;
    assert_eq!((a[0].rows.len(), c[0].rows.len()), (2, 4));
    assert_eq!(b.store.release_claims(Some("node-a")).await.unwrap(), 2);
    let mut again: Vec<i64> =
        claim_rounds(&b.store, "node-b", ExpireSession::QUEUE, 10, t0()).await;
    let mut released: Vec<i64> = a[0].rows.iter().map(|r| r.id).collect();
    again.sort_unstable();
    released.sort_unstable();
    assert_eq!(again, released, "node-c's claims stay with node-c");
}

async fn the_maintenance_role_has_one_holder_until_its_term_lapses(b: &Backend) {
    let term = std::time::Duration::from_secs(3);
    let role = qod::leader::MAINTENANCE;
    assert!(b.store.lead(role, "node-a", ms(t0()), term).await.unwrap());
    assert!(
        !b.store
            .lead(role, "node-b", ms(t0()) + 1_000, term)
            .await
            .unwrap()
    );
    // The holder renews its term; the other node waits for it to lapse.
    assert!(
        b.store
            .lead(role, "node-a", ms(t0()) + 2_000, term)
            .await
            .unwrap()
    );
    assert!(
        !b.store
            .lead(role, "node-b", ms(t0()) + 4_000, term)
            .await
            .unwrap()
    );
    assert!(
        b.store
            .lead(role, "node-b", ms(t0()) + 5_001, term)
            .await
            .unwrap()
    );
    assert!(
        !b.store
            .lead(role, "node-a", ms(t0()) + 5_500, term)
            .await
            .unwrap()
    );
}

async fn a_decision_that_panics_fails_alone_and_the_store_lives_on(b: &Backend) {
    let s = session("+33612345690", "198.51.100.10", "shop");
    create(b, &s).await;
    let panicking = change(b, s.id, |_, _| panic!("a bug in a decision"));
    let fine = make_available(b, s.id);
    let (panicked, ()) = tokio::join!(panicking, fine);
    let e = panicked.expect_err("a panicking decision is an error");
    assert!(format!("{e:#}").contains("a bug in a decision"), "{e:#}");
    let stored = b.store.session(s.id).await.unwrap().unwrap();
    assert_eq!(
        stored.status,
        QosStatus::Available,
        "the other change applied"
    );
    // Later writes still go through.
    end(b, s.id, StatusInfo::DeleteRequested).await;
    assert_eq!(
        b.store.session(s.id).await.unwrap().unwrap().status,
        QosStatus::Unavailable
    );
}

/// A node stopped in the middle of a write (SIGSTOP, swapped out) must not keep the rows it
/// locked: the others take its jobs over once its lease lapses and must find them free. Here
/// node A stalls inside a change of a session (its decision does not return) and node B
/// changes the same session meanwhile.
async fn a_node_stalled_in_a_write_does_not_hold_the_others_up(b: &Backend) {
    let s = session("+33612345691", "198.51.100.11", "shop");
    create(b, &s).await;
    let a = qod::store::open_store(&b.settings).await.unwrap().shared();
    let (locked, in_decision) = tokio::sync::oneshot::channel();
    let (resume, stalled) = std::sync::mpsc::channel::<()>();
    let node_a = tokio::spawn(async move {
        let decide: qod::store::Decide = Box::new(move |read, _| {
            locked.send(()).unwrap();
            // The whole thread stops, as the process would (the runtime moves its other
            // tasks away).
            tokio::task::block_in_place(|| {
                stalled.recv_timeout(std::time::Duration::from_secs(20))
            })
            .ok();
            let mut read = read.unwrap();
            read.duration_secs += 1;
            Ok((
                Write::update(read),
                Box::new(()) as Box<dyn std::any::Any + Send>,
            ))
        });
        a.change_session(s.id, decide).await.map(|_| ())
    });
    in_decision.await.unwrap();
    // Node B's change goes through while A is still stopped...
    make_available(b, s.id).await;
    let stored = b.store.session(s.id).await.unwrap().unwrap();
    assert_eq!(stored.status, QosStatus::Available);
    // ...and A's write, once it resumes, is refused: its transaction is gone.
    resume.send(()).unwrap();
    let late = node_a.await.unwrap();
    assert!(late.is_err(), "the stalled node's write went through");
    let after = b.store.session(s.id).await.unwrap().unwrap();
    assert_eq!(after.revision, stored.revision, "nothing written late");
    assert_eq!(after.duration_secs, s.duration_secs);
}
