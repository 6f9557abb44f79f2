//! The one record model every source maps onto (DESIGN.md "Record model").

mod call;
mod point;
mod span;

pub use call::{LlmCall, Operation, Source, Status, Tags, ascii_lowercase};
pub use point::{Distribution, MetricKey, MetricPoint, PointKind};
pub use span::{
    Attributes, LogRecord, PackedAttributes, SpanEvent, SpanKind, SpanRecord, SpanStatus,
};
