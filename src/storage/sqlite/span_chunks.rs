//! Spans as stored: one `span_chunks` row per trace per append, holding the
//! new spans of that trace in two encodings: `head`, the fields that trace
//! lists, filters and statistics read (postcard), and `body`, everything
//! else, with each distinct resource once (MessagePack, then zstd with the
//! store's dictionary: `span_packing`). A row per
//! span, with an id index entry each and the ids and resource repeated as
//! JSON, made the writer's B-trees and the WAL the cost of span ingest.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, Transaction, params};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::span_packing::{self, Dictionary, SpanPacking};
use crate::model::{Attributes, SpanEvent, SpanKind, SpanRecord, SpanStatus};

/// What lists, filters and statistics read of a span.
#[derive(Debug, Serialize, Deserialize)]
pub struct Head<'a> {
    pub span_id: &'a str,
    #[serde(borrow)]
    pub parent_span_id: Option<&'a str>,
    pub name: &'a str,
    pub kind: SpanKind,
    pub service: &'a str,
    pub start_ns: i64,
    pub end_ns: i64,
    pub status: SpanStatus,
    #[serde(borrow)]
    pub model: Option<&'a str>,
}

impl<'a> Head<'a> {
    fn of(span: &'a SpanRecord) -> Self {
        Head {
            span_id: &span.span_id,
            parent_span_id: span.parent_span_id.as_deref(),
            name: &span.name,
            kind: span.kind,
            service: &span.service,
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            status: span.status,
            model: span.model.as_deref(),
        }
    }
}

/// The rest of a span; `resource` indexes its chunk's resources.
#[derive(Serialize, Deserialize)]
struct Rest<'a> {
    status_message: Option<Cow<'a, str>>,
    attributes: Cow<'a, Attributes>,
    events: Cow<'a, [SpanEvent]>,
    resource: u32,
    provider: Option<Cow<'a, str>>,
    user: Option<Cow<'a, str>>,
    session: Option<Cow<'a, str>>,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cost_usd: f64,
    llm_call: bool,
}

#[derive(Serialize, Deserialize)]
struct Body<'a> {
    resources: Vec<Cow<'a, Attributes>>,
    spans: Vec<Rest<'a>>,
}

/// A body as `Body` serializes (MessagePack, structs as arrays), written
/// field by field so that packed attributes go in as they are.
fn write_body(resources: &[&Arc<Attributes>], spans: &[(&SpanRecord, u32)]) -> Vec<u8> {
    const WRITE: &str = "writing MessagePack into a Vec cannot fail";
    let sizes: usize =
        spans.iter().map(|(s, _)| s.packed.as_ref().map_or(512, |p| p.0.len() + 128)).sum();
    let mut body = Vec::with_capacity(sizes + 1024 * resources.len());
    let out = &mut body;
    let text = |out: &mut Vec<u8>, text: Option<&str>| match text {
        Some(text) => rmp::encode::write_str(out, text).expect(WRITE),
        None => rmp::encode::write_nil(out).expect(WRITE),
    };
    rmp::encode::write_array_len(out, 2).expect(WRITE);
    rmp::encode::write_array_len(out, resources.len() as u32).expect(WRITE);
    for resource in resources {
        rmp_serde::encode::write(out, &***resource).expect(WRITE);
    }
    rmp::encode::write_array_len(out, spans.len() as u32).expect(WRITE);
    for (span, resource) in spans {
        rmp::encode::write_array_len(out, 12).expect(WRITE);
        text(out, span.status_message.as_deref());
        match &span.packed {
            Some(packed) => out.extend_from_slice(&packed.0),
            None => rmp_serde::encode::write(out, &span.attributes).expect(WRITE),
        }
        rmp_serde::encode::write(out, &span.events).expect(WRITE);
        rmp::encode::write_uint(out, u64::from(*resource)).expect(WRITE);
        text(out, span.provider.as_deref());
        text(out, span.user.as_deref());
        text(out, span.session.as_deref());
        rmp::encode::write_uint(out, span.input_tokens).expect(WRITE);
        rmp::encode::write_uint(out, span.output_tokens).expect(WRITE);
        rmp::encode::write_uint(out, span.cache_read_tokens).expect(WRITE);
        rmp::encode::write_f64(out, span.cost_usd).expect(WRITE);
        rmp::encode::write_bool(out, span.llm_call).expect(WRITE);
    }
    body
}

