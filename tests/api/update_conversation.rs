use qpien_sandbox::{READ_ONLY_CLIENT_ID, READ_ONLY_CLIENT_SECRET};
use serde_json::{Value, json};

use crate::helpers::{Setup, UNKNOWN_ID, assert_problem, offending, spawn_app, spawn_app_with};

const AGENT: &str = "6650a3000000000000000abc";

#[tokio::test]
async fn patch_applies_a_merge_patch_and_returns_the_updated_conversation() {
    // Arrange
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;

    // Act
    let response = app
        .merge_patch(&id, json!({"status": "resolved", "starred": false, "priority": "urgent", "tags": ["billing", "vip"]}))
        .await;

    // Assert
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["starred"], false);
    assert_eq!(body["priority"], "urgent");
    let mut tags: Vec<&str> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["billing", "vip"]);
    let reread: Value = app
        .get_with(
            &format!("/conversations/{id}"),
            &[("Cache-Control", "no-cache")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reread, body, "the change persisted upstream");
}

#[tokio::test]
async fn patch_leaves_fields_that_are_not_in_the_patch_unchanged() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;
    let before: Value = app.get_conversation(&id).await.json().await.unwrap();

    let after: Value = app
        .merge_patch(
            &id,
            json!({"starred": !before["starred"].as_bool().unwrap()}),
        )
        .await
        .json()
        .await
        .unwrap();

    assert_ne!(after["starred"], before["starred"]);
    for field in [
        "status",
        "priority",
        "tags",
        "joinedPersonId",
        "type",
        "channels",
        "lastMessage",
    ] {
        assert_eq!(after[field], before[field], "{field} changed");
    }
}

#[tokio::test]
async fn patch_joins_an_agent_and_a_null_removes_it() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;

    let joined: Value = app
        .merge_patch(&id, json!({"joinedPersonId": AGENT}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(joined["joinedPersonId"], AGENT);

    let removed: Value = app
        .merge_patch(&id, json!({"joinedPersonId": null}))
        .await
        .json()
        .await
        .unwrap();
    assert!(removed["joinedPersonId"].is_null());
}

#[tokio::test]
async fn patch_with_null_tags_clears_them() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;
    app.merge_patch(&id, json!({"tags": ["vip"]})).await;

    let body: Value = app
        .merge_patch(&id, json!({"tags": null}))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(body["tags"], json!([]));
}

