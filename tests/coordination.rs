//! Claims on idempotency keys in a real PostgreSQL (Debian's, started on a
//! free port by tests/common): nodes claiming overlapping batches at once
//! each take a key at most once between them; a node that claims again
//! (a retry after a crash) hears the key is its own; another node's claim
//! is undecided until that node confirms it, and can be given back; nodes starting at
//! once create the schema once; a stopped server is an error within the
//! deadline, never an answer. Budgets, alerts and deliveries pass the
//! same behaviour suite as the local store; a due delivery goes to one
//! node at a time.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use tally::coordination::Coordination;
use tally::coordination::claims::Claim;

const TIMEOUT: Duration = Duration::from_secs(5);

fn keys(range: std::ops::Range<u32>, shuffle: u32) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> =
        range.map(|i| (format!("p{}", i % 3), format!("id-{i:05}"))).collect();
    // Each node sends its batch in its own order.
    let by = shuffle as usize % keys.len().max(1);
    keys.rotate_left(by);
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_take_each_key_once_and_a_retry_hears_it_is_its_own() {
    let server = Postgres::start();
    let url = server.fresh_database();
    // Four nodes start at once; each batch overlaps the others'.
    let mut nodes = Vec::new();
    for n in 0..4 {
        let url = url.clone();
        nodes.push(tokio::spawn(async move {
            Coordination::connect(&url, &format!("node-{n}"), TIMEOUT).await.expect("connect")
        }));
    }
    let mut connected = Vec::new();
    for node in nodes {
        connected.push(std::sync::Arc::new(node.await.unwrap()));
    }
    let mut claims = Vec::new();
    for (n, node) in connected.iter().enumerate() {
        let node = node.clone();
        let batch = keys(n as u32 * 250..n as u32 * 250 + 1000, n as u32 * 97);
        claims.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for chunk in batch.chunks(100) {
                let got = node.claim(chunk, &[]).await.expect("claim").claims;
                answers.extend(chunk.iter().cloned().zip(got));
            }
            answers
        }));
    }
    let mut holder: HashMap<(String, String), usize> = HashMap::new();
    for (n, task) in claims.into_iter().enumerate() {
        for (key, claim) in task.await.unwrap() {
            match claim {
                Claim::Taken => {
                    assert!(holder.insert(key.clone(), n).is_none(), "{key:?} taken twice");
                }
                Claim::Theirs { .. } => {}
                Claim::Ours => panic!("node {n} never claimed {key:?} before"),
            }
        }
    }
    // Every key of the union is held, by exactly one node.
    assert_eq!(holder.len(), 1750, "keys 0..1750 each taken once");
    // A node claiming again hears which keys are its own.
    let again = keys(0..1750, 0);
    let answers = connected[1].claim(&again, &[]).await.unwrap().claims;
    for (key, claim) in again.iter().zip(&answers) {
        let expected = if holder[key] == 1 {
            Claim::Ours
        } else {
            Claim::Theirs { node: format!("node-{}", holder[key]), committed: false }
        };
        assert_eq!(claim, &expected, "{key:?}");
    }
    // A key given twice in one batch gets one answer twice.
    let twice = vec![("p9".to_owned(), "x".to_owned()), ("p9".to_owned(), "x".to_owned())];
    assert_eq!(
        connected[2].claim(&twice, &[]).await.unwrap().claims,
        vec![Claim::Taken, Claim::Taken]
    );
}

