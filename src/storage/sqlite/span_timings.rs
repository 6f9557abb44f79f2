//! What statistics read of each span of a span block, kept beside the block
//! (`span_block_timings`, a row per block): its project and service, kind,
//! name, model, start, duration and whether it failed, in about 23 bytes a
//! span with the block's own lists of the strings (SDK-shaped traffic). A
//! statistic reads the spans of the blocks its window only partly covers,
//! and of every block where no block sums what it needs (durations by span
//! name), from these rather than from the chunks, whose rows take about 450
//! bytes a span.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::model::{SpanKind, SpanRecord, SpanStatus};
use crate::storage::SpanTiming;

/// One span as a block's timings keep it: its strings as indexes into the
/// block's own lists of them.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    scope: u32,
    kind: SpanKind,
    name: u32,
    /// One past its index in `models`; 0 when it names none.
    model: u32,
    /// Nanoseconds after the block's least start.
    start: u64,
    duration_ns: i64,
    error: bool,
}

/// A block's timings as stored (postcard).
#[derive(Debug, Serialize, Deserialize)]
struct Stored<'a> {
    /// (project, service)
    #[serde(borrow)]
    scopes: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    names: Vec<&'a str>,
    #[serde(borrow)]
    models: Vec<&'a str>,
    least_start_ns: i64,
    rows: Vec<Row>,
}

/// The timings of one block's spans, as they are added.
#[derive(Default)]
pub struct Builder<'a> {
    scopes: Strings<(&'a str, &'a str)>,
    names: Strings<&'a str>,
    models: Strings<&'a str>,
    /// Each span's row, its start not yet made relative.
    rows: Vec<(i64, Row)>,
}

/// A block's list of one kind of its spans' strings, and where each is in
/// it (a block can hold as many distinct ones as spans).
struct Strings<T> {
    list: Vec<T>,
    at: FxHashMap<T, u32>,
    /// The index given last.
    last: usize,
}

impl<T> Default for Strings<T> {
    fn default() -> Self {
        Strings { list: Vec::new(), at: FxHashMap::default(), last: 0 }
    }
}

impl<T: Copy + Eq + std::hash::Hash> Strings<T> {
    /// Where `value` is in the list, added if new.
    fn index(&mut self, value: T) -> u32 {
        // A block's spans mostly share the span before's.
        if self.list.get(self.last) == Some(&value) {
            return self.last as u32;
        }
        let list = &mut self.list;
        let at = *self.at.entry(value).or_insert_with(|| {
            list.push(value);
            list.len() as u32 - 1
        });
        self.last = at as usize;
        at
    }
}

impl<'a> Builder<'a> {
    pub fn add(&mut self, span: &'a SpanRecord) {
        let row = Row {
            scope: self.scopes.index((&span.project, &span.service)),
            kind: span.kind,
            name: self.names.index(&span.name),
            model: span.model.as_deref().map_or(0, |model| self.models.index(model) + 1),
            start: 0,
            duration_ns: span.end_ns - span.start_ns,
            error: span.status == SpanStatus::Error,
        };
        self.rows.push((span.start_ns, row));
    }

    pub fn encode(self) -> Vec<u8> {
        let least_start_ns = self.rows.iter().map(|r| r.0).min().unwrap_or(0);
        let rows = self
            .rows
            .into_iter()
            .map(|(start_ns, row)| Row { start: start_ns.abs_diff(least_start_ns), ..row })
            .collect();
        let stored = Stored {
            scopes: self.scopes.list,
            names: self.names.list,
            models: self.models.list,
            least_start_ns,
            rows,
        };
        postcard::to_allocvec(&stored).expect("writing to a Vec cannot fail")
    }
}

