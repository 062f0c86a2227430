//! Checks every GraphQL operation the facade sends against the schema we assume, so a
//! wrong field or argument name fails the build instead of a user's request.

use std::fs;
use std::path::Path;

use apollo_compiler::{ExecutableDocument, Schema};

const DIR: &str = "src/upstream/graphql";
const FRAGMENT: &str = "conversation_fields.graphql";

fn main() {
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
