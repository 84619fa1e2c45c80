//! The `ServerStore` conformance suite: the same checks against SQLite and PostgreSQL, so both
//! stores keep one behaviour (idempotency, deployment history, claim order, leases, reclaim,
//! cancel, keys), plus concurrency (many claimers, racing idempotent submits) and, on
//! PostgreSQL, its event feed, concurrent migrations and password-free errors.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestDb};
use flowrun_core::event::StepRecord;
use flowrun_server::store::{
    DeliveryOutcome, KeyRow, NewRun, PostgresStore, RollbackError, RunFilter, RunResult, RunState,
    ServerStore, StoreEvent, SyncRecord,
};
use serde_json::json;

on_both!(
    bundles_are_stored_once,
    deploys_keep_a_history_that_rollback_walks_back,
    an_idempotency_key_is_unique_per_env,
    runs_are_listed_newest_first_with_filters,
    the_oldest_queued_run_is_claimed_first,
    a_lease_is_held_extended_and_ended_only_by_its_owner,
    a_released_run_is_queued_again_without_counting_the_attempt,
    expired_leases_are_requeued_failed_or_cancelled,
    cancelling_depends_on_where_the_run_is,
    a_step_committed_again_replaces_the_earlier_one,
    a_step_is_committed_only_under_its_lease,
    a_claim_brings_the_steps_earlier_attempts_committed,
    a_step_that_cannot_be_decoded_spoils_only_its_own_claim,
    the_last_step_commits_with_the_end_of_the_run,
    claim_batch_takes_the_oldest_runs_up_to_its_limit,
    concurrent_batch_claimers_never_take_the_same_run,
    abandoned_runs_are_recovered_where_the_store_can_tell,
    keys_are_found_by_hash_and_unique,
    concurrent_claimers_never_take_the_same_run,
    racing_submits_with_one_key_make_one_run,
    ending_a_run_queues_its_webhook_once_and_a_lease_keeps_others_off,
    cancelled_and_abandoned_runs_queue_their_webhooks_too,
    run_counts_group_by_state,
    pushed_records_are_upserted_by_kind_and_id_with_their_pusher,
    the_deployment_history_is_paged_by_seq,
);

fn new_run(id: &str, env: &str, key: Option<&str>, created_at: i64) -> NewRun {
    NewRun {
        id: id.into(),
        env: env.into(),
        flow: "f".into(),
        bundle_id: "b1".into(),
        input: json!({ "n": id }),
        idempotency_key: key.map(str::to_string),
        webhook_url: None,
        created_at,
    }
}

const HOOK: &str = "http://127.0.0.1:9/hook";

/// A store with one queued run `id` that names a webhook.
async fn with_hooked_run(db: &TestDb, id: &str) -> Arc<dyn ServerStore> {
    let s = with_bundle(db).await;
    let mut run = new_run(id, "prod", None, 1);
    run.webhook_url = Some(HOOK.into());
    s.submit(run).await.unwrap();
    s
}

