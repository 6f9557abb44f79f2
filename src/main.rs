//! The `tally` binary: parse the command line, set up logging, run.

/// mimalloc rather than the system allocator: ingest allocates and frees many
/// small buffers per record, and glibc's malloc took about a tenth of the
/// server's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its place in `mi_option_t`).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long memory freed and not used again stays with the process before
/// mimalloc hands it back to the OS. At its default, a second, a busy
/// server handed back memory it took again a moment later, and the kernel
/// zeroed every page of it anew on the next touch: 2.5 times the page
/// faults and 1.7 % more of the CPU at 1 M SDK-shaped spans (BENCHMARKS.md).
/// An operator's `MIMALLOC_PURGE_DELAY` wins.
const KEEP_FREED_MS: std::ffi::c_long = 10_000;

fn main() -> std::process::ExitCode {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's integer options, which it reads
        // each time it purges; options may be set at any time, from any
        // thread.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, KEEP_FREED_MS)
        };
    }
    tally::cli::main()
}

#[cfg(test)]
mod tests {
    /// `PURGE_DELAY` names the purge delay: read where `main` has not set
    /// it, it holds what `MIMALLOC_PURGE_DELAY` says, else mimalloc's
    /// default for that option, a second (the options either side of it
    /// default to 1 and 0).
    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|delay| delay.trim().parse().ok())
            .unwrap_or(1000);
        // SAFETY: reads one of mimalloc's integer options.
        #[allow(unsafe_code)]
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(delay, expected);
    }
}
