//! Transports only: they move bytes from HTTP into the pure decoders of
//! `normalize` and hand the records to the committer.

pub mod body;
pub mod otlp;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod points;
pub mod usage;

pub use usage::UsageIngest;
