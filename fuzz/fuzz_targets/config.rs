//! The config loader (`tally::config::Config::from_toml_str`): a TOML file's
//! text under `TALLY_*` environment variables, then validation.
//!
//! Input: the TOML text, then optionally a NUL byte and environment lines
//! `KEY=VALUE`, each KEY read as `TALLY_KEY` (`INGEST__MAX_BODY_BYTES=5`).

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tally::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (toml, env_text) = text.split_once('\0').unwrap_or((&text, ""));
    let env: HashMap<String, String> = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (format!("TALLY_{key}"), value.to_owned()))
        .collect();
    if let Ok(config) = Config::from_toml_str("fuzz.toml", toml, &env, &Overrides::default()) {
        // A loaded config's derived settings are valid too.
        config.budgets.settings().expect("validated");
        config.query.limits().expect("validated");
    }
});