#[tokio::test]
async fn a_claim_is_undecided_until_its_batch_is_confirmed_and_given_back_if_never_committed() {
    let server = Postgres::start();
    let url = server.fresh_database();
    let a = Coordination::connect(&url, "node-a", TIMEOUT).await.unwrap();
    let b = Coordination::connect(&url, "node-b", TIMEOUT).await.unwrap();
    let key = |k: &str| ("p".to_owned(), k.to_owned());
    let first = a.claim(&[key("one"), key("two")], &[]).await.unwrap();
    assert_eq!(first.claims, vec![Claim::Taken; 2]);
    let third = a.claim(&[key("three")], &[]).await.unwrap();
    let undecided = Claim::Theirs { node: "node-a".into(), committed: false };
    assert_eq!(b.claim(&[key("one")], &[]).await.unwrap().claims, vec![undecided.clone()]);
    // Node a confirms its first batch with its next claim; node b hears
    // both its keys are duplicates. Node b confirming a's batch changes
    // nothing.
    let fourth = a.claim(&[key("four")], &[first.batch]).await.unwrap();
    b.confirm(&[third.batch]).await.unwrap();
    let duplicate = Claim::Theirs { node: "node-a".into(), committed: true };
    let answer = b.claim(&[key("two"), key("one"), key("three")], &[]).await.unwrap();
    assert_eq!(answer.claims, vec![duplicate.clone(), duplicate, undecided.clone()]);
    // Node a claiming "four" again (a retry after a failed commit) hears
    // it is its own, and the key moves to the new batch.
    let again = a.claim(&[key("four")], &[]).await.unwrap();
    assert_eq!(again.claims, vec![Claim::Ours]);
    // After a crash node a finds what it never confirmed, batch by batch,
    // and gives back "three" (never committed); node b may then take it.
    let open = a.unconfirmed(10).await.unwrap();
    let expected = vec![
        (third.batch, vec![key("three")]),
        (fourth.batch, vec![]),
        (again.batch, vec![key("four")]),
    ];
    assert_eq!(open, expected);
    assert_eq!(a.release(&[third.batch, first.batch]).await.unwrap(), 1);
    assert_eq!(b.claim(&[key("three")], &[]).await.unwrap().claims, vec![Claim::Taken]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_coordination_store_is_an_error_not_an_answer() {
    let mut server = Postgres::start();
    let url = server.fresh_database();
    let node = Coordination::connect(&url, "node-a", Duration::from_secs(2)).await.unwrap();
    server.stop();
    let started = Instant::now();
    let answer = node.claim(&[("p".to_owned(), "k".to_owned())], &[]).await;
    assert!(answer.is_err(), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn budgets_alerts_and_deliveries_behave_as_in_the_local_store() {
    let server = Postgres::start();
    let url = server.fresh_database();
    let node = Coordination::connect(&url, "node-0", TIMEOUT).await.expect("connect");
    tally::storage::suite::budgets_alerts_and_deliveries(&node).await;
}

#[tokio::test]
async fn a_due_delivery_is_leased_to_one_node_and_taken_over_when_the_lease_runs_out() {
    use tally::storage::{ControlStore, DeliveryUpdate, NewAlert};
    let server = Postgres::start();
    let url = server.fresh_database();
    let a = Coordination::connect(&url, "node-a", TIMEOUT).await.unwrap();
    let b = Coordination::connect(&url, "node-b", TIMEOUT).await.unwrap();
    let alert = || NewAlert {
        budget_id: "b1".into(),
        threshold: 80.0,
        period_start: 0,
        crossed_ms: 1_000,
        body: "{}".into(),
        signature: "sha256=00".into(),
        urls: vec!["http://one/".into(), "http://two/".into(), "http://three/".into()],
    };
    // Both nodes saw the crossing; one records it.
    let recorded = [a.insert_alert(alert()).await.unwrap(), b.insert_alert(alert()).await.unwrap()];
    assert_eq!(recorded.iter().filter(|r| r.is_some()).count(), 1);
    let taken_a = a.due_deliveries(2_000, 2).await.unwrap();
    let taken_b = b.due_deliveries(2_000, 10).await.unwrap();
    let urls = |due: &[tally::storage::DueDelivery]| -> Vec<String> {
        due.iter().map(|d| d.url.clone()).collect()
    };
    assert_eq!(urls(&taken_a), ["http://one/", "http://two/"]);
    assert_eq!(urls(&taken_b), ["http://three/"], "each delivery to one node");
    assert!(a.due_deliveries(2_000, 10).await.unwrap().is_empty());
    // Node a delivers one and dies with the other; once its lease runs
    // out, node b takes that one over.
    a.update_delivery(taken_a[0].id, DeliveryUpdate::Delivered { at_ms: 2_100 }).await.unwrap();
    b.update_delivery(taken_b[0].id, DeliveryUpdate::Delivered { at_ms: 2_200 }).await.unwrap();
    assert!(b.due_deliveries(60_000, 10).await.unwrap().is_empty(), "still leased");
    let over = b.due_deliveries(2_000 + 600_001, 10).await.unwrap();
    assert_eq!(urls(&over), ["http://two/"]);
}
