//! Entry point; everything lives in the library so tests run the same code.

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: a request allocates and frees many small buffers
/// (headers, JSON, futures), and mimalloc's thread-local free lists took about a fifth off
/// the CPU time of a call to Qpien (`bench/hotpath.sh`). Built without transparent huge
/// pages (`no_thp`): with them it eagerly backed its arenas with 2 MiB pages, and the
/// resident size went from about 19 to 31 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    qpien_rest::cli::run(std::env::args().skip(1).collect()).await
}
