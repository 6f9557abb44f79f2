//! The one record model every source maps onto (DESIGN.md "Record model").
//!
//! Only the LLM call exists so far; spans, metric points and log records join
//! it as their ingest paths land.

mod call;

pub use call::{LlmCall, Operation, Source, Status, Tags};
