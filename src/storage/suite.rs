//! The behaviour suites of the roles a backend of its own may take (the
//! control role today), written once against the role's trait: the SQLite
//! store's unit tests and the PostgreSQL coordination store's integration
//! tests run the same suite. Only tests call it.

use super::{AlertFilter, ControlStore, DeliveryUpdate, NewAlert, StoredBudget};

/// Budgets saved, replaced, loaded and deleted; alerts recorded once per
/// budget, period and threshold; deliveries due, retried, delivered,
/// failed and refused, and alerts listed by filter.
pub async fn budgets_alerts_and_deliveries(storage: &dyn ControlStore) {
    let budget = |id: &str, name: &str| StoredBudget {
        id: id.into(),
        project: "default".into(),
        name: name.into(),
        origin: "api".into(),
        definition: format!("{{\"name\":\"{name}\"}}"),
    };
    storage.save_budget(budget("b1", "one")).await.unwrap();
    storage.save_budget(budget("b2", "two")).await.unwrap();
    storage.save_budget(budget("b1", "one-renamed")).await.unwrap();
    let loaded = storage.load_budgets().await.unwrap();
    assert_eq!(loaded, vec![budget("b1", "one-renamed"), budget("b2", "two")]);
    assert!(storage.delete_budget("b2").await.unwrap());
    assert!(!storage.delete_budget("b2").await.unwrap());

    let alert = |threshold: f64, crossed_ms: i64, urls: &[&str]| NewAlert {
        budget_id: "b1".into(),
        threshold,
        period_start: 1_000,
        crossed_ms,
        body: format!("{{\"threshold\":{threshold}}}"),
        signature: "sha256=00".into(),
        urls: urls.iter().map(|u| u.to_string()).collect(),
    };
    let first = storage.insert_alert(alert(50.0, 2_000, &["http://a/", "http://b/"])).await;
    assert!(first.unwrap().is_some());
    // The same budget, period and threshold is recorded once.
    assert_eq!(storage.insert_alert(alert(50.0, 9_000, &["http://a/"])).await.unwrap(), None);
    storage.insert_alert(alert(80.0, 3_000, &[])).await.unwrap().unwrap();
    let mut since = storage.alerts_since("b1", 2_500).await.unwrap();
    since.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(since, vec![(80.0, 1_000, 3_000)]);
    assert_eq!(storage.alerts_since("b1", 0).await.unwrap().len(), 2);

    assert_eq!(storage.next_delivery_ms().await.unwrap(), Some(2_000));
    assert!(storage.due_deliveries(1_999, 10).await.unwrap().is_empty());
    let due = storage.due_deliveries(2_000, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!((due[0].url.as_str(), due[0].attempts, due[0].crossed_ms), ("http://a/", 0, 2_000));
    assert_eq!(due[0].body, "{\"threshold\":50}");
    let retry = DeliveryUpdate::Retry { next_ms: 5_000, error: "HTTP 500".into() };
    storage.update_delivery(due[0].id, retry).await.unwrap();
    storage.update_delivery(due[1].id, DeliveryUpdate::Delivered { at_ms: 2_100 }).await.unwrap();
    assert_eq!(storage.next_delivery_ms().await.unwrap(), Some(5_000));
    let again = storage.due_deliveries(6_000, 10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    let failed = DeliveryUpdate::Failed { error: "gave up".into() };
    storage.update_delivery(again[0].id, failed).await.unwrap();
    assert_eq!(storage.next_delivery_ms().await.unwrap(), None);

    let all = storage.list_alerts(AlertFilter { limit: 10, ..AlertFilter::default() }).await;
    let all = all.unwrap();
    assert_eq!(all.iter().map(|a| a.threshold).collect::<Vec<_>>(), vec![80.0, 50.0]);
    let delivered: Vec<&str> = all[1].deliveries.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(delivered, vec!["failed", "delivered"]);
    assert_eq!(all[1].deliveries[0].last_error.as_deref(), Some("gave up"));
    assert_eq!(all[1].payload["threshold"], 50.0);
    let failed_only =
        AlertFilter { status: Some("failed".into()), limit: 10, ..AlertFilter::default() };
    assert_eq!(storage.list_alerts(failed_only).await.unwrap().len(), 1);
    let other = AlertFilter { budget_id: Some("b9".into()), limit: 10, ..AlertFilter::default() };
    assert!(storage.list_alerts(other).await.unwrap().is_empty());

    // A refused delivery is final and was never attempted.
    storage
        .insert_alert(alert(100.0, 10_000, &["http://169.254.169.254/"]))
        .await
        .unwrap()
        .unwrap();
    let due = storage.due_deliveries(10_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let refused = DeliveryUpdate::Refused { error: "refused: metadata".into() };
    storage.update_delivery(due[0].id, refused).await.unwrap();
    assert_eq!(storage.next_delivery_ms().await.unwrap(), None);
    let refused_only =
        AlertFilter { status: Some("refused".into()), limit: 10, ..AlertFilter::default() };
    let refused = storage.list_alerts(refused_only).await.unwrap();
    assert_eq!(refused.len(), 1);
    let d = &refused[0].deliveries[0];
    assert_eq!(
        (d.status.as_str(), d.attempts, d.last_error.as_deref()),
        ("refused", 0, Some("refused: metadata"))
    );
}
