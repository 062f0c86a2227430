//! Fair shares of the upstream budget: a caller key with `per-minute=N` sends at most N
//! requests a minute to Qpien; past that it gets 429 with `Retry-After`, while other keys
//! are still served within the account's limit. Answers that need no call to Qpien
//! (cache hits) cost a key nothing.

use serde_json::Value;

use crate::helpers::{Setup, add_key, assert_problem, spawn_app_with};

/// The id of seeded conversation `n` (1 to 72), none of them read yet.
fn conversation(n: u32) -> String {
    format!("6650a1{n:018x}")
}

#[tokio::test]
async fn a_key_flooding_past_its_share_gets_429_while_another_key_is_served() {
    // Arrange: a poller with a share of 5 a minute and a CRM without a share of its own.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caller-keys");
    let poller = add_key(&file, "poller", "read", Some(5));
    let crm = add_key(&file, "crm", "read", None);
    let app = spawn_app_with(Setup::with_keys(&file)).await;
    // The service's token is fetched on the CRM's first read, so it costs the poller nothing.
    let first = app
        .get_as(&format!("/conversations/{}", conversation(1)), &crm)
        .await;
    assert_eq!(first.status().as_u16(), 200);
    let reads_before = app.upstream_calls_of("getConversation");

    // Act: the poller reads 20 different conversations; then the CRM reads 10 more.
    let mut flood = Vec::new();
    for n in 2..=21 {
        flood.push(
            app.get_as(&format!("/conversations/{}", conversation(n)), &poller)
                .await,
        );
    }
    let poller_reads = app.upstream_calls_of("getConversation") - reads_before;
    let mut crm_statuses = Vec::new();
    for n in 22..=31 {
        let response = app
            .get_as(&format!("/conversations/{}", conversation(n)), &crm)
            .await;
        crm_statuses.push(response.status().as_u16());
    }

    // Assert
    let served = flood.iter().filter(|r| r.status() == 200).count();
    assert!(
        poller_reads <= 5,
        "the poller's flood reached Qpien {poller_reads} times"
    );
    assert!(
        (1..=5).contains(&served),
        "{served} of the poller's reads answered"
    );
    let mut refused = 0;
    for response in flood.into_iter().filter(|r| r.status() == 429) {
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_problem(response, 429).await;
        refused += 1;
    }
    assert_eq!(served + refused, 20, "every other answer is a 429");
    assert_eq!(
        crm_statuses,
        vec![200; 10],
        "the CRM is served while the poller is refused"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let line = format!("qpien_rest_caller_upstream_calls_total{{key=\"poller\"}} {poller_reads}");
    assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
}

#[tokio::test]
async fn a_read_answered_from_the_cache_costs_the_key_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caller-keys");
    let poller = add_key(&file, "poller", "read", Some(2));
    let crm = add_key(&file, "crm", "read", None);
    let app = spawn_app_with(Setup::with_keys(&file)).await;
    let warm = app
        .get_as("/conversations/6650a1000000000000000001", &crm)
        .await;
    assert_eq!(warm.status().as_u16(), 200);
    let reads_before = app.upstream_calls_of("getConversation");
    let read = |n: u32| format!("/conversations/{}", conversation(n));

    // Act: the same conversation three times within the cache's lifetime, then one more.
    let mut statuses = Vec::new();
    for path in [read(40), read(40), read(40), read(41)] {
        statuses.push(app.get_as(&path, &poller).await.status().as_u16());
    }
    let third = app.get_as(&read(42), &poller).await;

    // Assert: two upstream reads, the share; the repeats came from the cache.
    assert_eq!(statuses, vec![200; 4]);
    assert_eq!(app.upstream_calls_of("getConversation") - reads_before, 2);
    let problem: Value = assert_problem(third, 429).await;
    assert!(problem["detail"].is_string());
}
