//! `incident-lab`: the orchestrator's command line. Everything lives in the library.

/// mimalloc, not glibc's malloc: the load generator frees on one tokio worker what it
/// allocated on the other (a request's buffers, futures and strings move with work stealing),
/// and glibc serves that through its arenas' locks. See docs/performance.md's Benchmarks for
/// what it changed, measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    incident_lab::cli::main()
}
