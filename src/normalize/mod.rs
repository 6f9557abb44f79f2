//! Pure mappings from each input convention onto the record model.
//!
//! Nothing here does I/O: transports hand in parsed bytes, these functions
//! hand back records or errors that name the offending field.

pub mod cumulative;
pub mod fingerprint;
pub mod limits;
pub mod log;
pub mod otlp_metric;
pub mod otlp_value;
pub mod otlp_wire;
pub mod point;
pub mod privacy;
pub mod span;
pub mod usage_report;
mod values;

pub use fingerprint::KeyFingerprinter;
pub use log::{LogError, normalize_log};
pub use otlp_value::{attributes_to_json, resource_attributes};
pub use span::{NormalizedSpan, SpanContext, SpanError, normalize_span};
pub use usage_report::{
    AccountingRules, RawReport, ReportError, normalize_json, normalize_report, parse_report,
};
