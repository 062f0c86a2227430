use serde_json::Value;

use crate::helpers::{UNKNOWN_ID, assert_problem, offending, spawn_app};

#[tokio::test]
async fn get_returns_the_conversation_in_the_rest_representation() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;

    let response = app.get_conversation(&id).await;

    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert!(body["starred"].is_boolean());
    assert!(["open", "pending", "resolved", "closed"].contains(&body["status"].as_str().unwrap()));
    assert!(
        body["lastMessage"]["sentAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(body["channels"][0]["type"].is_string());
}

#[tokio::test]
async fn get_accepts_an_upper_case_id() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;

    let response = app.get_conversation(&id.to_uppercase()).await;

    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
}

#[tokio::test]
async fn get_returns_a_404_problem_for_an_unknown_id() {
    let app = spawn_app().await;

    let problem = assert_problem(app.get_conversation(UNKNOWN_ID).await, 404).await;

    assert_eq!(problem["code"], "NOT_FOUND");
}

#[tokio::test]
async fn get_returns_a_400_for_a_malformed_id_without_calling_upstream() {
    let app = spawn_app().await;
    let long = "a".repeat(5000);
    let cases = [
        ("123", "too short"),
        ("6650a100000000000000000g", "not hexadecimal"),
        ("6650a1000000000000000000a", "25 digits"),
        (long.as_str(), "very long"),
        ("%20", "blank"),
    ];
    for (id, why) in cases {
        let problem = assert_problem(app.get_conversation(id).await, 400).await;
        assert_eq!(offending(&problem), ["id"], "{why}");
    }
    assert_eq!(app.upstream_requests(), 0);
}
