//! Pure mappings from each input convention onto the record model.
//!
//! Nothing here does I/O: transports hand in parsed bytes, these functions
//! hand back records or errors that name the offending field.

pub mod cumulative;
pub mod fingerprint;
pub mod limits;
pub mod log;
pub mod otlp_metric;
pub mod point;
pub mod privacy;
pub mod span;
pub mod usage_report;
mod values;

pub use fingerprint::KeyFingerprinter;
pub use log::{LogError, normalize_log};
pub use span::{
    NormalizedSpan, SpanContext, SpanError, attributes_to_json, normalize_span, resource_attributes,
};
pub use usage_report::{
    AccountingRules, RawReport, ReportError, normalize_json, normalize_report, parse_report,
};