#[tokio::test]
async fn patch_accepts_plain_application_json_with_a_charset() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;

    let response = app
        .patch_conversation(
            &id,
            r#"{"status":"pending"}"#,
            Some("application/json; charset=utf-8"),
        )
        .await;

    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn patch_returns_a_415_for_other_media_types_without_calling_upstream() {
    let app = spawn_app().await;
    let id = "6650a1000000000000000001";
    for content_type in [
        Some("text/plain"),
        Some("application/xml"),
        Some("application/json; charset=latin1"),
        None,
    ] {
        let response = app
            .patch_conversation(id, r#"{"status":"open"}"#, content_type)
            .await;
        assert_eq!(
            response.headers()["accept-patch"].to_str().unwrap(),
            "application/merge-patch+json, application/json"
        );
        assert_problem(response, 415).await;
    }
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn patch_returns_a_422_listing_every_offending_member_without_calling_upstream() {
    let app = spawn_app().await;
    let id = "6650a1000000000000000001";
    let too_many_tags: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    let cases = [
        (json!({}), vec!["#"], "an empty patch"),
        (
            json!({"status": "done"}),
            vec!["#/status"],
            "an unknown status",
        ),
        (json!({"status": null}), vec!["#/status"], "a null status"),
        (
            json!({"priority": 3}),
            vec!["#/priority"],
            "a number for an enum",
        ),
        (
            json!({"starred": "yes"}),
            vec!["#/starred"],
            "a string for a boolean",
        ),
        (
            json!({"tags": "vip"}),
            vec!["#/tags"],
            "a string for the tag list",
        ),
        (
            json!({"tags": [1]}),
            vec!["#/tags"],
            "a number in the tag list",
        ),
        (json!({"tags": too_many_tags}), vec!["#/tags"], "21 tags"),
        (
            json!({"joinedPersonId": "bob"}),
            vec!["#/joinedPersonId"],
            "a malformed agent id",
        ),
        (
            json!({"colour": "red"}),
            vec!["#/colour"],
            "an unknown member",
        ),
        (
            json!({"id": "6650a1000000000000000002"}),
            vec!["#/id"],
            "a read-only member",
        ),
        (
            json!({"status": "done", "starred": 1, "nickname": "x", "priority": "low"}),
            vec!["#/nickname", "#/starred", "#/status"],
            "several at once",
        ),
    ];
    for (patch, expected, why) in cases {
        let problem = assert_problem(app.merge_patch(id, patch).await, 422).await;
        assert_eq!(offending(&problem), expected, "{why}: {problem}");
    }
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn patch_returns_a_400_for_a_body_that_is_not_a_json_object() {
    let app = spawn_app().await;
    for body in ["{\"status\":", "[{\"status\":\"open\"}]", "\"open\"", ""] {
        let response = app
            .patch_conversation(
                "6650a1000000000000000001",
                body,
                Some("application/merge-patch+json"),
            )
            .await;
        assert_problem(response, 400).await;
    }
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn patch_returns_a_400_for_a_malformed_id_before_looking_at_the_body() {
    let app = spawn_app().await;

    let problem = assert_problem(
        app.merge_patch("nope", json!({"status": "open"})).await,
        400,
    )
    .await;

    assert_eq!(offending(&problem), ["id"]);
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn patch_returns_a_404_for_an_unknown_conversation() {
    let app = spawn_app().await;

    let problem = assert_problem(
        app.merge_patch(UNKNOWN_ID, json!({"status": "open"})).await,
        404,
    )
    .await;

    assert_eq!(problem["code"], "NOT_FOUND");
}

#[tokio::test]
async fn patch_returns_a_422_when_qpien_rejects_a_tag_name() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;

    let problem = assert_problem(
        app.merge_patch(&id, json!({"tags": ["vip", "no-such-tag"]}))
            .await,
        422,
    )
    .await;

    assert_eq!(problem["code"], "BAD_USER_INPUT");
    // The service's words, not Qpien's message (which stays in the log).
    assert!(
        problem["detail"].as_str().unwrap().contains("tag name"),
        "{problem}"
    );
}

#[tokio::test]
async fn patch_returns_a_403_naming_the_scope_when_the_key_cannot_write() {
    let app = spawn_app_with(Setup {
        credentials: Some((READ_ONLY_CLIENT_ID, READ_ONLY_CLIENT_SECRET)),
        ..Default::default()
    })
    .await;
    let id = app.some_conversation_id().await;

    let response = app.merge_patch(&id, json!({"status": "closed"})).await;

    let www_authenticate = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let problem = assert_problem(response, 403).await;
    assert_eq!(problem["code"], "INSUFFICIENT_SCOPES");
    assert_eq!(problem["requiredScope"], "write_conversations");
    assert!(
        www_authenticate.contains("insufficient_scope"),
        "{www_authenticate}"
    );
    let unchanged: Value = app.get_conversation(&id).await.json().await.unwrap();
    assert_ne!(unchanged["status"], "closed");
}

/// A member named twice would mean the last one to this service and maybe the first to
/// whatever read the body before it: refused, naming the member, at any depth.
#[tokio::test]
async fn a_member_named_twice_is_a_400_naming_it_and_nothing_is_sent() {
    let app = spawn_app().await;
    let id = app.some_conversation_id().await;
    let cases = [
        (r#"{"status": "closed", "status": "open"}"#, "#/status"),
        (
            r#"{"starred": true, "tags": ["vip"], "x": {"k": 1, "k": 2}}"#,
            "#/x/k",
        ),
    ];
    let updates_before = app.upstream_calls_of("updateConversation");

    for (body, pointer) in cases {
        let response = app
            .patch_conversation(&id, body, Some("application/merge-patch+json"))
            .await;

        let problem = assert_problem(response, 400).await;
        assert_eq!(problem["type"], "/problems/malformed-body");
        assert!(
            problem["detail"].as_str().unwrap().contains(pointer),
            "{problem}"
        );
    }
    assert_eq!(app.upstream_calls_of("updateConversation"), updates_before);
}
