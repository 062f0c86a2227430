use std::collections::HashSet;

use serde_json::Value;

use crate::helpers::{assert_problem, offending, spawn_app};

#[tokio::test]
async fn list_returns_the_first_page_of_20_with_paging_metadata_and_links() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let response = app.list_conversations("").await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 20);
    assert_eq!(body["page"], 1);
    assert_eq!(body["pageSize"], 20);
    let total = body["totalItems"].as_u64().unwrap();
    assert!(
        total >= 60,
        "the seed has at least 60 conversations, got {total}"
    );
    assert_eq!(body["totalPages"].as_u64().unwrap(), total.div_ceil(20));
    assert!(body["links"]["prev"].is_null());
    let next = body["links"]["next"].as_str().unwrap();
    assert!(next.ends_with("/conversations?page=2"), "{next}");
    assert!(link.contains(&format!("<{next}>; rel=\"next\"")), "{link}");
    assert!(
        link.contains("rel=\"first\"") && link.contains("rel=\"last\""),
        "{link}"
    );
    assert!(!link.contains("rel=\"prev\""), "{link}");
    let first = &body["items"][0];
    for field in [
        "id",
        "customerId",
        "starred",
        "status",
        "priority",
        "type",
        "tags",
        "channels",
        "lastMessage",
    ] {
        assert!(first.get(field).is_some(), "{field} missing from {first}");
    }
    assert!(
        first.get("_id").is_none(),
        "the upstream naming never leaks"
    );
}

#[tokio::test]
async fn each_filter_returns_only_matching_conversations() {
    let app = spawn_app().await;
    let cases = [
        ("status=pending", "status", Value::from("pending")),
        ("status=closed", "status", Value::from("closed")),
        ("priority=urgent", "priority", Value::from("urgent")),
        ("type=group", "type", Value::from("group")),
        ("type=direct", "type", Value::from("direct")),
        ("starred=true", "starred", Value::from(true)),
        ("starred=false", "starred", Value::from(false)),
    ];
    for (query, field, expected) in cases {
        let body: Value = app
            .list_conversations(&format!("?{query}&pageSize=100"))
            .await
            .json()
            .await
            .unwrap();
        let items = body["items"].as_array().unwrap();
        assert!(
            !items.is_empty(),
            "{query} matched nothing: the seed should cover it"
        );
        assert_eq!(
            body["totalItems"].as_u64().unwrap(),
            items.len() as u64,
            "{query}"
        );
        for item in items {
            assert_eq!(item[field], expected, "{query} returned {item}");
        }
    }
}

