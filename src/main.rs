//! Entry point; everything lives in the library so tests run the same code.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    qpien_rest::cli::run(std::env::args().skip(1).collect()).await
}