/// Hands each span of a block's stored `timings` of `project` (and
/// `service`) that starts in `[from_ns, to_ns)` to `each`.
pub fn each_span(
    timings: &[u8],
    (project, service): (&str, Option<&str>),
    (from_ns, to_ns): (i64, i64),
    mut each: impl FnMut(SpanTiming<'_>),
) -> Result<(), String> {
    let stored: Stored<'_> =
        postcard::from_bytes(timings).map_err(|e| format!("stored span timings: {e}"))?;
    let in_scope: Vec<bool> = stored
        .scopes
        .iter()
        .map(|(p, s)| *p == project && service.is_none_or(|wanted| wanted == *s))
        .collect();
    for row in &stored.rows {
        let out_of_range = || format!("stored span timings: an index out of range in {row:?}");
        if !*in_scope.get(row.scope as usize).ok_or_else(out_of_range)? {
            continue;
        }
        let start_ns = i64::try_from(row.start)
            .ok()
            .and_then(|after| stored.least_start_ns.checked_add(after))
            .ok_or_else(out_of_range)?;
        if start_ns < from_ns || start_ns >= to_ns {
            continue;
        }
        let model = match row.model {
            0 => None,
            m => Some(*stored.models.get(m as usize - 1).ok_or_else(out_of_range)?),
        };
        each(SpanTiming {
            kind: row.kind.as_str(),
            name: stored.names.get(row.name as usize).ok_or_else(out_of_range)?,
            model,
            duration_ns: row.duration_ns,
            error: row.error,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(
        project: &str,
        service: &str,
        name: &str,
        model: Option<&str>,
        start: i64,
    ) -> SpanRecord {
        SpanRecord {
            project: project.to_owned(),
            service: service.to_owned(),
            name: name.to_owned(),
            model: model.map(str::to_owned),
            kind: if model.is_some() { SpanKind::Llm } else { SpanKind::Tool },
            start_ns: start,
            end_ns: start + 1_000 + start % 7,
            status: if start % 3 == 0 { SpanStatus::Error } else { SpanStatus::Ok },
            ..SpanRecord::example()
        }
    }

    type Seen = (String, String, Option<String>, i64, bool);

    fn seen(timings: &[u8], scope: (&str, Option<&str>), window: (i64, i64)) -> Vec<Seen> {
        let mut seen = Vec::new();
        each_span(timings, scope, window, |t| {
            let model = t.model.map(str::to_owned);
            seen.push((t.kind.to_owned(), t.name.to_owned(), model, t.duration_ns, t.error));
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_blocks_spans_come_back_by_project_service_and_start() {
        let spans = [
            span("p", "api", "chat", Some("gpt-4o"), 5_000_000_000),
            span("p", "api", "search", None, 4_000_000_000),
            span("p", "worker", "chat", Some("claude"), 6_000_000_000),
            span("q", "api", "chat", Some("gpt-4o"), 4_500_000_000),
            span("p", "api", "chat", None, 9_000_000_000),
        ];
        let mut builder = Builder::default();
        spans.iter().for_each(|s| builder.add(s));
        let timings = builder.encode();
        let expected = |s: &SpanRecord| -> Seen {
            let error = s.status == SpanStatus::Error;
            (
                s.kind.as_str().to_owned(),
                s.name.clone(),
                s.model.clone(),
                s.end_ns - s.start_ns,
                error,
            )
        };
        let all = (i64::MIN, i64::MAX);
        let of = |picked: &[usize]| picked.iter().map(|&i| expected(&spans[i])).collect::<Vec<_>>();
        assert_eq!(seen(&timings, ("p", None), all), of(&[0, 1, 2, 4]));
        assert_eq!(seen(&timings, ("p", Some("api")), all), of(&[0, 1, 4]));
        assert_eq!(seen(&timings, ("q", None), all), of(&[3]));
        assert_eq!(seen(&timings, ("p", None), (4_000_000_001, 9_000_000_000)), of(&[0, 2]));
        assert_eq!(seen(&timings, ("p", None), (4_000_000_000, 5_000_000_001)), of(&[0, 1]));
        assert!(seen(&timings, ("r", None), all).is_empty());
        // About 16 bytes a span besides the block's strings.
        assert!(timings.len() < 5 * 16 + 60, "{} bytes", timings.len());
        // No spans: nothing to hand over.
        assert!(seen(&Builder::default().encode(), ("p", None), all).is_empty());
    }

    #[test]
    fn a_block_of_as_many_services_names_and_models_as_spans_comes_back_whole() {
        let spans: Vec<SpanRecord> = (0..3_000_i64)
            .map(|i| {
                let model = format!("model-{}", i % 1_000);
                let start = 1_000 * (i % 7);
                span("p", &format!("svc-{}", i % 1_500), &format!("span-{i}"), Some(&model), start)
            })
            .collect();
        let mut builder = Builder::default();
        spans.iter().for_each(|s| builder.add(s));
        let timings = builder.encode();
        let mut seen = Vec::new();
        each_span(&timings, ("p", Some("svc-7")), (0, 7_000), |t| {
            seen.push((t.name.to_owned(), t.model.map(str::to_owned), t.duration_ns));
        })
        .unwrap();
        let expected: Vec<_> = spans
            .iter()
            .filter(|s| s.service == "svc-7")
            .map(|s| (s.name.clone(), s.model.clone(), s.end_ns - s.start_ns))
            .collect();
        assert_eq!((seen.len(), &seen), (2, &expected));
    }

    #[test]
    fn timings_that_cannot_be_read_are_an_error() {
        let spans = [span("p", "api", "chat", Some("gpt-4o"), 10)];
        let mut builder = Builder::default();
        spans.iter().for_each(|s| builder.add(s));
        let timings = builder.encode();
        let all = (i64::MIN, i64::MAX);
        for cut in [1, timings.len() / 2, timings.len() - 1] {
            assert!(each_span(&timings[..cut], ("p", None), all, |_| {}).is_err(), "{cut}");
        }
        // Indexes past the block's lists.
        let bad = |row: Row| {
            let stored = Stored {
                scopes: vec![("p", "api")],
                names: vec!["chat"],
                models: vec![],
                least_start_ns: 0,
                rows: vec![row],
            };
            let bytes = postcard::to_allocvec(&stored).unwrap();
            each_span(&bytes, ("p", None), all, |_| {}).unwrap_err()
        };
        let row = || Row {
            scope: 0,
            kind: SpanKind::Llm,
            name: 0,
            model: 0,
            start: 0,
            duration_ns: 1,
            error: false,
        };
        assert!(bad(Row { scope: 1, ..row() }).contains("out of range"));
        assert!(bad(Row { name: 1, ..row() }).contains("out of range"));
        assert!(bad(Row { model: 1, ..row() }).contains("out of range"));
        assert!(bad(Row { start: u64::MAX, ..row() }).contains("out of range"));
    }
}
