//! `spawn_app` and one helper per endpoint.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use qpien_rest::settings::{ClientCredentials, LogFormat, Secret, Settings};
use qpien_rest::startup::Application;
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig, SandboxStats};
use reqwest::Response;
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Logs go to stderr when TEST_LOG is set: `TEST_LOG=1 cargo test some_test`.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        qpien_rest::telemetry::init(LogFormat::Text);
    }
});

pub const UNKNOWN_ID: &str = "6650a1ffffffffffffffffff";

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    /// The upstream this app talks to, owned by the test so it can count calls.
    pub sandbox: Option<Sandbox>,
    /// The app's `DATA_DIR` (its event log), removed with the app.
    pub _data_dir: tempfile::TempDir,
}

/// How the test wants the app and its upstream.
pub struct Setup {
    pub sandbox: SandboxConfig,
    /// `None`: pass-through mode.
    pub credentials: Option<(&'static str, &'static str)>,
    /// An upstream other than a sandbox (wiremock, a closed port); no sandbox is started.
    pub upstream_url: Option<String>,
    pub settings: Box<dyn FnOnce(&mut Settings)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            sandbox: SandboxConfig::default(),
            credentials: Some((DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)),
            upstream_url: None,
            settings: Box::new(|_| {}),
        }
    }
}

impl Setup {
    /// Pass-through mode against a fresh sandbox: callers bring their own bearer.
    pub fn pass_through() -> Self {
        Self {
            credentials: None,
            ..Self::default()
        }
    }
}

impl Setup {
    /// Service mode against a fresh sandbox, with the caller keys of `file`.
    pub fn with_keys(file: &Path) -> Self {
        let file: PathBuf = file.to_owned();
        Self {
            settings: Box::new(move |s| s.api_keys_file = Some(file)),
            ..Self::default()
        }
    }
}

/// Creates a caller key in `file` with the real binary (`qpien-rest keys add`), as an
/// operator would, and returns the key it printed.
pub fn add_key(file: &Path, id: &str, scopes: &str, per_minute: Option<u32>) -> String {
    let mut args = vec![
        "keys",
        "add",
        "--file",
        file.to_str().unwrap(),
        "--id",
        id,
        "--scopes",
        scopes,
    ];
    let share = per_minute.map(|n| n.to_string());
    if let Some(share) = &share {
        args.extend(["--per-minute", share]);
    }
    let output = Command::new(env!("CARGO_BIN_EXE_qpien-rest"))
        .args(&args)
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "keys add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Service mode against a fresh sandbox with the demo key.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Setup::default()).await
}

pub async fn spawn_app_with(setup: Setup) -> TestApp {
    LazyLock::force(&TRACING);
    qpien_rest::install_tls_provider();
    let (sandbox, upstream_url) = match setup.upstream_url {
        Some(url) => (None, url),
        None => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let sandbox = Sandbox::start(listener, setup.sandbox).expect("the sandbox starts");
            let url = sandbox.url();
            (Some(sandbox), url)
        }
    };
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let mut settings = Settings {
        port: 0,
        data_dir: data_dir.path().to_owned(),
        ..Settings::default()
    };
    settings.upstream.api_url = Some(Url::parse(&upstream_url).unwrap());
    settings.upstream.credentials = setup.credentials.map(|(id, secret)| ClientCredentials {
        client_id: id.to_owned(),
        client_secret: Secret::new(secret),
    });
    (setup.settings)(&mut settings);
    let application = Application::build(settings)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        http: reqwest::Client::new(),
        sandbox,
        _data_dir: data_dir,
    }
}

/// The whole-call timeout of apps in front of misbehaving upstreams.
pub const FAULT_TIMEOUT: Duration = Duration::from_millis(600);

/// Pass-through mode against `url`, with `FAULT_TIMEOUT`: one mocked answer per case is
/// enough, as there is no token to fetch.
pub async fn pass_through_app(url: String) -> TestApp {
    spawn_app_with(Setup {
        upstream_url: Some(url),
        settings: Box::new(|s| s.upstream.request_timeout = FAULT_TIMEOUT),
        ..Setup::pass_through()
    })
    .await
}

/// The GraphQL endpoint of a wiremock upstream.
pub fn graphql_url(upstream: &MockServer) -> String {
    format!("{}/api/v1", upstream.uri())
}

/// A wiremock upstream that gives every call `template`, and an app in front of it.
pub async fn answering(template: ResponseTemplate) -> (MockServer, TestApp) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&upstream)
        .await;
    let app = pass_through_app(graphql_url(&upstream)).await;
    (upstream, app)
}

/// Qpien's answer to `generateOAuthToken`.
pub fn token_answer(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "data": {"generateOAuthToken": {"accessToken": token, "tokenType": "Bearer", "expiresIn": 3600, "scopes": ["read_conversations"]}}
    }))
}

/// A GraphQL error in Qpien's documented shape, with HTTP 200.
pub fn graphql_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "data": null,
        "errors": [{"message": format!("{code} from Qpien"), "extensions": {"code": code}, "success": false}]
    }))
}

