//! Pure mappings from each input convention onto the record model.
//!
//! Nothing here does I/O: transports hand in parsed bytes, these functions
//! hand back records or errors that name the offending field.

pub mod fingerprint;
pub mod usage_report;
mod values;

pub use fingerprint::KeyFingerprinter;
pub use usage_report::{AccountingRules, RawReport, ReportError, normalize_report, parse_report};