async fn ending_a_run_queues_its_webhook_once_and_a_lease_keeps_others_off(db: TestDb) {
    let s = with_hooked_run(&db, "r1").await;
    let id = "r1";
    assert!(
        s.claim_deliveries("d1", 5, 50, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.claim("w1", 10, 100).await.unwrap().unwrap();
    let failed = RunResult {
        status: RunState::Failed,
        output: None,
        error: Some("boom".into()),
        usage: None,
        cost: None,
    };
    assert!(s.finish(id, "w1", &failed, None, 20).await.unwrap());
    let got = s.claim_deliveries("d1", 20, 60, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].run.id.as_str(), got[0].attempts, got[0].run.status),
        (id, 1, RunState::Failed)
    );
    assert_eq!(got[0].url, HOOK);
    // Leased: nobody else gets it until the lease expires.
    assert!(
        s.claim_deliveries("d2", 30, 90, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = s.claim_deliveries("d2", 61, 90, 10).await.unwrap();
    assert_eq!(again[0].attempts, 2);
    // The first deliverer lost its lease.
    let retry = DeliveryOutcome::Retry {
        at: 200,
        error: "HTTP 500".into(),
    };
    assert!(!s.settle_delivery(id, "d1", &retry, 62).await.unwrap());
    assert!(s.settle_delivery(id, "d2", &retry, 62).await.unwrap());
    assert!(
        s.claim_deliveries("d1", 199, 300, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let third = s.claim_deliveries("d1", 200, 300, 10).await.unwrap();
    assert_eq!(third[0].attempts, 3);
    let ok = DeliveryOutcome::Delivered;
    assert!(s.settle_delivery(id, "d1", &ok, 210).await.unwrap());
    assert!(
        s.claim_deliveries("d1", 10_000, 20_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!s.settle_delivery(id, "d1", &ok, 220).await.unwrap());
}

async fn cancelled_and_abandoned_runs_queue_their_webhooks_too(db: TestDb) {
    let s = with_hooked_run(&db, "cancelled").await;
    s.cancel("cancelled", 5).await.unwrap();
    let got = s.claim_deliveries("d", 5, 50, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].run.status, RunState::Cancelled);

    let mut run = new_run("abandoned", "prod", None, 2);
    run.webhook_url = Some(HOOK.into());
    s.submit(run).await.unwrap();
    s.claim("w1", 0, 10).await.unwrap().unwrap();
    assert_eq!(
        s.reclaim_expired(20, 1).await.unwrap(),
        vec!["abandoned".to_string()]
    );
    let got = s.claim_deliveries("d", 20, 50, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].run.status, RunState::Failed);

    // A re-queued run has not ended: no delivery.
    let mut run = new_run("requeued", "prod", None, 3);
    run.webhook_url = Some(HOOK.into());
    s.submit(run).await.unwrap();
    s.claim("w1", 30, 40).await.unwrap().unwrap();
    s.reclaim_expired(50, 5).await.unwrap();
    assert!(
        s.claim_deliveries("d", 50, 90, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn run_counts_group_by_state(db: TestDb) {
    let s = with_bundle(&db).await;
    assert!(s.run_counts().await.unwrap().is_empty());
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        s.submit(new_run(id, "prod", None, i as i64)).await.unwrap();
    }
    s.claim("w", 10, 100).await.unwrap().unwrap();
    let mut counts = s.run_counts().await.unwrap();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, vec![(RunState::Queued, 2), (RunState::Running, 1)]);
}

fn record(kind: &str, id: &str, status: &str) -> SyncRecord {
    SyncRecord {
        kind: kind.into(),
        id: id.into(),
        record: json!({ "id": id, "status": status }),
    }
}

async fn pushed_records_are_upserted_by_kind_and_id_with_their_pusher(db: TestDb) {
    let s = db.open().await;
    let batch = [
        record("run", "r1", "succeeded"),
        record("run", "r2", "failed"),
        record("test_run", "r1", "passed"),
    ];
    assert_eq!(s.push_records(&batch, "key-a", 10).await.unwrap(), 3);
    // The same batch again changes nothing, and keeps the first pusher.
    assert_eq!(s.push_records(&batch, "key-b", 20).await.unwrap(), 0);
    // A changed record is rewritten and remembers its new pusher.
    let changed = [
        record("run", "r2", "succeeded"),
        record("run", "r3", "failed"),
    ];
    assert_eq!(s.push_records(&changed, "key-b", 30).await.unwrap(), 2);
    let all = s.synced_records(None, 100).await.unwrap();
    let seen: Vec<_> = all
        .iter()
        .map(|r| {
            (
                r.kind.as_str(),
                r.id.as_str(),
                r.pushed_by.as_str(),
                r.pushed_at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("run", "r2", "key-b", 30),
            ("run", "r3", "key-b", 30),
            ("run", "r1", "key-a", 10),
            ("test_run", "r1", "key-a", 10),
        ]
    );
    assert_eq!(all[0].record["status"], "succeeded");
    let runs = s.synced_records(Some("run"), 2).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.kind == "run"));
    assert!(s.push_records(&[], "key-a", 40).await.unwrap() == 0);
}

async fn the_deployment_history_is_paged_by_seq(db: TestDb) {
    let s = db.open().await;
    assert!(s.deployments(0, 10).await.unwrap().is_empty());
    for b in ["b1", "b2"] {
        s.put_bundle(b, "{}", 0).await.unwrap();
    }
    s.deploy("prod", "b1", "deploy").await.unwrap();
    s.deploy("dev", "b2", "deploy").await.unwrap();
    s.deploy("prod", "b2", "promote").await.unwrap();
    let first = s.deployments(0, 2).await.unwrap();
    let seen: Vec<_> = first
        .iter()
        .map(|d| (d.env.as_str(), d.bundle_id.as_str(), d.action.as_str()))
        .collect();
    assert_eq!(seen, [("prod", "b1", "deploy"), ("dev", "b2", "deploy")]);
    assert!(first[0].seq < first[1].seq);
    let rest = s.deployments(first[1].seq, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(
        (rest[0].env.as_str(), rest[0].action.as_str()),
        ("prod", "promote")
    );
    assert!(s.deployments(rest[0].seq, 10).await.unwrap().is_empty());
}

async fn with_bundle(db: &TestDb) -> Arc<dyn ServerStore> {
    let s = db.open().await;
    s.put_bundle("b1", r#"{"files":[]}"#, 0).await.unwrap();
    s
}

fn done(output: &str) -> RunResult {
    RunResult {
        status: RunState::Succeeded,
        output: Some(json!(output)),
        error: None,
        usage: Some(json!({ "input_tokens": 3 })),
        cost: None,
    }
}

fn step(run_id: &str, index: u32, output: &str) -> StepRecord {
    StepRecord {
        run_id: run_id.into(),
        step_index: index,
        step_id: format!("s{index}"),
        prompt: "p".into(),
        status: flowrun_core::RunStatus::Succeeded,
        output_text: Some(output.into()),
        output: Some(json!(output)),
        model: Some("fake/m1".into()),
        usage: Default::default(),
        cost: Default::default(),
        latency_ms: 1,
        attempts: 1,
        error: None,
        cached: false,
        agent: None,
    }
}

async fn bundles_are_stored_once(db: TestDb) {
    let s = db.open().await;
    assert!(s.put_bundle("b1", r#"{"files":[1]}"#, 1).await.unwrap());
    assert!(!s.put_bundle("b1", r#"{"files":[2]}"#, 1).await.unwrap());
    assert_eq!(
        s.bundle("b1").await.unwrap().as_deref(),
        Some(r#"{"files":[1]}"#)
    );
    assert_eq!(s.bundle("b2").await.unwrap(), None);
    let listed = s.bundles().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].files), ("b1", 1));
    s.ping().await.unwrap();
}

async fn deploys_keep_a_history_that_rollback_walks_back(db: TestDb) {
    let s = db.open().await;
    for b in ["b1", "b2", "b3"] {
        s.put_bundle(b, "{}", 0).await.unwrap();
    }
    assert!(!s.deploy("prod", "nope", "deploy").await.unwrap());
    assert_eq!(
        s.rollback("prod").await.unwrap().unwrap_err(),
        RollbackError::NoDeployment
    );
    assert!(s.deploy("prod", "b1", "deploy").await.unwrap());
    assert_eq!(
        s.rollback("prod").await.unwrap().unwrap_err(),
        RollbackError::NoPrevious
    );
    assert!(s.deploy("prod", "b2", "deploy").await.unwrap());
    assert!(s.deploy("prod", "b3", "promote").await.unwrap());
    assert!(s.deploy("dev", "b1", "deploy").await.unwrap());
    let prod = s.env("prod").await.unwrap().unwrap();
    assert_eq!(prod.bundle_id, "b3");
    assert_eq!(prod.previous, ["b2", "b1"]);
    let back = s.rollback("prod").await.unwrap().unwrap();
    assert_eq!(
        (back.bundle_id.as_str(), back.previous.clone()),
        ("b2", vec!["b1".to_string()])
    );
    let back = s.rollback("prod").await.unwrap().unwrap();
    assert_eq!((back.bundle_id.as_str(), back.previous.len()), ("b1", 0));
    assert_eq!(
        s.rollback("prod").await.unwrap().unwrap_err(),
        RollbackError::NoPrevious
    );
    // A new deployment after rollbacks goes on from where the env is.
    assert!(s.deploy("prod", "b3", "deploy").await.unwrap());
    assert_eq!(s.env("prod").await.unwrap().unwrap().previous, ["b1"]);
    let names: Vec<String> = s
        .envs()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["dev", "prod"]);
    assert!(s.env("staging").await.unwrap().is_none());
}

async fn an_idempotency_key_is_unique_per_env(db: TestDb) {
    let s = with_bundle(&db).await;
    let first = s.submit(new_run("r1", "prod", Some("k"), 1)).await.unwrap();
    assert!(first.created);
    assert_eq!(first.run.status, RunState::Queued);
    assert_eq!(first.run.input, json!({ "n": "r1" }));
    let again = s.submit(new_run("r2", "prod", Some("k"), 2)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.run.id, "r1");
    let other_env = s.submit(new_run("r3", "dev", Some("k"), 3)).await.unwrap();
    assert!(other_env.created);
    let no_key = s.submit(new_run("r4", "prod", None, 4)).await.unwrap();
    let no_key_again = s.submit(new_run("r5", "prod", None, 5)).await.unwrap();
    assert!(no_key.created && no_key_again.created);
    assert!(s.run("r2").await.unwrap().is_none());
}

async fn runs_are_listed_newest_first_with_filters(db: TestDb) {
    let s = with_bundle(&db).await;
    for (id, env, at) in [
        ("a", "prod", 1),
        ("b", "dev", 2),
        ("c", "prod", 3),
        ("d", "prod", 3),
    ] {
        s.submit(new_run(id, env, None, at)).await.unwrap();
    }
    s.claim("w", 10, 100).await.unwrap();
    let ids = |runs: Vec<flowrun_server::store::RunRow>| -> Vec<String> {
        runs.into_iter().map(|r| r.id).collect()
    };
    let all = RunFilter {
        limit: 10,
        ..RunFilter::default()
    };
    assert_eq!(ids(s.runs(&all).await.unwrap()), ["d", "c", "b", "a"]);
    let prod = RunFilter {
        env: Some("prod".into()),
        ..all.clone()
    };
    assert_eq!(ids(s.runs(&prod).await.unwrap()), ["d", "c", "a"]);
    let running = RunFilter {
        status: Some(RunState::Running),
        ..all.clone()
    };
    assert_eq!(ids(s.runs(&running).await.unwrap()), ["a"]);
    let other_flow = RunFilter {
        flow: Some("g".into()),
        ..all.clone()
    };
    assert!(s.runs(&other_flow).await.unwrap().is_empty());
    let two = RunFilter {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(ids(s.runs(&two).await.unwrap()), ["d", "c"]);
}

async fn the_oldest_queued_run_is_claimed_first(db: TestDb) {
    let s = with_bundle(&db).await;
    // Ties on time go by id, bytewise ("B" < "a").
    for (id, at) in [("c", 5), ("a", 7), ("B", 7), ("z", 1)] {
        s.submit(new_run(id, "prod", None, at)).await.unwrap();
    }
    let mut order = Vec::new();
    while let Some(run) = s.claim("w", 10, 100).await.unwrap() {
        assert_eq!(
            (run.status, run.attempts, run.started_at),
            (RunState::Running, 1, Some(10))
        );
        order.push(run.id);
    }
    assert_eq!(order, ["z", "c", "B", "a"]);
}

async fn a_lease_is_held_extended_and_ended_only_by_its_owner(db: TestDb) {
    let s = with_bundle(&db).await;
    s.submit(new_run("r1", "prod", None, 1)).await.unwrap();
    let run = s.claim("w1", 10, 100).await.unwrap().unwrap();
    assert_eq!((run.id.as_str(), run.attempts), ("r1", 1));
    assert!(s.claim("w2", 10, 100).await.unwrap().is_none());
    assert_eq!(s.heartbeat("r1", "w2", 200).await.unwrap(), None);
    assert_eq!(s.heartbeat("r1", "w1", 200).await.unwrap(), Some(false));
    assert!(s.reclaim_expired(150, 5).await.unwrap().is_empty());
    assert!(!s.finish("r1", "w2", &done("x"), None, 160).await.unwrap());
    assert!(s.finish("r1", "w1", &done("x"), None, 160).await.unwrap());
    assert!(!s.finish("r1", "w1", &done("y"), None, 170).await.unwrap());
    let run = s.run("r1").await.unwrap().unwrap();
    assert_eq!(run.status, RunState::Succeeded);
    assert_eq!(run.output, Some(json!("x")));
    assert_eq!(run.usage, Some(json!({ "input_tokens": 3 })));
    assert_eq!((run.started_at, run.finished_at), (Some(10), Some(160)));
    assert_eq!(s.heartbeat("r1", "w1", 300).await.unwrap(), None);
}

async fn a_released_run_is_queued_again_without_counting_the_attempt(db: TestDb) {
    let s = with_bundle(&db).await;
    s.submit(new_run("r1", "prod", None, 1)).await.unwrap();
    s.claim("w1", 10, 100).await.unwrap().unwrap();
    s.release("r1", "w2").await.unwrap();
    assert_eq!(
        s.run("r1").await.unwrap().unwrap().status,
        RunState::Running
    );
    s.release("r1", "w1").await.unwrap();
    let run = s.run("r1").await.unwrap().unwrap();
    assert_eq!((run.status, run.attempts), (RunState::Queued, 0));
    let again = s.claim("w2", 20, 100).await.unwrap().unwrap();
    // The first start is kept.
    assert_eq!((again.attempts, again.started_at), (1, Some(10)));
}

async fn expired_leases_are_requeued_failed_or_cancelled(db: TestDb) {
    let s = with_bundle(&db).await;
    for (id, at) in [("keep", 1), ("tired", 2), ("stop", 3), ("live", 4)] {
        s.submit(new_run(id, "prod", None, at)).await.unwrap();
    }
    // "tired" has been claimed twice already.
    s.claim("w0", 0, 5).await.unwrap().unwrap();
    assert_eq!(
        s.reclaim_expired(1, 10).await.unwrap(),
        Vec::<String>::new()
    );
    s.release("keep", "w0").await.unwrap();
    let keep = s.claim("w1", 0, 10).await.unwrap().unwrap();
    assert_eq!(keep.id, "keep");
    let tired = s.claim("w1", 0, 10).await.unwrap().unwrap();
    assert_eq!(tired.id, "tired");
    let mut got = s.reclaim_expired(20, 10).await.unwrap();
    got.sort();
    assert_eq!(got, ["keep", "tired"]);
    s.release("keep", "nobody").await.unwrap();
    let keep = s.claim("w2", 20, 30).await.unwrap().unwrap();
    let tired = s.claim("w2", 20, 30).await.unwrap().unwrap();
    let stop = s.claim("w2", 20, 30).await.unwrap().unwrap();
    let live = s.claim("w2", 20, 1000).await.unwrap().unwrap();
    assert_eq!(
        [
            keep.id.as_str(),
            tired.id.as_str(),
            stop.id.as_str(),
            live.id.as_str()
        ],
        ["keep", "tired", "stop", "live"]
    );
    assert_eq!((keep.attempts, tired.attempts), (2, 2));
    s.cancel("stop", 25).await.unwrap();
    s.heartbeat("keep", "w2", 35).await.unwrap();
    // keep: 2 attempts < 3, its lease ran to 35; tired: 2 attempts, max 2.
    let mut got = s.reclaim_expired(40, 3).await.unwrap();
    got.sort();
    assert_eq!(got, ["keep", "stop", "tired"]);
    let status = |id: &'static str| {
        let s = s.clone();
        async move { s.run(id).await.unwrap().unwrap() }
    };
    assert_eq!(status("keep").await.status, RunState::Queued);
    assert_eq!(status("tired").await.status, RunState::Queued);
    assert_eq!(status("stop").await.status, RunState::Cancelled);
    assert_eq!(status("live").await.status, RunState::Running);
    let tired = s.claim("w3", 50, 60).await.unwrap().unwrap();
    let tired = if tired.id == "tired" {
        tired
    } else {
        s.claim("w3", 50, 60).await.unwrap().unwrap()
    };
    assert_eq!((tired.id.as_str(), tired.attempts), ("tired", 3));
    let got = s.reclaim_expired(70, 3).await.unwrap();
    assert!(got.contains(&"tired".to_string()), "{got:?}");
    let tired = status("tired").await;
    assert_eq!(tired.status, RunState::Failed);
    assert_eq!(
        tired.error.as_deref(),
        Some("the run was abandoned by its worker 3 times; giving up")
    );
    assert_eq!(tired.finished_at, Some(70));
}

async fn cancelling_depends_on_where_the_run_is(db: TestDb) {
    let s = with_bundle(&db).await;
    s.submit(new_run("running", "prod", None, 1)).await.unwrap();
    s.submit(new_run("queued", "prod", None, 2)).await.unwrap();
    s.claim("w1", 0, 100).await.unwrap().unwrap();
    let queued = s.cancel("queued", 5).await.unwrap().unwrap();
    assert_eq!(
        (queued.status, queued.error.as_deref(), queued.finished_at),
        (RunState::Cancelled, Some("cancelled"), Some(5))
    );
    let running = s.cancel("running", 5).await.unwrap().unwrap();
    assert_eq!(
        (running.status, running.cancel_requested),
        (RunState::Running, true)
    );
    assert_eq!(s.heartbeat("running", "w1", 200).await.unwrap(), Some(true));
    assert!(s.cancel("nope", 5).await.unwrap().is_none());
    assert!(
        s.finish("running", "w1", &done("x"), None, 6)
            .await
            .unwrap()
    );
    let ended = s.cancel("running", 7).await.unwrap().unwrap();
    assert_eq!(ended.status, RunState::Succeeded);
    assert!(s.claim("w1", 10, 100).await.unwrap().is_none());
}

async fn a_step_committed_again_replaces_the_earlier_one(db: TestDb) {
    let s = with_bundle(&db).await;
    s.submit(new_run("r1", "prod", None, 1)).await.unwrap();
    s.claim("w1", 0, 100).await.unwrap().unwrap();
    for (index, output) in [(1, "second"), (0, "first"), (1, "second again")] {
        assert!(
            s.record_step("r1", "w1", &step("r1", index, output))
                .await
                .unwrap()
        );
    }
    let steps = s.steps("r1").await.unwrap();
    let got: Vec<(u32, Option<serde_json::Value>)> = steps
        .iter()
        .map(|s| (s.step_index, s.output.clone()))
        .collect();
    assert_eq!(
        got,
        [(0, Some(json!("first"))), (1, Some(json!("second again")))]
    );
    assert!(s.steps("nope").await.unwrap().is_empty());
}

fn ids(runs: Vec<flowrun_server::store::RunRow>) -> Vec<String> {
    runs.into_iter().map(|r| r.id).collect()
}

/// Each step's index and output.
type Outputs = Vec<(u32, Option<serde_json::Value>)>;

fn outputs(steps: &[StepRecord]) -> Outputs {
    steps
        .iter()
        .map(|s| (s.step_index, s.output.clone()))
        .collect()
}

async fn a_claim_brings_the_steps_earlier_attempts_committed(db: TestDb) {
    let s = with_bundle(&db).await;
    for (id, at) in [("fresh", 1), ("resumed", 2), ("later", 3)] {
        s.submit(new_run(id, "prod", None, at)).await.unwrap();
    }
    // `resumed` commits two steps (out of order) on its first attempt, then its worker dies.
    s.claim("w1", 0, 100).await.unwrap().unwrap();
    s.claim("w1", 0, 100).await.unwrap().unwrap();
    for (index, output) in [(1, "b"), (0, "a")] {
        assert!(
            s.record_step("resumed", "w1", &step("resumed", index, output))
                .await
                .unwrap()
        );
    }
    assert_eq!(s.reclaim_expired(200, 5).await.unwrap().len(), 2);
    let claimed = s.claim_with_steps("w2", 210, 300, 2).await.unwrap();
    let got: Vec<(&str, u32, Outputs)> = claimed
        .iter()
        .map(|c| {
            let steps = c.steps.as_ref().expect("steps");
            (c.run.id.as_str(), c.run.attempts, outputs(steps))
        })
        .collect();
    assert_eq!(
        got,
        [
            ("fresh", 2, vec![]),
            (
                "resumed",
                2,
                vec![(0, Some(json!("a"))), (1, Some(json!("b")))]
            ),
        ]
    );
    assert!(claimed.iter().all(|c| c.run.status == RunState::Running));
    let last = s.claim_with_steps("w2", 220, 300, 5).await.unwrap();
    assert_eq!(
        last.iter().map(|c| c.run.id.as_str()).collect::<Vec<_>>(),
        ["later"]
    );
    assert!(
        s.claim_with_steps("w2", 230, 300, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_step_that_cannot_be_decoded_spoils_only_its_own_claim(db: TestDb) {
    let s = with_bundle(&db).await;
    for (id, at) in [("bad", 1), ("good", 2)] {
        s.submit(new_run(id, "prod", None, at)).await.unwrap();
        s.claim("w1", 0, 100).await.unwrap().unwrap();
        assert!(s.record_step(id, "w1", &step(id, 0, "x")).await.unwrap());
    }
    db.raw_sql("UPDATE steps SET record = 'not json' WHERE run_id = 'bad'")
        .await;
    assert_eq!(s.reclaim_expired(200, 5).await.unwrap().len(), 2);
    let claimed = s.claim_with_steps("w2", 210, 300, 5).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].run.id, "bad");
    assert!(claimed[0].steps.is_err());
    assert_eq!(claimed[1].run.id, "good");
    assert_eq!(
        outputs(claimed[1].steps.as_ref().expect("good steps")),
        [(0, Some(json!("x")))]
    );
}

async fn a_step_is_committed_only_under_its_lease(db: TestDb) {
    let s = with_bundle(&db).await;
    s.submit(new_run("r1", "prod", None, 1)).await.unwrap();
    // Queued: nobody holds it.
    assert!(
        !s.record_step("r1", "w1", &step("r1", 0, "a"))
            .await
            .unwrap()
    );
    s.claim("w1", 10, 100).await.unwrap().unwrap();
    assert!(
        !s.record_step("r1", "w2", &step("r1", 0, "b"))
            .await
            .unwrap()
    );
    assert!(
        s.record_step("r1", "w1", &step("r1", 0, "c"))
            .await
            .unwrap()
    );
    // The lease expires and another worker takes the run: the first one's steps are refused.
    s.reclaim_expired(200, 5).await.unwrap();
    s.claim("w2", 210, 300).await.unwrap().unwrap();
    assert!(
        !s.record_step("r1", "w1", &step("r1", 1, "late"))
            .await
            .unwrap()
    );
    assert!(
        s.record_step("r1", "w2", &step("r1", 1, "d"))
            .await
            .unwrap()
    );
    assert_eq!(
        outputs(&s.steps("r1").await.unwrap()),
        [(0, Some(json!("c"))), (1, Some(json!("d")))]
    );
    assert!(
        !s.record_step("nope", "w1", &step("nope", 0, "x"))
            .await
            .unwrap()
    );
}

async fn the_last_step_commits_with_the_end_of_the_run(db: TestDb) {
    let s = with_bundle(&db).await;
    s.submit(new_run("r1", "prod", None, 1)).await.unwrap();
    s.claim("w1", 10, 100).await.unwrap().unwrap();
    assert!(
        s.record_step("r1", "w1", &step("r1", 0, "a"))
            .await
            .unwrap()
    );
    // Not the owner: neither the end nor the step is written.
    let last = step("r1", 1, "b");
    assert!(
        !s.finish("r1", "w2", &done("b"), Some(&last), 20)
            .await
            .unwrap()
    );
    assert_eq!(outputs(&s.steps("r1").await.unwrap()).len(), 1);
    assert!(
        s.finish("r1", "w1", &done("b"), Some(&last), 20)
            .await
            .unwrap()
    );
    assert_eq!(
        outputs(&s.steps("r1").await.unwrap()),
        [(0, Some(json!("a"))), (1, Some(json!("b")))]
    );
    let run = s.run("r1").await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.finished_at),
        (RunState::Succeeded, Some(20))
    );
    // A last step replacing one committed by an earlier attempt.
    s.submit(new_run("r2", "prod", None, 2)).await.unwrap();
    s.claim("w1", 30, 100).await.unwrap().unwrap();
    assert!(
        s.record_step("r2", "w1", &step("r2", 0, "old"))
            .await
            .unwrap()
    );
    let again = step("r2", 0, "new");
    assert!(
        s.finish("r2", "w1", &done("new"), Some(&again), 40)
            .await
            .unwrap()
    );
    assert_eq!(
        outputs(&s.steps("r2").await.unwrap()),
        [(0, Some(json!("new")))]
    );
}

async fn claim_batch_takes_the_oldest_runs_up_to_its_limit(db: TestDb) {
    let s = with_bundle(&db).await;
    for (id, at) in [("c", 5), ("a", 7), ("B", 7), ("z", 1), ("y", 9)] {
        s.submit(new_run(id, "prod", None, at)).await.unwrap();
    }
    let first = s.claim_batch("w1", 10, 100, 3).await.unwrap();
    assert_eq!(ids(first.clone()), ["z", "c", "B"]);
    assert!(
        first
            .iter()
            .all(|r| (r.status, r.attempts, r.started_at) == (RunState::Running, 1, Some(10)))
    );
    // Each claimed run is held by the claim's owner.
    assert_eq!(s.heartbeat("c", "w1", 150).await.unwrap(), Some(false));
    let rest = s.claim_batch("w2", 20, 100, 10).await.unwrap();
    assert_eq!(ids(rest), ["a", "y"]);
    assert!(s.claim_batch("w3", 30, 100, 10).await.unwrap().is_empty());
}

async fn concurrent_batch_claimers_never_take_the_same_run(db: TestDb) {
    let s = with_bundle(&db).await;
    for i in 0..90 {
        s.submit(new_run(&format!("r{i:03}"), "prod", None, i))
            .await
            .unwrap();
    }
    let claimers = (0..6).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = s.claim_batch(&format!("w{w}"), 0, 100, 4).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|r| r.id));
            }
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (90, 90));
}

async fn abandoned_runs_are_recovered_where_the_store_can_tell(db: TestDb) {
    let s = with_bundle(&db).await;
    for (id, at) in [("tired", 1), ("held", 2), ("stop", 3), ("queued", 4)] {
        let mut run = new_run(id, "prod", None, at);
        run.webhook_url = Some(HOOK.into());
        s.submit(run).await.unwrap();
    }
    // "tired" was claimed twice; every lease is still live at 50.
    assert_eq!(s.claim("w0", 0, 1).await.unwrap().unwrap().id, "tired");
    s.reclaim_expired(5, 10).await.unwrap();
    for _ in 0..3 {
        s.claim("w1", 10, 1_000).await.unwrap().unwrap();
    }
    s.cancel("stop", 20).await.unwrap();
    let got = s.recover_abandoned(50, 2).await.unwrap();
    let status = async |id: &str| s.run(id).await.unwrap().unwrap().status;
    match db.backend() {
        Backend::Sqlite => {
            let got: HashSet<String> = got.into_iter().collect();
            let want: HashSet<String> = ["held", "tired", "stop"].map(String::from).into();
            assert_eq!(got, want);
            assert_eq!(status("held").await, RunState::Queued);
            assert_eq!(status("tired").await, RunState::Failed);
            assert_eq!(status("stop").await, RunState::Cancelled);
            // The ended ones queue their webhooks; the re-queued one keeps its attempt count.
            let hooks = s.claim_deliveries("d", 50, 100, 10).await.unwrap();
            let mut ended: Vec<String> = hooks.into_iter().map(|d| d.run.id).collect();
            ended.sort();
            assert_eq!(ended, ["stop", "tired"]);
            let again = s.claim("w2", 60, 100).await.unwrap().unwrap();
            assert_eq!((again.id.as_str(), again.attempts), ("held", 2));
        }
        // Other replicas may hold them: only lease expiry frees them.
        Backend::Postgres => {
            assert!(got.is_empty());
            assert_eq!(status("held").await, RunState::Running);
        }
    }
    assert_eq!(status("queued").await, RunState::Queued);
}

async fn keys_are_found_by_hash_and_unique(db: TestDb) {
    let s = db.open().await;
    let key = KeyRow {
        id: "k1".into(),
        hash: "h1".into(),
        env: "prod".into(),
        role: "run".into(),
        created_at: 5,
    };
    s.insert_key(&key).await.unwrap();
    let found = s.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.env, found.role, found.created_at),
        ("k1".to_string(), "prod".to_string(), "run".to_string(), 5)
    );
    assert!(s.key_by_hash("h2").await.unwrap().is_none());
    let twin = KeyRow {
        id: "k2".into(),
        ..key
    };
    assert!(s.insert_key(&twin).await.is_err());
}

