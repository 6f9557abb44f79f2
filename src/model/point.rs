//! `MetricPoint`: one measurement of a named, tagged series.

use std::sync::Arc;

use serde::Serialize;

use super::Tags;

/// How a point's value is meant; kept with the series, all kinds roll up
/// the same way (count, sum, min, max, last, quantile sketch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    Gauge,
    Counter,
    Histogram,
}

impl PointKind {
    pub fn parse(text: &str) -> Option<PointKind> {
        match text {
            "gauge" => Some(PointKind::Gauge),
            "counter" => Some(PointKind::Counter),
            "histogram" => Some(PointKind::Histogram),
            _ => None,
        }
    }
}

/// Many observations sent already aggregated (an OTLP histogram): exact
/// count and sum, and the values by bucket (each bucket's observations at
/// one representative value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub buckets: Vec<(f64, u64)>,
}

/// A metric series: project, name and tag set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MetricKey {
    pub project: String,
    pub name: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// The point's series; the points of one series in a batch may share
    /// one key.
    pub key: Arc<MetricKey>,
    pub value: f64,
    /// Unix ms.
    pub time_ms: i64,
    pub kind: PointKind,
    /// Set for pre-aggregated points; `value` is then their mean.
    pub distribution: Option<Box<Distribution>>,
}
