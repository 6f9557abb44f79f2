//! `tally vacuum --data-dir DIR`: rewrites a stopped server's store in the
//! pages stores are made with now, returning its free pages to the disk.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::server::StartError;

#[derive(Args)]
pub struct VacuumArgs {
    /// The data dir of a stopped server (its embedded SQLite store).
    #[arg(long)]
    data_dir: PathBuf,
}

pub fn run(args: VacuumArgs) -> anyhow::Result<()> {
    let store = args.data_dir.join("tally.db");
    if !store.is_file() {
        anyhow::bail!("no store at {} (is this a tally data dir?)", store.display());
    }
    // Held until the rewrite is done: no server may start on the dir.
    let _lock = crate::server::lock_data_dir(&args.data_dir).map_err(|err| match err {
        StartError::DataDirInUse(_) => anyhow::anyhow!("{err}: stop that server first"),
        other => anyhow::anyhow!("{other}"),
    })?;
    let started = Instant::now();
    let (page, before, after) =
        crate::storage::sqlite::vacuum(&store).map_err(|err| anyhow::anyhow!("{err}"))?;
    println!(
        "{}: {before} bytes in pages of {page} -> {after} bytes in pages of {} ({:.1} s)",
        store.display(),
        crate::storage::sqlite::PAGE_BYTES,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
