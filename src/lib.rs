//! Tally: observability and usage metering for LLM applications, agent
//! pipelines and LLM gateways. See DESIGN.md for the data flow.

pub mod access;
pub mod aggregate;
pub mod blocking;
pub mod budgets;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod coordination;
pub mod dashboard;
pub mod durability;
pub mod error;
pub mod exposition;
pub mod ingest;
pub mod listener;
pub mod model;
pub mod normalize;
pub mod openapi;
pub mod pricing;
pub mod query;
pub mod server;
pub mod storage;
pub mod time;
pub mod tls;
pub mod varint;