#[tokio::test]
async fn the_tag_filter_returns_only_conversations_with_that_tag() {
    let app = spawn_app().await;

    let body: Value = app
        .list_conversations("?tag=vip&pageSize=100")
        .await
        .json()
        .await
        .unwrap();

    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for item in items {
        let names: Vec<&str> = item["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"vip"), "{item}");
    }
}

#[tokio::test]
async fn filters_combine_and_an_unmatched_combination_is_an_empty_page() {
    let app = spawn_app().await;
    let all: Value = app
        .list_conversations("?pageSize=100")
        .await
        .json()
        .await
        .unwrap();
    let expected = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "open" && c["priority"] == "high")
        .count();

    let body: Value = app
        .list_conversations("?status=open&priority=high&pageSize=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), expected);
    assert!(expected > 0);

    let none: Value = app
        .list_conversations("?tag=no-such-tag")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    assert_eq!(none["totalItems"], 0);
    assert_eq!(none["totalPages"], 0);
    assert!(none["links"]["next"].is_null() && none["links"]["prev"].is_null());
}

#[tokio::test]
async fn following_next_links_visits_every_conversation_once() {
    let app = spawn_app().await;
    let mut url = format!("{}/conversations?pageSize=7&status=open", app.address);
    let mut seen = HashSet::new();
    let mut total = None;
    let mut pages = 0;

    loop {
        let body: Value = app
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        total.get_or_insert(body["totalItems"].as_u64().unwrap());
        for item in body["items"].as_array().unwrap() {
            assert!(
                seen.insert(item["id"].as_str().unwrap().to_owned()),
                "a conversation came twice"
            );
        }
        pages += 1;
        assert!(
            body["links"]["self"]
                .as_str()
                .unwrap()
                .contains("status=open"),
            "filters are kept in links"
        );
        match body["links"]["next"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, total.unwrap());
    assert_eq!(pages, total.unwrap().div_ceil(7));
}

#[tokio::test]
async fn the_last_page_has_a_prev_link_and_no_next() {
    let app = spawn_app().await;
    let first: Value = app
        .list_conversations("?pageSize=25")
        .await
        .json()
        .await
        .unwrap();
    let last_page = first["totalPages"].as_u64().unwrap();

    let response = app
        .list_conversations(&format!("?pageSize=25&page={last_page}"))
        .await;
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();

    assert!(body["links"]["next"].is_null());
    assert!(
        body["links"]["prev"]
            .as_str()
            .unwrap()
            .contains(&format!("page={}", last_page - 1))
    );
    assert!(
        link.contains("rel=\"prev\"") && !link.contains("rel=\"next\""),
        "{link}"
    );
}

#[tokio::test]
async fn a_page_past_the_end_is_empty_and_points_back_to_the_last_page() {
    let app = spawn_app().await;

    let body: Value = app
        .list_conversations("?page=999")
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(body["items"].as_array().unwrap().len(), 0);
    let last = body["totalPages"].as_u64().unwrap();
    assert!(
        body["links"]["prev"]
            .as_str()
            .unwrap()
            .ends_with(&format!("page={last}"))
    );
    assert!(body["links"]["next"].is_null());
}

#[tokio::test]
async fn the_largest_page_size_returns_up_to_100() {
    let app = spawn_app().await;

    let body: Value = app
        .list_conversations("?pageSize=100")
        .await
        .json()
        .await
        .unwrap();

    let total = body["totalItems"].as_u64().unwrap();
    assert_eq!(
        body["items"].as_array().unwrap().len() as u64,
        total.min(100)
    );
}

#[tokio::test]
async fn list_returns_a_400_naming_the_parameter_for_invalid_input_without_calling_upstream() {
    let app = spawn_app().await;
    let cases = [
        ("?status=done", vec!["status"], "an unknown status"),
        (
            "?priority=critical",
            vec!["priority"],
            "an unknown priority",
        ),
        ("?type=broadcast", vec!["type"], "an unknown type"),
        ("?starred=yes", vec!["starred"], "a non-boolean starred"),
        ("?page=0", vec!["page"], "page zero"),
        ("?page=abc", vec!["page"], "a non-numeric page"),
        ("?page=100001", vec!["page"], "a page over the maximum"),
        ("?pageSize=0", vec!["pageSize"], "an empty page"),
        ("?pageSize=101", vec!["pageSize"], "a page over 100"),
        ("?pageSize=-5", vec!["pageSize"], "a negative page size"),
        ("?tag=", vec!["tag"], "an empty tag"),
        ("?sort=id", vec!["sort"], "an unknown parameter"),
        ("?page=1&page=2", vec!["page"], "a repeated parameter"),
        (
            "?status=x&pageSize=1000&starred=1",
            vec!["pageSize", "starred", "status"],
            "several at once",
        ),
    ];
    for (query, expected, why) in cases {
        let response = app.list_conversations(query).await;
        let problem = assert_problem(response, 400).await;
        assert_eq!(offending(&problem), expected, "{why}: {problem}");
    }
    assert_eq!(
        app.upstream_requests(),
        0,
        "invalid input never reaches the upstream"
    );
}

#[tokio::test]
async fn links_use_the_public_base_url_when_configured() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Setup {
        settings: Box::new(|s| {
            s.public_base_url = Some("https://api.example.com/qpien/".parse().unwrap())
        }),
        ..Default::default()
    })
    .await;

    let body: Value = app
        .list_conversations("?pageSize=10")
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(
        body["links"]["next"],
        "https://api.example.com/qpien/conversations?pageSize=10&page=2"
    );
}