/// Spans of one trace encoded for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedChunk {
    /// The spans it holds, as indices into the records it was made from.
    pub spans: Vec<usize>,
    pub min_start: i64,
    pub max_start: i64,
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    /// The dictionary `body` was packed with, stored with the chunk.
    pub dictionary: Option<Arc<Dictionary>>,
}

/// Encodes `spans[i]` for each of `picked` (spans of one trace) as a chunk.
fn encode(spans: &[SpanRecord], picked: Vec<usize>, packing: &Arc<SpanPacking>) -> EncodedChunk {
    let heads: Vec<Head<'_>> = picked.iter().map(|&i| Head::of(&spans[i])).collect();
    // The spans of one export share their resource; others may carry an
    // equal one.
    let mut resources: Vec<&Arc<Attributes>> = Vec::new();
    let placed: Vec<(&SpanRecord, u32)> = picked
        .iter()
        .map(|&i| {
            let span = &spans[i];
            let known = resources
                .iter()
                .position(|r| Arc::ptr_eq(r, &span.resource) || **r == span.resource);
            let resource = known.unwrap_or_else(|| {
                resources.push(&span.resource);
                resources.len() - 1
            });
            (span, resource as u32)
        })
        .collect();
    let body = write_body(&resources, &placed);
    let starts = picked.iter().map(|&i| spans[i].start_ns);
    let (body, dictionary) = packing.pack(&body);
    EncodedChunk {
        min_start: starts.clone().min().unwrap_or(0),
        max_start: starts.max().unwrap_or(0),
        head: postcard::to_allocvec(&heads).expect("writing to a Vec cannot fail"),
        body,
        dictionary,
        spans: picked,
    }
}

/// The spans in chunks, one per trace in order of first appearance; a span
/// sent twice (same trace and span id) is kept once, as first sent.
pub fn chunks_of(spans: &[SpanRecord], packing: &Arc<SpanPacking>) -> Vec<EncodedChunk> {
    let mut traces: FxHashMap<(&str, &str), usize> = FxHashMap::default();
    let mut seen: FxHashSet<(&str, &str, &str)> = FxHashSet::default();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        if !seen.insert((&span.project, &span.trace_id, &span.span_id)) {
            continue;
        }
        let at = *traces.entry((&span.project, &span.trace_id)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(i);
    }
    groups.into_iter().map(|picked| encode(spans, picked, packing)).collect()
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> String {
    format!("stored span chunk {what}: {err}")
}

/// The heads of a chunk.
pub fn heads(head: &[u8]) -> Result<Vec<Head<'_>>, String> {
    postcard::from_bytes(head).map_err(|e| corrupt("head", e))
}

/// The spans of a chunk of trace `trace_id` in `project`, as they were sent.
pub fn decode(
    project: &str,
    trace_id: &str,
    (head, body): (&[u8], &[u8]),
    packing: &SpanPacking,
) -> Result<Vec<SpanRecord>, String> {
    let heads = heads(head)?;
    let body = packing.unpack(body)?;
    let Body { resources, spans } = rmp_serde::from_slice(&body).map_err(|e| corrupt("body", e))?;
    if spans.len() != heads.len() {
        return Err(corrupt("", format!("{} heads but {} bodies", heads.len(), spans.len())));
    }
    let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
    let resources: Vec<Arc<Attributes>> =
        resources.into_iter().map(|r| Arc::new(r.into_owned())).collect();
    heads
        .into_iter()
        .zip(spans)
        .map(|(h, r)| {
            let resource = resources
                .get(r.resource as usize)
                .ok_or_else(|| corrupt("body", format!("no resource {}", r.resource)))?;
            Ok(SpanRecord {
                project: project.to_owned(),
                trace_id: trace_id.to_owned(),
                span_id: h.span_id.to_owned(),
                parent_span_id: h.parent_span_id.map(str::to_owned),
                name: h.name.to_owned(),
                kind: h.kind,
                service: h.service.to_owned(),
                start_ns: h.start_ns,
                end_ns: h.end_ns,
                status: h.status,
                status_message: owned(r.status_message),
                attributes: r.attributes.into_owned(),
                events: r.events.into_owned(),
                resource: resource.clone(),
                model: h.model.map(str::to_owned),
                provider: owned(r.provider),
                user: owned(r.user),
                session: owned(r.session),
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cache_read_tokens: r.cache_read_tokens,
                cost_usd: r.cost_usd,
                llm_call: r.llm_call,
                packed: None,
            })
        })
        .collect()
}

