//! The `tally` binary: parse the command line, set up logging, run.

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