impl TestApp {
    pub async fn get(&self, path_and_query: &str) -> Response {
        self.http
            .get(format!("{}{path_and_query}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// A GET carrying `bearer`, as a pass-through caller sends.
    pub async fn get_as(&self, path_and_query: &str, bearer: &str) -> Response {
        let url = format!("{}{path_and_query}", self.address);
        self.http
            .get(url)
            .bearer_auth(bearer)
            .send()
            .await
            .expect("request sent")
    }

    /// A GET carrying `key` in `X-API-Key`, as a caller that cannot send a bearer does.
    pub async fn get_with_api_key(&self, path_and_query: &str, key: &str) -> Response {
        let url = format!("{}{path_and_query}", self.address);
        self.http
            .get(url)
            .header("X-API-Key", key)
            .send()
            .await
            .expect("request sent")
    }

    /// A GET carrying some bearer, where which one does not matter.
    pub async fn get_with_bearer(&self, path_and_query: &str) -> Response {
        self.get_as(path_and_query, "caller-token").await
    }

    pub async fn list_conversations(&self, query: &str) -> Response {
        self.get(&format!("/conversations{query}")).await
    }

    pub async fn get_conversation(&self, id: &str) -> Response {
        self.get(&format!("/conversations/{id}")).await
    }

    pub async fn patch_conversation(
        &self,
        id: &str,
        body: &str,
        content_type: Option<&str>,
    ) -> Response {
        let mut request = self
            .http
            .patch(format!("{}/conversations/{id}", self.address))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        request.send().await.expect("request sent")
    }

    pub async fn merge_patch(&self, id: &str, body: Value) -> Response {
        self.patch_conversation(id, &body.to_string(), Some("application/merge-patch+json"))
            .await
    }

    /// The id of the first conversation of the default list.
    pub async fn some_conversation_id(&self) -> String {
        let body: Value = self
            .list_conversations("?pageSize=1")
            .await
            .json()
            .await
            .unwrap();
        body["items"][0]["id"]
            .as_str()
            .expect("the seed has conversations")
            .to_owned()
    }

    pub fn upstream_stats(&self) -> SandboxStats {
        self.sandbox
            .as_ref()
            .expect("this app runs against a sandbox")
            .stats()
    }

    pub fn upstream_requests(&self) -> u64 {
        self.upstream_stats().requests
    }

    pub fn upstream_calls_of(&self, operation: &str) -> u64 {
        self.upstream_stats()
            .operations
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// A token straight from the sandbox, as a pass-through caller would hold one.
    pub async fn sandbox_token(&self, client_id: &str, secret: &str) -> String {
        let url = self.sandbox.as_ref().unwrap().url();
        self.sandbox_token_at(&url, client_id, secret).await
    }

    /// A token from the sandbox at `url`.
    pub async fn sandbox_token_at(&self, url: &str, client_id: &str, secret: &str) -> String {
        let body: Value = self
            .http
            .post(url)
            .json(&json!({
                "query": "mutation($id: String!, $secret: String!) { generateOAuthToken(clientId: $id, clientSecret: $secret) { accessToken } }",
                "variables": {"id": client_id, "secret": secret}
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]["generateOAuthToken"]["accessToken"]
            .as_str()
            .expect("a token")
            .to_owned()
    }
}

/// Service mode against a sandbox whose tokens live one second, with the first token
/// fetched, used, and now past its lifetime.
pub async fn service_app_whose_token_has_expired() -> TestApp {
    let app = spawn_app_with(Setup {
        sandbox: SandboxConfig {
            token_ttl: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.list_conversations("?pageSize=3")
            .await
            .status()
            .as_u16(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app
}

/// Asserts an RFC 9457 problem with this status and returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let header_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"].as_str().unwrap().starts_with("/problems/"),
        "{body}"
    );
    assert!(!body["title"].as_str().unwrap().is_empty());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    assert_eq!(
        body["requestId"],
        header_id.as_str(),
        "the body names the request id of the header"
    );
    body
}

/// The names (query/path parameters) or pointers (body members) a problem lists.
pub fn offending(problem: &Value) -> Vec<String> {
    let mut names: Vec<String> = problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["parameter"]
                        .as_str()
                        .or(e["pointer"].as_str())
                        .unwrap()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl TestApp {
    /// A GET with extra request headers.
    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self.http.get(format!("{}{path_and_query}", self.address));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    /// A merge patch sent with `If-Match: if_match`.
    pub async fn merge_patch_if(&self, id: &str, body: Value, if_match: &str) -> Response {
        self.http
            .patch(format!("{}/conversations/{id}", self.address))
            .header("Content-Type", "application/merge-patch+json")
            .header("If-Match", if_match)
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// Changes a conversation in the sandbox directly, as Qpien's own app would, behind
    /// the facade's back.
    pub async fn change_upstream(&self, id: &str, input: Value) {
        let token = self.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;
        let body: Value = self
            .http
            .post(self.sandbox.as_ref().unwrap().url())
            .bearer_auth(token)
            .json(&json!({
                "query": "mutation($id: ID!, $input: UpdateConversationInput!) { updateConversation(conversationId: $id, input: $input) { _id } }",
                "variables": {"id": id, "input": input}
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body["errors"].is_null(), "{body}");
    }
}

/// Long enough for anything these tests wait for on a loaded machine; a condition that
/// takes longer is broken, not slow.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Asks `check` every 20 ms until it gives a value, and returns it; panics naming `what`
/// if none came within `within`. The tests wait for what they need to see instead of
/// sleeping for a time that is too long on an idle machine and too short on a busy one.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {within:?} in vain for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response header as text ("" when absent).
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