async fn concurrent_claimers_never_take_the_same_run(db: TestDb) {
    let s = with_bundle(&db).await;
    for i in 0..60 {
        s.submit(new_run(&format!("r{i:03}"), "prod", None, i))
            .await
            .unwrap();
    }
    let claimers = (0..6).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(run) = s.claim(&format!("w{w}"), 0, 100).await.unwrap() {
                got.push(run.id);
            }
            got
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (60, 60));
}

async fn racing_submits_with_one_key_make_one_run(db: TestDb) {
    let s = with_bundle(&db).await;
    let submits = (0..8).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            s.submit(new_run(&format!("r{i}"), "prod", Some("same"), i))
                .await
                .unwrap()
        })
    });
    let mut created = 0;
    let mut ids = HashSet::new();
    for sub in submits {
        let sub = sub.await.unwrap();
        created += usize::from(sub.created);
        ids.insert(sub.run.id);
    }
    assert_eq!((created, ids.len()), (1, 1));
}

async fn postgres_db(test: &str) -> Option<TestDb> {
    TestDb::new(Backend::Postgres, test).await
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<StoreEvent>, want: &StoreEvent) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = rx.recv().await {
            if &e == want {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tells_other_stores_what_changed() {
    let Some(db) = postgres_db("postgres_tells_other_stores_what_changed").await else {
        return;
    };
    let (a, b) = (with_bundle(&db).await, db.open().await);
    let mut events = b.subscribe().expect("postgres has an event feed");
    // The feed starts with a catch-up `Queued` once it listens.
    next_event(&mut events, &StoreEvent::Queued).await;
    a.submit(new_run("r1", "prod", None, 1)).await.unwrap();
    next_event(&mut events, &StoreEvent::Queued).await;
    a.claim("w1", 0, 100).await.unwrap().unwrap();
    a.cancel("r1", 1).await.unwrap();
    next_event(&mut events, &StoreEvent::CancelRequested("r1".into())).await;
    a.finish("r1", "w1", &done("x"), None, 2).await.unwrap();
    next_event(&mut events, &StoreEvent::Ended("r1".into())).await;
    a.submit(new_run("r2", "prod", None, 3)).await.unwrap();
    a.cancel("r2", 4).await.unwrap();
    next_event(&mut events, &StoreEvent::Ended("r2".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once() {
    let Some(db) = postgres_db("replicas_starting_at_once_migrate_once").await else {
        return;
    };
    let url = db.postgres_url().expect("a postgres db").to_string();
    let starts = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PostgresStore::connect(&url, 2).await.map(|_| ()) })
    });
    for s in starts {
        s.await.unwrap().expect("a replica starts");
    }
    let s = db.open().await;
    s.ping().await.unwrap();
}

#[tokio::test]
async fn a_postgres_error_never_shows_the_password() {
    let err = PostgresStore::connect("postgres://app:hunter2@127.0.0.1:1/nowhere", 1)
        .await
        .err()
        .expect("nothing listens on port 1");
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("postgres://app:***@127.0.0.1:1/nowhere"),
        "{text}"
    );
    let bad = PostgresStore::connect("postgres://app:hunter2@host:notaport/db", 1)
        .await
        .err()
        .expect("a bad port");
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
    assert!(
        matches!(bad, flowrun_server::store::StoreError::BadUrl { .. }),
        "{bad:?}"
    );
}
