//! Caller keys in service mode (`API_KEYS_FILE`): who may call, with which scope, revoked
//! and reloaded without a restart; and the secure default when there are none.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{
    PATIENCE, Setup, TestApp, add_key, assert_problem, eventually, spawn_app_with,
};
use crate::process::Service;

const ID: &str = "6650a1000000000000000001";

/// A fresh directory and the path of a keys file in it (not yet created).
fn keys_file() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("caller-keys");
    (dir, path)
}

async fn app_with_keys(file: &Path) -> TestApp {
    spawn_app_with(Setup::with_keys(file)).await
}

fn keys_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qpien-rest"))
        .arg("keys")
        .args(args)
        .output()
        .expect("the binary runs")
}

impl TestApp {
    async fn patch_with_key(&self, id: &str, key: &str, body: Value) -> reqwest::Response {
        self.http
            .patch(format!("{}/conversations/{id}", self.address))
            .bearer_auth(key)
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }
}

#[tokio::test]
async fn a_request_without_a_key_gets_401_with_a_challenge_and_nothing_reaches_qpien() {
    let (_dir, file) = keys_file();
    add_key(&file, "crm", "read,write", None);
    let app = app_with_keys(&file).await;

    let response = app.list_conversations("").await;

    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"qpien-rest\""
    );
    let problem = assert_problem(response, 401).await;
    assert_eq!(problem["type"], "/problems/missing-api-key");
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn an_unknown_key_gets_401_invalid_api_key_in_either_header() {
    let (_dir, file) = keys_file();
    let key = add_key(&file, "crm", "read", None);
    let app = app_with_keys(&file).await;
    let wrong = format!("{key}x");

    let as_bearer = app.get_as("/conversations", &wrong).await;
    let as_header = app.get_with_api_key("/conversations", &wrong).await;

    for response in [as_bearer, as_header] {
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"qpien-rest\", error=\"invalid_token\""
        );
        let problem = assert_problem(response, 401).await;
        assert_eq!(problem["type"], "/problems/invalid-api-key");
        assert!(
            !problem.to_string().contains(&wrong),
            "the key is not echoed"
        );
    }
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn a_key_is_accepted_as_a_bearer_and_in_x_api_key() {
    let (_dir, file) = keys_file();
    let key = add_key(&file, "crm", "read", None);
    let app = app_with_keys(&file).await;

    let as_bearer = app.get_as(&format!("/conversations/{ID}"), &key).await;
    let as_header = app
        .get_with_api_key("/conversations?pageSize=1", &key)
        .await;

    assert_eq!(as_bearer.status().as_u16(), 200);
    assert_eq!(as_header.status().as_u16(), 200);
}

#[tokio::test]
async fn a_read_only_key_gets_403_on_patch_and_nothing_reaches_qpien() {
    let (_dir, file) = keys_file();
    let key = add_key(&file, "bi", "read", None);
    let app = app_with_keys(&file).await;

    let response = app
        .patch_with_key(ID, &key, json!({"status": "resolved"}))
        .await;

    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"qpien-rest\", error=\"insufficient_scope\", scope=\"write\""
    );
    let problem = assert_problem(response, 403).await;
    assert_eq!(problem["type"], "/problems/insufficient-key-scope");
    assert_eq!(problem["requiredScope"], "write");
    assert_eq!(
        app.upstream_requests(),
        0,
        "nothing was sent to the sandbox"
    );
}

