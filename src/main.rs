//! The `tally` binary: parse the command line, set up logging, run.

/// mimalloc rather than the system allocator: ingest allocates and frees many
/// small buffers per record, and glibc's malloc took about a tenth of the
/// server's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
