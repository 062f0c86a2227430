//! `/postman-collection.json`: the committed file is what `cargo run` serves, and every
//! request of the collection, sent as Postman sends it (variables filled in, enabled
//! parameters only, the collection's authorization), answers 2xx on the demo data.

use serde_json::Value;

use crate::helpers::{Setup, TestApp, add_key, spawn_app, spawn_app_with};

async fn collection(app: &TestApp, host: Option<&str>) -> Value {
    let mut request = app
        .http
        .get(format!("{}/postman-collection.json", app.address));
    if let Some(host) = host {
        request = request.header("Host", host);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

/// Sends each request of `collection` with `variables` (name, value) filled in, as
/// Postman does, and returns `(name, status)` of each.
async fn send_all(
    app: &TestApp,
    collection: &Value,
    variables: &[(&str, &str)],
) -> Vec<(String, u16)> {
    let fill = |text: &str| {
        let mut text = text.replace("{{baseUrl}}", &app.address);
        for (name, value) in variables {
            text = text.replace(&format!("{{{{{name}}}}}"), value);
        }
        text
    };
    let enabled = |list: &Value| -> Vec<(String, String)> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["disabled"] != true)
            .map(|e| {
                (
                    fill(e["key"].as_str().unwrap()),
                    fill(e["value"].as_str().unwrap()),
                )
            })
            .collect()
    };
    let mut answers = Vec::new();
    for item in collection["item"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["item"].as_array().unwrap())
    {
        let request = &item["request"];
        let mut path = request["url"]["path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("/");
        for (name, value) in enabled(&request["url"]["variable"]) {
            path = path.replace(&format!(":{name}"), &value);
        }
        let method = request["method"].as_str().unwrap().parse().unwrap();
        let mut url = url::Url::parse(&format!("{}/{path}", app.address)).unwrap();
        for (name, value) in enabled(&request["url"]["query"]) {
            url.query_pairs_mut().append_pair(&name, &value);
        }
        let mut builder = app.http.request(method, url);
        for (name, value) in enabled(&request["header"]) {
            builder = builder.header(name, value);
        }
        if let Some(raw) = request["body"]["raw"].as_str() {
            builder = builder.body(raw.to_owned());
        }
        let auth = if request["auth"].is_object() {
            &request["auth"]
        } else {
            &collection["auth"]
        };
        match auth["type"].as_str().unwrap() {
            "noauth" => {}
            "bearer" => {
                builder = builder.bearer_auth(fill(auth["bearer"][0]["value"].as_str().unwrap()))
            }
            "apikey" => {
                let field = |key: &str| {
                    auth["apikey"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e["key"] == key)
                        .unwrap()["value"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                };
                assert_eq!(field("in"), "header");
                builder = builder.header(field("key"), fill(&field("value")));
            }
            other => panic!("auth type {other}"),
        }
        let status = builder.send().await.unwrap().status().as_u16();
        answers.push((item["name"].as_str().unwrap().to_owned(), status));
    }
    answers
}

fn assert_all_2xx(answers: &[(String, u16)]) {
    assert_eq!(
        answers.len(),
        7,
        "three conversation operations, the change feed and its trigger, liveness, readiness"
    );
    for (name, status) in answers {
        assert!((200..300).contains(status), "{name} answered {status}");
    }
}

#[tokio::test]
async fn the_committed_collection_is_what_the_service_serves() {
    let app = spawn_app().await;

    let served = collection(&app, Some("127.0.0.1:8080")).await;

    let committed: Value =
        serde_json::from_str(include_str!("../../openapi/postman-collection.json")).unwrap();
    assert!(
        served == committed,
        "openapi/postman-collection.json is stale; regenerate it with: \
         cargo run --quiet -- postman > openapi/postman-collection.json"
    );
    assert_eq!(
        served["auth"]["type"], "noauth",
        "service mode without caller keys"
    );
}

#[tokio::test]
async fn every_request_of_the_collection_answers_2xx_as_it_is() {
    let app = spawn_app().await;
    let collection = collection(&app, None).await;

    assert_eq!(collection["variable"][0]["value"], app.address.as_str());
    assert_all_2xx(&send_all(&app, &collection, &[]).await);
}

#[tokio::test]
async fn with_caller_keys_the_collection_sends_the_key_from_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let key = add_key(&file, "postman", "read,write", None);
    let app = spawn_app_with(Setup::with_keys(&file)).await;
    let collection = collection(&app, None).await;

    assert_eq!(collection["auth"]["type"], "apikey");
    assert_all_2xx(&send_all(&app, &collection, &[("apiKey", &key)]).await);
    let without = send_all(&app, &collection, &[("apiKey", "")]).await;
    assert_eq!(without[0].1, 401, "the key is what lets the list through");
}