/// What the document says each operation needs is what the route enforces.
#[tokio::test]
async fn each_operation_needs_the_scope_the_document_names() {
    let (_dir, file) = keys_file();
    let reader = add_key(&file, "reader", "read", None);
    let writer = add_key(&file, "writer", "write", None);
    let app = app_with_keys(&file).await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut checked = 0;

    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(scope) = operation["x-required-scope"].as_str() else {
                continue;
            };
            let lacking = if scope == "read" { &writer } else { &reader };
            let url = format!("{}{}", app.address, path.replace("{id}", ID));
            let request = match method.as_str() {
                "get" => app.http.get(url),
                "patch" => app.http.patch(url).json(&json!({"starred": true})),
                "post" => app
                    .http
                    .post(url)
                    .json(&json!({"url": "https://hooks.example.com/x"})),
                "delete" => app.http.delete(url),
                other => panic!("no request for {other}"),
            };

            let response = request.bearer_auth(lacking).send().await.unwrap();

            let problem = assert_problem(response, 403).await;
            assert_eq!(problem["requiredScope"], scope, "{method} {path}");
            let description = operation["description"].as_str().unwrap();
            assert!(
                description.contains(&format!("`{scope}`")),
                "{method} {path}"
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 12,
        "every operation on conversations, their changes and subscriptions names its scope"
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_and_a_new_one_accepted_without_a_restart() {
    let (_dir, file) = keys_file();
    let leaked = add_key(&file, "crm", "read", None);
    let other = add_key(&file, "erp", "read", None);
    let app = app_with_keys(&file).await;
    assert_eq!(
        app.get_as("/conversations/6650a1000000000000000002", &leaked)
            .await
            .status(),
        200
    );

    let revoked = keys_command(&["revoke", "--file", file.to_str().unwrap(), "--id", "crm"]);
    let replacement = add_key(&file, "crm-2", "read", None);

    assert!(revoked.status.success());
    eventually("the revoked key is refused", PATIENCE, async || {
        (app.get_as("/conversations/6650a1000000000000000002", &leaked)
            .await
            .status()
            == 401)
            .then_some(())
    })
    .await;
    eventually("the new key is accepted", PATIENCE, async || {
        (app.get_as("/conversations/6650a1000000000000000002", &replacement)
            .await
            .status()
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(
        app.get_as("/conversations/6650a1000000000000000002", &other)
            .await
            .status(),
        200,
        "the other key kept working"
    );
}

#[tokio::test]
async fn a_broken_keys_file_keeps_the_last_good_keys_and_says_so_until_it_is_fixed() {
    let (_dir, file) = keys_file();
    let key = add_key(&file, "crm", "read", None);
    let good = std::fs::read_to_string(&file).unwrap();
    let app = app_with_keys(&file).await;
    let before: Value = app.get("/readyz").await.json().await.unwrap();
    let metrics_before = app.metrics().await;

    // The key itself pasted where its hash belongs, written in one rename.
    let draft = file.with_extension("draft");
    std::fs::write(&draft, format!("crm {key} read\n")).unwrap();
    std::fs::rename(&draft, &file).unwrap();

    eventually("the broken file is noticed", PATIENCE, async || {
        app.metrics()
            .await
            .contains(r#"qpien_rest_caller_keys_reloads_total{outcome="kept"} 1"#)
            .then_some(())
    })
    .await;
    let response = app.get_as("/conversations?pageSize=1", &key).await;
    assert_eq!(response.status().as_u16(), 200, "the last good keys stay");
    let broken_metrics = app.metrics().await;
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status(),
        200,
        "a broken keys file is no reason for 503"
    );
    let broken: Value = ready.json().await.unwrap();

    std::fs::write(&draft, &good).unwrap();
    std::fs::rename(&draft, &file).unwrap();
    eventually("the fixed file is read", PATIENCE, async || {
        app.metrics()
            .await
            .contains(r#"qpien_rest_caller_keys_reloads_total{outcome="reloaded"} 1"#)
            .then_some(())
    })
    .await;
    let fixed: Value = app.get("/readyz").await.json().await.unwrap();
    let fixed_metrics = app.metrics().await;

    assert!(metrics_before.contains("qpien_rest_caller_keys_reload_failing 0"));
    assert_eq!(before["callerKeys"]["count"], 1);
    assert_eq!(before["callerKeys"]["reloadFailingSince"], Value::Null);
    assert!(
        broken_metrics.contains("qpien_rest_caller_keys_reload_failing 1"),
        "{broken_metrics}"
    );
    assert_eq!(broken["callerKeys"]["reloadFailure"], "invalid");
    assert!(
        broken["callerKeys"]["reloadFailingSince"].is_string(),
        "{broken}"
    );
    assert_eq!(
        broken["callerKeys"]["loadedAt"], before["callerKeys"]["loadedAt"],
        "the keys in force are the ones read at start-up"
    );
    assert!(
        !broken.to_string().contains(&key) && !broken.to_string().contains("caller-keys"),
        "neither the file's contents nor its path reach /readyz: {broken}"
    );
    assert!(fixed_metrics.contains("qpien_rest_caller_keys_reload_failing 0"));
    assert_eq!(fixed["callerKeys"]["reloadFailingSince"], Value::Null);
    assert_eq!(fixed["callerKeys"]["reloadFailure"], Value::Null);
    assert_ne!(
        fixed["callerKeys"]["loadedAt"],
        before["callerKeys"]["loadedAt"]
    );
}

#[tokio::test]
async fn a_deleted_keys_file_is_reported_as_missing() {
    let (_dir, file) = keys_file();
    add_key(&file, "crm", "read", None);
    let app = app_with_keys(&file).await;

    std::fs::remove_file(&file).unwrap();

    let ready = eventually("the missing file is reported", PATIENCE, async || {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        (ready["callerKeys"]["reloadFailure"] == "missing").then_some(ready)
    })
    .await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["callerKeys"]["count"], 1);
    assert!(
        app.metrics()
            .await
            .contains("qpien_rest_caller_keys_reload_failing 1")
    );
}

#[tokio::test]
async fn health_metrics_documents_and_problem_pages_need_no_key() {
    let (_dir, file) = keys_file();
    add_key(&file, "crm", "read", None);
    let app = app_with_keys(&file).await;

    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/openapi-3.0.json",
        "/swagger-2.0.json",
        "/docs/",
        "/problems/missing-api-key",
    ] {
        let status = app.get(path).await.status().as_u16();

        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn metrics_count_requests_and_refusals_by_key_id() {
    let (_dir, file) = keys_file();
    let reader = add_key(&file, "bi", "read", None);
    let app = app_with_keys(&file).await;

    app.get_as("/conversations?pageSize=1", &reader).await;
    app.patch_with_key(ID, &reader, json!({"starred": true}))
        .await;
    app.get("/conversations").await;
    app.get_as("/conversations", "qpk_not-a-key").await;
    let metrics = app.metrics().await;

    for line in [
        r#"qpien_rest_caller_requests_total{key="bi",status="200"} 1"#,
        r#"qpien_rest_caller_requests_total{key="bi",status="403"} 1"#,
        r#"qpien_rest_caller_unauthorized_total{reason="missing"} 1"#,
        r#"qpien_rest_caller_unauthorized_total{reason="unknown"} 1"#,
        "qpien_rest_caller_keys 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert!(!metrics.contains(&reader));
}

fn run_binary(env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qpien-rest"));
    for key in [
        "HOST",
        "API_KEYS_FILE",
        "ALLOW_ANONYMOUS",
        "QPIEN_API_URL",
        "QPIEN_CLIENT_ID",
        "QPIEN_CLIENT_SECRET",
    ] {
        command.env_remove(key);
    }
    command.env("PORT", "0").envs(env.iter().copied());
    // Refusals exit at once; a service that did start is killed by the timeout below.
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_service_mode_instance_on_all_interfaces_without_keys_refuses_to_start() {
    let output = run_binary(&[("HOST", "0.0.0.0")]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for hint in [
        "API_KEYS_FILE",
        "ALLOW_ANONYMOUS=true",
        "qpien-rest keys add",
    ] {
        assert!(stderr.contains(hint), "{hint} not in: {stderr}");
    }
}

#[test]
fn caller_keys_in_pass_through_mode_are_a_start_up_error() {
    let (_dir, file) = keys_file();
    add_key(&file, "crm", "read", None);

    let output = run_binary(&[
        ("QPIEN_API_URL", "http://127.0.0.1:9/api/v1"),
        ("API_KEYS_FILE", file.to_str().unwrap()),
    ]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pass-through mode"), "{stderr}");
}

#[tokio::test]
async fn allow_anonymous_serves_callers_without_a_key_on_all_interfaces() {
    let service = Service::start(&[("HOST", "0.0.0.0"), ("ALLOW_ANONYMOUS", "true")]);

    let response = reqwest::get(format!("{}/conversations?pageSize=1", service.address))
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 200, "{}", service.output());
}

#[test]
fn the_keys_commands_add_list_and_revoke() {
    let (_dir, file) = keys_file();
    let path = file.to_str().unwrap();

    let key = add_key(&file, "crm", "read,write", Some(30));
    let duplicate = keys_command(&["add", "--file", path, "--id", "crm", "--scopes", "read"]);
    let bad_id = keys_command(&[
        "add", "--file", path, "--id", "crm sync", "--scopes", "read",
    ]);
    add_key(&file, "bi", "read", None);
    let listed = keys_command(&["list", "--file", path]);
    let revoked = keys_command(&["revoke", "--file", path, "--id", "crm"]);
    let after = keys_command(&["list", "--file", path]);
    let unknown = keys_command(&["revoke", "--file", path, "--id", "crm"]);

    assert!(key.starts_with("qpk_") && key.len() == 47, "{key}");
    assert_eq!(duplicate.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("exists already"));
    assert_eq!(bad_id.status.code(), Some(2));
    let listed = String::from_utf8(listed.stdout).unwrap();
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["id", "scopes", "per-minute"],
            vec!["crm", "read,write", "30"],
            vec!["bi", "read", "-"]
        ]
    );
    assert!(revoked.status.success());
    let after = String::from_utf8(after.stdout).unwrap();
    assert!(!after.contains("crm") && after.contains("bi"), "{after}");
    assert_eq!(unknown.status.code(), Some(1));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&key), "the key itself is never stored");
}

#[cfg(unix)]
fn mode(file: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(file).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn the_keys_commands_refuse_to_write_through_a_link_at_their_temporary_name() {
    let (dir, file) = keys_file();
    let path = file.to_str().unwrap();
    let key = add_key(&file, "crm", "read", None);
    let before = std::fs::read_to_string(&file).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "not a keys file\n").unwrap();
    let planted = dir.path().join(".caller-keys.tmp");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();

    let added = keys_command(&["add", "--file", path, "--id", "bi", "--scopes", "read"]);
    let revoked = keys_command(&["revoke", "--file", path, "--id", "crm"]);

    for output in [&added, &revoked] {
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(".caller-keys.tmp exists"), "{stderr}");
    }
    assert!(
        added.stdout.is_empty(),
        "no key handed out that was not stored"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "not a keys file\n"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    assert!(
        std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    std::fs::remove_file(&planted).unwrap();
    let revoked = keys_command(&["revoke", "--file", path, "--id", "crm"]);
    assert!(revoked.status.success());
    assert!(
        !std::fs::read_to_string(&file).unwrap().contains("crm "),
        "{key}"
    );
    assert!(!planted.exists(), "no temporary file left behind");
}

#[cfg(unix)]
#[test]
fn the_keys_file_stays_0600_and_a_wider_mode_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, file) = keys_file();
    let path = file.to_str().unwrap();
    add_key(&file, "crm", "read", None);
    let created = mode(&file);
    let second = keys_command(&["add", "--file", path, "--id", "bi", "--scopes", "read"]);
    let after_add = mode(&file);
    let revoked = keys_command(&["revoke", "--file", path, "--id", "crm"]);
    let after_revoke = mode(&file);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let widened = keys_command(&["add", "--file", path, "--id", "erp", "--scopes", "read"]);

    assert_eq!((created, after_add, after_revoke), (0o600, 0o600, 0o600));
    for quiet in [&second, &revoked] {
        assert!(
            !String::from_utf8_lossy(&quiet.stderr).contains("warning"),
            "no warning for a 0600 file"
        );
    }
    assert!(widened.status.success(), "a warning, not a refusal");
    let stderr = String::from_utf8_lossy(&widened.stderr);
    assert!(stderr.contains("mode 0644"), "{stderr}");
    assert!(stderr.contains(&format!("chmod 600 {path}")), "{stderr}");
}

#[tokio::test]
async fn sighup_rereads_the_keys_and_the_log_names_the_key_id_never_the_key() {
    let (_dir, file) = keys_file();
    let key = add_key(&file, "crm", "read", None);
    let service = Service::start(&[
        ("API_KEYS_FILE", file.to_str().unwrap()),
        ("RUST_LOG", "info"),
        ("NO_COLOR", "1"),
    ]);
    let client = reqwest::Client::new();

    let answered = client
        .get(format!("{}/conversations?pageSize=1", service.address))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let signalled = Command::new("kill")
        .args(["-HUP", &service.pid().to_string()])
        .status()
        .unwrap();
    eventually("the reload on SIGHUP in the log", PATIENCE, async || {
        service
            .output()
            .contains("caller keys reloaded")
            .then_some(())
    })
    .await;
    let after = client
        .get(format!("{}/healthz", service.address))
        .send()
        .await;

    assert_eq!(answered.status().as_u16(), 200);
    assert!(signalled.success());
    assert!(
        after.is_ok_and(|r| r.status() == 200),
        "the service survives SIGHUP"
    );
    let logs = service.output();
    assert!(logs.contains("sighup=true"), "{logs}");
    assert!(logs.contains("caller.key_id=crm"), "{logs}");
    assert!(!logs.contains(&key), "the key leaked into the log");
}