/// `chunk` without the spans `keep` says no to (spans re-sent after they
/// were stored), re-encoded; `None` when none is kept.
fn keeping(
    (project, trace_id): (&str, &str),
    chunk: &EncodedChunk,
    keep: &[bool],
    packing: &Arc<SpanPacking>,
) -> Result<Option<EncodedChunk>, String> {
    let spans = decode(project, trace_id, (&chunk.head, &chunk.body), packing)?;
    let picked: Vec<usize> = (0..spans.len()).filter(|&i| keep[i]).collect();
    if picked.is_empty() {
        return Ok(None);
    }
    let mut kept = encode(&spans, picked, packing);
    kept.spans = kept.spans.iter().map(|&i| chunk.spans[i]).collect();
    Ok(Some(kept))
}

/// Inserts a chunk of the trace whose row in `traces` is `trace` (`None`
/// while a migration has yet to fill it in); returns its seq.
pub fn insert(
    tx: &Transaction<'_>,
    (project, trace_id): (&str, &str),
    trace: Option<i64>,
    chunk: &EncodedChunk,
) -> Result<i64, rusqlite::Error> {
    if let Some(dictionary) = &chunk.dictionary {
        span_packing::store(tx, dictionary)?;
    }
    tx.prepare_cached(
        "INSERT INTO span_chunks (project, trace_id, min_start, max_start, spans, head, body, \
         trace) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        project,
        trace_id,
        chunk.min_start,
        chunk.max_start,
        chunk.spans.len() as i64,
        chunk.head,
        chunk.body,
        trace
    ])?;
    Ok(tx.last_insert_rowid())
}

/// `chunk` (of spans of `spans`) without those its trace (row `trace` of
/// `traces`) already has stored (sent again): itself when none were, `None`
/// when all were; and how many spans the trace has stored.
pub fn unstored<'c>(
    tx: &Transaction<'_>,
    (project, trace_id): (&str, &str),
    trace: i64,
    chunk: &'c EncodedChunk,
    spans: &[&SpanRecord],
    packing: &Arc<SpanPacking>,
) -> Result<(Option<Cow<'c, EncodedChunk>>, usize), super::StorageError> {
    let stored = stored_ids(tx, trace)?;
    if stored.is_empty() {
        return Ok((Some(Cow::Borrowed(chunk)), 0));
    }
    let keep: Vec<bool> =
        chunk.spans.iter().map(|&i| !stored.contains(&spans[i].span_id)).collect();
    if keep.iter().all(|k| *k) {
        return Ok((Some(Cow::Borrowed(chunk)), stored.len()));
    }
    let kept = keeping((project, trace_id), chunk, &keep, packing)
        .map_err(super::StorageError::Corrupt)?;
    Ok((kept.map(Cow::Owned), stored.len()))
}

/// The first `n` spans of `chunk` (fewer than it holds).
pub fn first(
    project: &str,
    trace_id: &str,
    chunk: &EncodedChunk,
    n: usize,
    packing: &Arc<SpanPacking>,
) -> Result<Option<EncodedChunk>, super::StorageError> {
    let keep: Vec<bool> = (0..chunk.spans.len()).map(|i| i < n).collect();
    keeping((project, trace_id), chunk, &keep, packing).map_err(super::StorageError::Corrupt)
}

/// The ids of the spans of a trace (row `trace` of `traces`) already stored.
fn stored_ids(tx: &Transaction<'_>, trace: i64) -> Result<FxHashSet<String>, super::StorageError> {
    let mut stmt = tx.prepare_cached(
        "SELECT head FROM span_chunks INDEXED BY span_chunks_by_trace WHERE trace = ?1",
    )?;
    let mut rows = stmt.query(params![trace])?;
    let mut ids = FxHashSet::default();
    while let Some(row) = rows.next()? {
        let head = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        ids.extend(
            heads(head).map_err(super::StorageError::Corrupt)?.iter().map(|h| h.span_id.to_owned()),
        );
    }
    Ok(ids)
}

