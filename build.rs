//! Checks every GraphQL operation the facade sends against the schema we assume, so a
//! wrong field or argument name fails the build instead of a user's request; and tells
//! the tests whether a `redis-server` is at hand (`cfg(redis_server)`), so the tests
//! that need one are reported as ignored where there is none, not as passed.

use std::env;
use std::fs;
use std::path::Path;

use apollo_compiler::{ExecutableDocument, Schema};

const DIR: &str = "src/upstream/graphql";
const FRAGMENT: &str = "conversation_fields.graphql";

fn main() {
    detect_redis_server();
    check_operations();
}

/// Sets `cfg(redis_server)` when `redis-server` is on `PATH`. In CI (`CI=true`) its
/// absence fails the build: there every test must run, and a skipped one would hide it.
fn detect_redis_server() {
    println!("cargo::rustc-check-cfg=cfg(redis_server)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut found = false;
    for dir in env::split_paths(&path).filter(|d| d.is_dir()) {
        // Installing or removing the package changes the directory, not PATH.
        println!("cargo::rerun-if-changed={}", dir.display());
        found |= dir.join("redis-server").is_file();
    }
    if found {
        println!("cargo::rustc-cfg=redis_server");
    } else if env::var("CI").as_deref() == Ok("true") {
        panic!(
            "CI=true but no redis-server on PATH: the shared-state tests need one \
             (.ci/install-tools.sh installs it; apt-get install redis-server)"
        );
    }
}

fn check_operations() {
    println!("cargo:rerun-if-changed={DIR}");
    let schema_path = Path::new(DIR).join("schema.graphql");
    let sdl = fs::read_to_string(&schema_path).expect("read the schema");
    let schema = Schema::parse_and_validate(sdl, &schema_path).unwrap_or_else(|e| {
        panic!(
            "{} is not a valid schema:\n{}",
            schema_path.display(),
            e.errors
        )
    });
    let fragment = fs::read_to_string(Path::new(DIR).join(FRAGMENT)).expect("read the fragment");

    let mut entries: Vec<_> = fs::read_dir(DIR)
        .expect("list operations")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".graphql") || name == "schema.graphql" || name == FRAGMENT {
            continue;
        }
        let mut source = fs::read_to_string(&path).expect("read an operation");
        if source.contains("...ConversationFields") {
            source = format!("{source}\n{fragment}");
        }
        if let Err(e) = ExecutableDocument::parse_and_validate(&schema, source, &path) {
            panic!(
                "{} does not match the schema:\n{}",
                path.display(),
                e.errors
            );
        }
    }
}
