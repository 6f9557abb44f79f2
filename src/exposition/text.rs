//! The Prometheus text exposition format (version 0.0.4): families with
//! HELP and TYPE, escaped labels, and histograms with cumulative buckets.
//!
//! Written by hand because the samples are computed at scrape time from
//! Tally's own counters and pre-bucketed histograms, which client libraries'
//! registries (built around observing values one by one) cannot take as is.

use std::fmt::Write as _;

/// A histogram with fixed upper bounds: per-bucket counts (not cumulative;
/// the last is the overflow above every bound), their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.partition_point(|bound| *bound < value);
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(self.bounds, other.bounds);
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Labels rendered once (`a="x",b="y"`, escaped), for a series that is
/// written in many families or many bucket lines.
pub struct LabelSet(String);

impl LabelSet {
    pub fn new(labels: &[(&str, &str)]) -> Self {
        let mut out = String::new();
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label(value, &mut out);
            out.push('"');
        }
        LabelSet(out)
    }
}

/// The `le` label values of a histogram's buckets, `+Inf` last.
pub fn le_values(bounds: &[f64]) -> Vec<String> {
    let mut les: Vec<String> = bounds.iter().map(|b| format!("{b}")).collect();
    les.push("+Inf".to_owned());
    les
}

/// Builds one exposition; every sample belongs to the family declared last.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

pub fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn number(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

impl Exposition {
    /// Declares a family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                escape_label(value, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        number(value, &mut self.out);
        self.out.push('\n');
    }

    /// One sample line with pre-rendered labels and perhaps one more label.
    pub fn sample_with(
        &mut self,
        name: &str,
        labels: &LabelSet,
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        self.out.push_str(name);
        self.out.push('{');
        self.out.push_str(&labels.0);
        if let Some((key, value)) = extra {
            if !labels.0.is_empty() {
                self.out.push(',');
            }
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_label(value, &mut self.out);
            self.out.push('"');
        }
        self.out.push_str("} ");
        number(value, &mut self.out);
        self.out.push('\n');
    }

    /// `histogram` with pre-rendered labels and `le` values (`le_values`).
    pub fn histogram_with(
        &mut self,
        name: &str,
        labels: &LabelSet,
        les: &[String],
        histogram: &Histogram,
    ) {
        let mut cumulative = 0;
        for (count, le) in histogram.counts.iter().zip(les) {
            cumulative += count;
            self.out.push_str(name);
            self.out.push_str("_bucket{");
            self.out.push_str(&labels.0);
            if !labels.0.is_empty() {
                self.out.push(',');
            }
            self.out.push_str("le=\"");
            self.out.push_str(le);
            let _ = writeln!(self.out, "\"}} {cumulative}");
        }
        for (suffix, value) in [("_sum", histogram.sum), ("_count", histogram.count as f64)] {
            self.out.push_str(name);
            self.out.push_str(suffix);
            self.out.push('{');
            self.out.push_str(&labels.0);
            self.out.push_str("} ");
            number(value, &mut self.out);
            self.out.push('\n');
        }
    }

    /// A histogram's `_bucket` lines (cumulative, ending with `+Inf`),
    /// `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        let mut cumulative = 0;
        let mut bounds: Vec<String> = histogram.bounds.iter().map(|b| format!("{b}")).collect();
        bounds.push("+Inf".to_owned());
        for (count, le) in histogram.counts.iter().zip(&bounds) {
            cumulative += count;
            with_le.truncate(labels.len());
            with_le.push(("le", le));
            self.sample(&bucket, &with_le, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, histogram.count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms() {
        let mut histogram = Histogram::new(&[0.1, 1.0]);
        for value in [0.05, 0.1, 0.5, 3.0] {
            histogram.observe(value);
        }
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "Things.\nMore");
        e.sample("x_total", &[("a", "q\"u\\o\nte")], 3.0);
        e.sample("x_total", &[], f64::INFINITY);
        e.family("h_seconds", Kind::Histogram, "Times.");
        e.histogram("h_seconds", &[("k", "v")], &histogram);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"u\\\\o\\nte\"} 3\nx_total +Inf\n\
             # HELP h_seconds Times.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{k=\"v\",le=\"0.1\"} 2\nh_seconds_bucket{k=\"v\",le=\"1\"} 3\n\
             h_seconds_bucket{k=\"v\",le=\"+Inf\"} 4\nh_seconds_sum{k=\"v\"} 3.65\n\
             h_seconds_count{k=\"v\"} 4\n"
        );
    }
}