/// Conditions one span of a trace must meet together (trace list filters).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SpanMatch {
    pub service: Option<String>,
    pub kind: Option<String>,
    pub model: Option<String>,
    /// (key, value): a span or resource attribute of that key whose value,
    /// as text, is `value` (booleans as `1` and `0`).
    pub attributes: Vec<(String, String)>,
}

impl SpanMatch {
    pub fn is_empty(&self) -> bool {
        self.service.is_none()
            && self.kind.is_none()
            && self.model.is_none()
            && self.attributes.is_empty()
    }

    fn head_matches(&self, h: &Head<'_>) -> bool {
        self.service.as_deref().is_none_or(|s| s == h.service)
            && self.kind.as_deref().is_none_or(|k| k == h.kind.as_str())
            && self.model.as_deref().is_none_or(|m| h.model == Some(m))
    }

    /// Whether one span of the chunk meets every condition.
    fn matches(&self, (head, body): (&[u8], &[u8]), packing: &SpanPacking) -> Result<bool, String> {
        let heads = heads(head)?;
        if self.attributes.is_empty() {
            return Ok(heads.iter().any(|h| self.head_matches(h)));
        }
        if !heads.iter().any(|h| self.head_matches(h)) {
            return Ok(false);
        }
        let spans = decode("", "", (head, body), packing)?;
        Ok(heads.iter().zip(&spans).any(|(h, span)| {
            self.head_matches(h)
                && self.attributes.iter().all(|(key, value)| {
                    [&span.attributes, &span.resource]
                        .iter()
                        .any(|map| map.get(key).and_then(as_text).as_deref() == Some(value))
                })
        }))
    }
}

/// An attribute value as text, as filters compare it: strings as they are,
/// booleans as 1 and 0 (as SQLite read them when spans were stored as
/// JSON), other values as JSON, null as nothing.
fn as_text(value: &serde_json::Value) -> Option<Cow<'_, str>> {
    use serde_json::Value;
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "1" } else { "0" })),
        Value::String(s) => Some(Cow::Borrowed(s)),
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// Registers `span_chunk_match(head, body, spec)`: whether one span of the
/// chunk meets the `SpanMatch` given as JSON in `spec`.
pub fn register_functions(
    conn: &Connection,
    packing: Arc<SpanPacking>,
) -> Result<(), rusqlite::Error> {
    conn.create_scalar_function(
        "span_chunk_match",
        3,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| {
            let user = |e: String| rusqlite::Error::UserFunctionError(e.into());
            let spec = ctx.get_or_create_aux(2, |value| -> Result<SpanMatch, String> {
                let text = value.as_str().map_err(|e| e.to_string())?;
                serde_json::from_str(text).map_err(|e| e.to_string())
            })?;
            let head = ctx.get_raw(0).as_blob().map_err(|e| user(e.to_string()))?;
            let body = ctx.get_raw(1).as_blob().map_err(|e| user(e.to_string()))?;
            spec.matches((head, body), &packing).map_err(user)
        },
    )
}

