//! Webhook subscriptions across processes: the real binary killed (`kill -9`) in the
//! middle of a delivery delivers it after the restart, and three replicas sharing Redis
//! deliver each event once per subscription and take over a killed one's.

use std::time::Duration;

use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig};
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, eventually};
use crate::process::Service;
use crate::receiver::{Delivery, Receiver, signed_by};
use crate::redis_server::RedisServer;

#[tokio::test]
async fn a_delivery_cut_short_by_kill_9_is_made_after_the_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let data = data_dir.path().to_str().unwrap().to_owned();
    // The embedded sandbox of `cargo run`, quiet, so the only event is the test's.
    let env = [
        ("DATA_DIR", data.as_str()),
        ("SANDBOX_ACTIVITY_PER_MINUTE", "0"),
        ("SUBSCRIPTION_RETRY_BASE_MS", "50"),
    ];
    let receiver = Receiver::start().await;
    receiver.stall(1);
    qpien_rest::install_tls_provider();
    let http = reqwest::Client::new();
    let first = Service::start(&env);
    let created: Value = http
        .post(format!("{}/subscriptions", first.address))
        .json(&json!({ "url": receiver.url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let list: Value = http
        .get(format!("{}/conversations?pageSize=1", first.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let patched = http
        .patch(format!("{}/conversations/{id}", first.address))
        .header("content-type", "application/merge-patch+json")
        .body(json!({ "priority": "urgent" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    let during = receiver.wait_for(1).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let second = Service::start(&env);
    let deliveries = receiver.wait_for(2).await;
    let path = format!(
        "{}/subscriptions/{}",
        second.address,
        created["id"].as_str().unwrap()
    );
    let shown: Value = eventually("the backlog delivered", PATIENCE, async || {
        let shown: Value = http.get(&path).send().await.ok()?.json().await.ok()?;
        (shown["backlog"] == 0).then_some(shown)
    })
    .await;

    assert_eq!(deliveries[1].id, during[0].id, "the same event, again");
    assert_eq!(deliveries[1].body, during[0].body);
    assert!(
        signed_by(&deliveries[1], &secret),
        "the secret survived the restart"
    );
    assert!(shown["deliveredThrough"].as_str().unwrap() >= during[0].id.as_str());
    drop(first);
}

/// The ids of `deliveries`, in arrival order.
fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.id.clone()).collect()
}

/// With Redis, three replicas (real binaries) share the subscriptions: each event is
/// delivered once per subscription, not once per replica, and when a replica is killed
/// (`kill -9`) the others take its subscriptions over once its leases expire.
/// Each subscription is created through another replica, which takes it at once.
#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn three_replicas_deliver_each_event_once_per_subscription_and_take_over_a_killed_one() {
    let redis = RedisServer::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sandbox = Sandbox::start(listener, SandboxConfig::default()).unwrap();
    let (redis_url, upstream) = (redis.url(), sandbox.url());
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("QPIEN_API_URL", upstream.as_str()),
        ("QPIEN_CLIENT_ID", DEMO_CLIENT_ID),
        ("QPIEN_CLIENT_SECRET", DEMO_CLIENT_SECRET),
        ("QPIEN_REPLICAS", "3"),
        ("SUBSCRIPTION_ALLOW_HTTP", "true"),
        ("SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS", "true"),
        ("SUBSCRIPTION_LEASE_MS", "1500"),
    ];
    let mut replicas: Vec<Option<Service>> = (0..3).map(|_| Some(Service::start(&env))).collect();
    let address =
        |replicas: &[Option<Service>], i: usize| replicas[i].as_ref().unwrap().address.clone();
    let http = reqwest::Client::new();
    let mut receivers = Vec::new();
    for i in 0..3 {
        let receiver = Receiver::start().await;
        // Each subscription is created on another replica, which likely takes it.
        let created = http
            .post(format!("{}/subscriptions", address(&replicas, i)))
            .json(&json!({ "url": receiver.url }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        receivers.push(receiver);
    }
    let id = {
        let list: Value = http
            .get(format!(
                "{}/conversations?pageSize=1",
                address(&replicas, 0)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["items"][0]["id"].as_str().unwrap().to_owned()
    };
    let patch = async |through: &str, n: usize| {
        let response = http
            .patch(format!("{through}/conversations/{id}"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({ "starred": n.is_multiple_of(2) }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };

    for n in 0..6 {
        patch(&address(&replicas, n % 3), n).await;
    }
    let mut first_round = Vec::new();
    for receiver in &receivers {
        first_round.push(ids(&receiver.wait_for(6).await));
    }
    // Settled: nothing more arrives than the six.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled: Vec<usize> = receivers.iter().map(|r| r.received().len()).collect();
    // Two of three killed: whichever held a subscription, most moved to the survivor.
    for replica in &mut replicas[..2] {
        let service = replica.take().unwrap();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &service.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        drop(service);
    }
    for n in 6..10 {
        patch(&address(&replicas, 2), n).await;
    }
    let mut all = Vec::new();
    for receiver in &receivers {
        let got = eventually("the events after the kill", PATIENCE, async || {
            let got = ids(&receiver.received());
            let mut distinct = got.clone();
            distinct.dedup();
            (distinct.len() >= 10).then_some(got)
        })
        .await;
        all.push(got);
    }

    for got in &first_round {
        assert_eq!(
            got, &first_round[0],
            "every subscription, every event, in order"
        );
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(&sorted, got, "once each, in order: {got:?}");
    }
    assert_eq!(
        settled,
        [6, 6, 6],
        "once per subscription, not once per replica"
    );
    for got in &all {
        let mut distinct = got.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 10, "{got:?}");
        assert!(
            distinct.windows(2).all(|w| w[0] < w[1]),
            "in order: {got:?}"
        );
    }
    drop(redis);
}