/// Moves the spans of a schema 7 store (a row each, as JSON) into chunks,
/// one per trace, written in order of their traces' first start, and
/// rebuilds the time blocks over them. Runs once the schema is applied.
pub fn migrate_from_7(tx: &Transaction<'_>) -> Result<(), super::StorageError> {
    let packing = Arc::new(SpanPacking::default());
    let traces: Vec<(String, String)> = tx
        .prepare(
            "SELECT project, trace_id FROM spans GROUP BY project, trace_id \
             ORDER BY min(start_ns), project, trace_id",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut records = tx.prepare(
        "SELECT record FROM spans INDEXED BY spans_id WHERE project = ?1 AND trace_id = ?2 \
         ORDER BY start_ns, seq",
    )?;
    let mut inserted = Vec::with_capacity(traces.len());
    let mut all_spans = Vec::with_capacity(traces.len());
    for (project, trace_id) in &traces {
        let spans = records
            .query_map(params![project, trace_id], |row| row.get::<_, String>(0))?
            .map(|text| {
                let text = text?;
                serde_json::from_str::<SpanRecord>(&text).map_err(|e| {
                    super::StorageError::Corrupt(format!("stored span of trace {trace_id}: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in chunks_of(&spans, &packing) {
            let seq = insert(tx, (project, trace_id), None, &chunk)?;
            inserted.push((all_spans.len(), seq, chunk.min_start, chunk.max_start, chunk.spans));
        }
        all_spans.push(spans);
    }
    drop(records);
    tx.execute_batch(
        "DELETE FROM span_blocks; DELETE FROM span_block_kind_durations;
         DELETE FROM span_block_model_durations; DELETE FROM span_block_timings;",
    )?;
    let counted = inserted.into_iter().map(|(trace, seq, min, max, spans)| {
        (seq, min, max, spans.iter().map(|&i| &all_spans[trace][i]).collect())
    });
    super::span_blocks::record(tx, super::span_blocks::Slices::MINUTE, counted)?;
    tx.execute_batch("DROP TABLE spans;")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn packing() -> Arc<SpanPacking> {
        Arc::new(SpanPacking::default())
    }

    fn span(trace: &str, id: &str, start_ns: i64) -> SpanRecord {
        SpanRecord {
            trace_id: trace.to_owned(),
            span_id: id.to_owned(),
            start_ns,
            end_ns: start_ns + 5,
            ..SpanRecord::example()
        }
    }

    fn rich(trace: &str, id: &str, start_ns: i64) -> SpanRecord {
        let mut s = span(trace, id, start_ns);
        s.parent_span_id = Some("00000000000000aa".into());
        s.kind = SpanKind::Llm;
        s.status = SpanStatus::Error;
        s.status_message = Some("boom".into());
        s.model = Some("gpt-4o".into());
        s.provider = Some("openai".into());
        s.user = Some("u1".into());
        s.session = Some("s1".into());
        s.input_tokens = 10;
        s.output_tokens = 3;
        s.cache_read_tokens = 2;
        s.cost_usd = 0.25;
        s.llm_call = true;
        s.attributes = json!({"gen_ai.request.temperature": 0.5, "stream": true, "n": 2})
            .as_object()
            .unwrap()
            .clone();
        s.resource =
            Arc::new(json!({"service.name": "svc", "host": "h"}).as_object().unwrap().clone());
        s.events = vec![SpanEvent {
            time_ns: start_ns + 1,
            name: "first_token".into(),
            attributes: json!({"k": [1, "x"]}).as_object().unwrap().clone(),
        }];
        s
    }

    #[test]
    fn chunks_round_trip_by_trace_keeping_the_first_of_repeats() {
        let spans = vec![
            rich("t1", "a", 30),
            span("t2", "a", 10),
            span("t1", "b", 20),
            rich("t1", "a", 99),
        ];
        let chunks = chunks_of(&spans, &packing());
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].spans, vec![0, 2]);
        assert_eq!((chunks[0].min_start, chunks[0].max_start), (20, 30));
        assert_eq!(chunks[1].spans, vec![1]);
        let back = decode("default", "t1", (&chunks[0].head, &chunks[0].body), &packing()).unwrap();
        assert_eq!(back, vec![spans[0].clone(), spans[2].clone()]);
    }

    #[test]
    fn bodies_are_written_as_serde_writes_them_and_packed_attributes_read_as_maps() {
        let spans = [rich("t", "a", 1), span("t", "b", 2)];
        let placed: Vec<(&SpanRecord, u32)> = spans.iter().zip([0, 1]).collect();
        let resources = [&spans[0].resource, &spans[1].resource];
        let rests = spans
            .iter()
            .zip([0, 1])
            .map(|(span, resource)| Rest {
                status_message: span.status_message.as_deref().map(Cow::Borrowed),
                attributes: Cow::Borrowed(&span.attributes),
                events: Cow::Borrowed(&span.events),
                resource,
                provider: span.provider.as_deref().map(Cow::Borrowed),
                user: span.user.as_deref().map(Cow::Borrowed),
                session: span.session.as_deref().map(Cow::Borrowed),
                input_tokens: span.input_tokens,
                output_tokens: span.output_tokens,
                cache_read_tokens: span.cache_read_tokens,
                cost_usd: span.cost_usd,
                llm_call: span.llm_call,
            })
            .collect();
        let body = Body {
            resources: resources.iter().map(|r| Cow::Borrowed(&***r)).collect(),
            spans: rests,
        };
        assert_eq!(write_body(&resources, &placed), rmp_serde::to_vec(&body).unwrap());

        // Packed as ingest packs them (a 32-bit map length), read back as
        // the map they were packed from.
        let mut packed = spans.clone();
        for span in &mut packed {
            let map = std::mem::take(&mut span.attributes);
            let mut bytes = vec![0xdf];
            bytes.extend_from_slice(&(map.len() as u32).to_be_bytes());
            for (key, value) in &map {
                rmp_serde::encode::write(&mut bytes, key).unwrap();
                rmp_serde::encode::write(&mut bytes, value).unwrap();
            }
            span.packed = Some(crate::model::PackedAttributes(bytes));
        }
        let chunk = chunks_of(&packed, &packing()).remove(0);
        let back = decode("default", "t", (&chunk.head, &chunk.body), &packing()).unwrap();
        assert_eq!(back, spans);
    }

    #[test]
    fn a_resource_is_stored_once_per_row_and_shared_when_read() {
        let resource =
            Arc::new(json!({"service.name": "svc", "k": "v"}).as_object().unwrap().clone());
        let mut spans: Vec<SpanRecord> = (0..3).map(|i| span("t", &i.to_string(), i)).collect();
        spans[0].resource = resource.clone();
        spans[1].resource = resource.clone();
        // Equal, though not shared (as from another export).
        spans[2].resource = Arc::new((*resource).clone());
        let chunk = chunks_of(&spans, &packing()).remove(0);
        let back = decode("default", "t", (&chunk.head, &chunk.body), &packing()).unwrap();
        assert_eq!(back, spans);
        assert!(back.windows(2).all(|w| Arc::ptr_eq(&w[0].resource, &w[1].resource)));
    }

    #[test]
    fn a_chunk_keeps_the_spans_asked_for_with_their_indices() {
        let spans = vec![rich("t", "a", 5), span("t", "b", 7), span("t", "c", 9)];
        let chunk = chunks_of(&spans, &packing()).remove(0);
        let kept =
            keeping(("default", "t"), &chunk, &[false, true, true], &packing()).unwrap().unwrap();
        assert_eq!(kept.spans, vec![1, 2]);
        assert_eq!((kept.min_start, kept.max_start), (7, 9));
        let back = decode("default", "t", (&kept.head, &kept.body), &packing()).unwrap();
        assert_eq!(back, vec![spans[1].clone(), spans[2].clone()]);
        assert_eq!(keeping(("default", "t"), &chunk, &[false; 3], &packing()).unwrap(), None);
    }

    #[test]
    fn a_match_needs_one_span_meeting_every_condition() {
        let mut other = span("t", "b", 1);
        other.attributes = json!({"stream": false}).as_object().unwrap().clone();
        let chunk = chunks_of(&[rich("t", "a", 0), other], &packing()).remove(0);
        let check = |m: SpanMatch| m.matches((&chunk.head, &chunk.body), &packing()).unwrap();
        let attrs = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>()
        };
        assert!(check(SpanMatch { kind: Some("llm".into()), ..SpanMatch::default() }));
        assert!(check(SpanMatch { attributes: attrs(&[("stream", "0")]), ..SpanMatch::default() }));
        assert!(check(SpanMatch {
            model: Some("gpt-4o".into()),
            attributes: attrs(&[
                ("stream", "1"),
                ("host", "h"),
                ("gen_ai.request.temperature", "0.5")
            ]),
            ..SpanMatch::default()
        }));
        // Each condition is met by some span, but not by one span.
        assert!(!check(SpanMatch {
            kind: Some("chain".into()),
            attributes: attrs(&[("stream", "1")]),
            ..SpanMatch::default()
        }));
        assert!(!check(SpanMatch { attributes: attrs(&[("n", "3")]), ..SpanMatch::default() }));
    }
}
