//! A call chunk's body: its calls' own fields as columns, compressed as one
//! zstd frame. Each field of every call lies together (numbers as varints,
//! times as offsets from the call's time, totals as what the parts do not
//! explain), so that like values meet like: a call stored this way takes a
//! third of the bytes of its record written whole.

use std::cell::RefCell;

use crate::model::{LlmCall, Source};
use crate::storage::StorageError;
use crate::varint;

/// The first byte of a body in this format (schema 12 on).
const FORMAT: u8 = 2;
/// zstd's level: its fastest ordinary one. Higher levels save a few bytes
/// a call at several times the CPU on the writer's thread.
const LEVEL: i32 = 1;
/// The most bytes a body may unpack to: a chunk's calls take far less, and
/// a corrupt length must not allocate at will.
const MAX_UNPACKED: u64 = 256 << 20;

/// One call as a chunk holds it: the fields it does not share with its
/// series, borrowed from the call when written and from the unpacked body
/// when read.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow<'a> {
    pub seq: i64,
    pub time_ms: i64,
    pub series: i64,
    pub id: Option<&'a str>,
    pub session: Option<&'a str>,
    pub started_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    pub response_model: Option<&'a str>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub completed: bool,
    pub estimated: bool,
    pub streaming: Option<bool>,
    pub request_bytes: Option<u64>,
    pub output_chunks: Option<u64>,
    pub ttft_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub error_type: Option<&'a str>,
    pub cost_usd: f64,
    pub price_id: Option<&'a str>,
    pub reported_cost_usd: Option<f64>,
    pub source: Source,
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    /// The call's own dimensions (`rows::encode_own_dimensions`), when its
    /// series holds `OVERFLOW` in their place.
    pub own: Option<&'a [u8]>,
}

impl<'a> CallRow<'a> {
    /// `call` stored as `seq` of `series`.
    pub fn of(call: &'a LlmCall, seq: i64, series: i64, own: Option<&'a [u8]>) -> Self {
        CallRow {
            seq,
            time_ms: call.time_ms,
            series,
            id: call.id.as_deref(),
            session: call.session.as_deref(),
            started_at_ms: call.started_at_ms,
            completed_at_ms: call.completed_at_ms,
            response_model: call.response_model.as_deref(),
            requests: call.requests,
            input_tokens: call.input_tokens,
            output_tokens: call.output_tokens,
            total_tokens: call.total_tokens,
            cache_read_tokens: call.cache_read_tokens,
            cache_write_tokens: call.cache_write_tokens,
            reasoning_tokens: call.reasoning_tokens,
            completed: call.completed,
            estimated: call.estimated,
            streaming: call.streaming,
            request_bytes: call.request_bytes,
            output_chunks: call.output_chunks,
            ttft_ms: call.ttft_ms,
            duration_ms: call.duration_ms,
            error_type: call.error_type.as_deref(),
            cost_usd: call.cost_usd,
            price_id: call.price_id.as_deref(),
            reported_cost_usd: call.reported_cost_usd,
            source: call.source,
            trace_id: call.trace_id.as_deref(),
            span_id: call.span_id.as_deref(),
            own,
        }
    }

    /// The duration its start and completion imply, which most calls
    /// report as their duration.
    fn implied_duration(&self) -> Option<f64> {
        let (started, completed) = self.started_at_ms.zip(self.completed_at_ms)?;
        completed.checked_sub(started).map(|ms| ms as f64)
    }
}

/// Bits of a call's flags byte.
const COMPLETED: u8 = 1;
const ESTIMATED: u8 = 2;
const STREAMING_KNOWN: u8 = 4;
const STREAMING: u8 = 8;
const STARTED_AT: u8 = 16;
const COMPLETED_AT: u8 = 32;
const REQUEST_BYTES: u8 = 64;
const OUTPUT_CHUNKS: u8 = 128;

/// Tags of an optional number.
const ABSENT: u8 = 0;
/// A whole number, in `whole` as a zigzag varint.
const WHOLE: u8 = 1;
/// Any other, its bits in `raw`.
const RAW: u8 = 2;
/// The call's implied duration (`CallRow::implied_duration`).
const IMPLIED: u8 = 3;

/// Optional texts: a length each (0 when absent, else length + 1) and the
/// bytes of those present, one after the other.
#[derive(Default)]
struct Texts {
    lengths: Vec<u8>,
    bytes: Vec<u8>,
}

impl Texts {
    fn put_str(&mut self, text: Option<&str>) {
        self.put(text.map(str::as_bytes));
    }

    fn put(&mut self, text: Option<&[u8]>) {
        match text {
            None => varint::put(&mut self.lengths, 0),
            Some(text) => {
                varint::put(&mut self.lengths, text.len() as u64 + 1);
                self.bytes.extend_from_slice(text);
            }
        }
    }
}

/// Optional numbers: a tag each, whole ones as varints, the rest as their
/// bits by byte planes (every value's first byte, then every second...),
/// where the sign and exponent bytes of like values repeat.
#[derive(Default)]
struct Numbers {
    tags: Vec<u8>,
    whole: Vec<u8>,
    raw: Vec<u64>,
}

impl Numbers {
    fn put(&mut self, value: Option<f64>, implied: Option<f64>) {
        let Some(value) = value else {
            self.tags.push(ABSENT);
            return;
        };
        let bits = value.to_bits();
        if implied.is_some_and(|implied| implied.to_bits() == bits) {
            self.tags.push(IMPLIED);
        } else if (value as i64 as f64).to_bits() == bits {
            self.tags.push(WHOLE);
            varint::put(&mut self.whole, varint::zigzag(value as i64));
        } else {
            self.tags.push(RAW);
            self.raw.push(bits);
        }
    }

    fn planes(&self) -> Vec<u8> {
        (0..8)
            .flat_map(|byte| self.raw.iter().map(move |bits| (bits >> (8 * byte)) as u8))
            .collect()
    }
}

/// The columns of a chunk being written.
#[derive(Default)]
struct Writer {
    count: u64,
    seq: Vec<u8>,
    time: Vec<u8>,
    series: Vec<u8>,
    flags: Vec<u8>,
    source: Vec<u8>,
    started: Vec<u8>,
    completed: Vec<u8>,
    requests: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    total: Vec<u8>,
    cache_read: Vec<u8>,
    cache_write: Vec<u8>,
    reasoning: Vec<u8>,
    request_bytes: Vec<u8>,
    output_chunks: Vec<u8>,
    ttft: Numbers,
    duration: Numbers,
    cost: Numbers,
    reported_cost: Numbers,
    id: Texts,
    session: Texts,
    response_model: Texts,
    error_type: Texts,
    price_id: Texts,
    trace_id: Texts,
    span_id: Texts,
    own: Texts,
}

fn source_code(source: Source) -> u8 {
    match source {
        Source::UsageReport => 0,
        Source::Span => 1,
    }
}

impl Writer {
    /// Adds `row`, `previous` being the (seq, time) of the one before (the
    /// chunk's first seq and least time for the first).
    fn put(&mut self, row: &CallRow<'_>, previous: (i64, i64)) {
        self.count += 1;
        varint::put(&mut self.seq, row.seq.wrapping_sub(previous.0) as u64);
        varint::put(&mut self.time, varint::zigzag(row.time_ms.wrapping_sub(previous.1)));
        varint::put(&mut self.series, row.series as u64);
        let mut flags = 0;
        for (set, bit) in [
            (row.completed, COMPLETED),
            (row.estimated, ESTIMATED),
            (row.streaming.is_some(), STREAMING_KNOWN),
            (row.streaming == Some(true), STREAMING),
            (row.started_at_ms.is_some(), STARTED_AT),
            (row.completed_at_ms.is_some(), COMPLETED_AT),
            (row.request_bytes.is_some(), REQUEST_BYTES),
            (row.output_chunks.is_some(), OUTPUT_CHUNKS),
        ] {
            if set {
                flags |= bit;
            }
        }
        self.flags.push(flags);
        self.source.push(source_code(row.source));
        for (at, column) in
            [(row.started_at_ms, &mut self.started), (row.completed_at_ms, &mut self.completed)]
        {
            if let Some(at) = at {
                varint::put(column, varint::zigzag(at.wrapping_sub(row.time_ms)));
            }
        }
        let parts = row.input_tokens.wrapping_add(row.output_tokens);
        for (value, column) in [
            (row.requests, &mut self.requests),
            (row.input_tokens, &mut self.input),
            (row.output_tokens, &mut self.output),
            (varint::zigzag(row.total_tokens.wrapping_sub(parts) as i64), &mut self.total),
            (row.cache_read_tokens, &mut self.cache_read),
            (row.cache_write_tokens, &mut self.cache_write),
            (row.reasoning_tokens, &mut self.reasoning),
        ] {
            varint::put(column, value);
        }
        for (value, column) in [
            (row.request_bytes, &mut self.request_bytes),
            (row.output_chunks, &mut self.output_chunks),
        ] {
            if let Some(value) = value {
                varint::put(column, value);
            }
        }
        self.ttft.put(row.ttft_ms, None);
        self.duration.put(row.duration_ms, row.implied_duration());
        self.cost.put(Some(row.cost_usd), None);
        self.reported_cost.put(row.reported_cost_usd, None);
        self.id.put_str(row.id);
        self.session.put_str(row.session);
        self.response_model.put_str(row.response_model);
        self.error_type.put_str(row.error_type);
        self.price_id.put_str(row.price_id);
        self.trace_id.put_str(row.trace_id);
        self.span_id.put_str(row.span_id);
        self.own.put(row.own);
    }

    /// The call count, then each column as its length and bytes, in the
    /// order `Columns::read` takes them.
    fn finish(&self, out: &mut Vec<u8>) {
        varint::put(out, self.count);
        let planes: Vec<Vec<u8>> = [&self.ttft, &self.duration, &self.cost, &self.reported_cost]
            .map(Numbers::planes)
            .into();
        let mut columns: Vec<&[u8]> = vec![
            &self.seq,
            &self.time,
            &self.series,
            &self.flags,
            &self.source,
            &self.started,
            &self.completed,
            &self.requests,
            &self.input,
            &self.output,
            &self.total,
            &self.cache_read,
            &self.cache_write,
            &self.reasoning,
            &self.request_bytes,
            &self.output_chunks,
        ];
        for (numbers, planes) in
            [&self.ttft, &self.duration, &self.cost, &self.reported_cost].into_iter().zip(&planes)
        {
            columns.extend([numbers.tags.as_slice(), numbers.whole.as_slice(), planes.as_slice()]);
        }
        for texts in [
            &self.id,
            &self.session,
            &self.response_model,
            &self.error_type,
            &self.price_id,
            &self.trace_id,
            &self.span_id,
            &self.own,
        ] {
            columns.extend([texts.lengths.as_slice(), texts.bytes.as_slice()]);
        }
        for column in columns {
            varint::put(out, column.len() as u64);
            out.extend_from_slice(column);
        }
    }
}

thread_local! {
    /// zstd's contexts, kept per thread: making one costs more than packing
    /// a small chunk.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Writes `rows` (in seq order) as a chunk body into `out`; `first_seq` and
/// `min_time` are the chunk's, kept in its row.
pub fn pack(rows: &[CallRow<'_>], first_seq: i64, min_time: i64, out: &mut Vec<u8>) {
    let mut writer = Writer::default();
    let mut previous = (first_seq, min_time);
    for row in rows {
        writer.put(row, previous);
        previous = (row.seq, row.time_ms);
    }
    let mut unpacked = Vec::with_capacity(rows.len() * 64);
    writer.finish(&mut unpacked);
    out.clear();
    out.push(FORMAT);
    varint::put(out, unpacked.len() as u64);
    let packed = COMPRESSOR.with_borrow_mut(|compressor| {
        let compressor = match compressor {
            Some(compressor) => compressor,
            None => compressor
                .insert(zstd::bulk::Compressor::new(LEVEL).expect("zstd takes its own levels")),
        };
        compressor.compress(&unpacked).expect("compressing into a Vec cannot fail")
    });
    out.extend_from_slice(&packed);
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("call chunk: {what}"))
}

/// A chunk body unpacked, for its rows to borrow from.
pub struct Unpacked {
    bytes: Vec<u8>,
}

/// Unpacks a body `pack` wrote.
pub fn unpack(body: &[u8]) -> Result<Unpacked, StorageError> {
    let Some((&FORMAT, mut rest)) = body.split_first() else {
        return Err(corrupt("not a body of format 2"));
    };
    let size = varint::take(&mut rest).filter(|&size| size <= MAX_UNPACKED);
    let size = size.ok_or_else(|| corrupt("bad unpacked size"))? as usize;
    let bytes = DECOMPRESSOR.with_borrow_mut(|decompressor| {
        let decompressor = match decompressor {
            Some(decompressor) => decompressor,
            None => decompressor
                .insert(zstd::bulk::Decompressor::new().map_err(|e| corrupt(&e.to_string()))?),
        };
        decompressor.decompress(rest, size).map_err(|e| corrupt(&e.to_string()))
    })?;
    if bytes.len() != size {
        return Err(corrupt("unpacked size differs from the one written"));
    }
    Ok(Unpacked { bytes })
}

/// Reads numbers and bytes from the front of one column.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64, StorageError> {
        varint::take(&mut self.0).ok_or_else(|| corrupt("bad number"))
    }

    fn byte(&mut self) -> Result<u8, StorageError> {
        let (&byte, rest) = self.0.split_first().ok_or_else(|| corrupt("column ends early"))?;
        self.0 = rest;
        Ok(byte)
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], StorageError> {
        if len > self.0.len() {
            return Err(corrupt("column ends early"));
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(bytes)
    }
}

struct TextsReader<'a> {
    lengths: Cursor<'a>,
    bytes: Cursor<'a>,
}

impl<'a> TextsReader<'a> {
    fn next(&mut self) -> Result<Option<&'a [u8]>, StorageError> {
        match self.lengths.varint()? {
            0 => Ok(None),
            len => self.bytes.bytes(usize::try_from(len - 1).unwrap_or(usize::MAX)).map(Some),
        }
    }

    fn next_str(&mut self) -> Result<Option<&'a str>, StorageError> {
        self.next()?
            .map(|bytes| std::str::from_utf8(bytes).map_err(|_| corrupt("text not UTF-8")))
            .transpose()
    }
}

struct NumbersReader<'a> {
    tags: Cursor<'a>,
    whole: Cursor<'a>,
    planes: &'a [u8],
    raw_read: usize,
}

impl NumbersReader<'_> {
    fn next(&mut self, implied: Option<f64>) -> Result<Option<f64>, StorageError> {
        match self.tags.byte()? {
            ABSENT => Ok(None),
            WHOLE => Ok(Some(varint::unzigzag(self.whole.varint()?) as f64)),
            IMPLIED => implied.map(Some).ok_or_else(|| corrupt("implied number without times")),
            RAW => {
                let stride = self.planes.len() / 8;
                if self.raw_read >= stride {
                    return Err(corrupt("number column ends early"));
                }
                let mut bits = 0u64;
                for byte in 0..8 {
                    bits |= u64::from(self.planes[byte * stride + self.raw_read]) << (8 * byte);
                }
                self.raw_read += 1;
                Ok(Some(f64::from_bits(bits)))
            }
            _ => Err(corrupt("unknown number tag")),
        }
    }
}

/// An unpacked body's columns, in the order `Writer::finish` wrote them.
struct Columns<'a> {
    count: usize,
    seq: Cursor<'a>,
    time: Cursor<'a>,
    series: Cursor<'a>,
    flags: Cursor<'a>,
    source: Cursor<'a>,
    started: Cursor<'a>,
    completed: Cursor<'a>,
    requests: Cursor<'a>,
    input: Cursor<'a>,
    output: Cursor<'a>,
    total: Cursor<'a>,
    cache_read: Cursor<'a>,
    cache_write: Cursor<'a>,
    reasoning: Cursor<'a>,
    request_bytes: Cursor<'a>,
    output_chunks: Cursor<'a>,
    ttft: NumbersReader<'a>,
    duration: NumbersReader<'a>,
    cost: NumbersReader<'a>,
    reported_cost: NumbersReader<'a>,
    id: TextsReader<'a>,
    session: TextsReader<'a>,
    response_model: TextsReader<'a>,
    error_type: TextsReader<'a>,
    price_id: TextsReader<'a>,
    trace_id: TextsReader<'a>,
    span_id: TextsReader<'a>,
    own: TextsReader<'a>,
}

fn column<'a>(input: &mut Cursor<'a>) -> Result<Cursor<'a>, StorageError> {
    let len = input.varint()?;
    input.bytes(usize::try_from(len).unwrap_or(usize::MAX)).map(Cursor)
}

fn numbers<'a>(input: &mut Cursor<'a>) -> Result<NumbersReader<'a>, StorageError> {
    let (tags, whole, planes) = (column(input)?, column(input)?, column(input)?);
    if planes.0.len() % 8 != 0 {
        return Err(corrupt("number planes not whole"));
    }
    Ok(NumbersReader { tags, whole, planes: planes.0, raw_read: 0 })
}

fn texts<'a>(input: &mut Cursor<'a>) -> Result<TextsReader<'a>, StorageError> {
    Ok(TextsReader { lengths: column(input)?, bytes: column(input)? })
}

impl<'a> Columns<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, StorageError> {
        let input = &mut Cursor(bytes);
        Ok(Columns {
            count: usize::try_from(input.varint()?).unwrap_or(usize::MAX),
            seq: column(input)?,
            time: column(input)?,
            series: column(input)?,
            flags: column(input)?,
            source: column(input)?,
            started: column(input)?,
            completed: column(input)?,
            requests: column(input)?,
            input: column(input)?,
            output: column(input)?,
            total: column(input)?,
            cache_read: column(input)?,
            cache_write: column(input)?,
            reasoning: column(input)?,
            request_bytes: column(input)?,
            output_chunks: column(input)?,
            ttft: numbers(input)?,
            duration: numbers(input)?,
            cost: numbers(input)?,
            reported_cost: numbers(input)?,
            id: texts(input)?,
            session: texts(input)?,
            response_model: texts(input)?,
            error_type: texts(input)?,
            price_id: texts(input)?,
            trace_id: texts(input)?,
            span_id: texts(input)?,
            own: texts(input)?,
        })
    }

    /// The next call, `previous` being the (seq, time) of the one before.
    fn next(&mut self, previous: (i64, i64)) -> Result<CallRow<'a>, StorageError> {
        let seq = previous.0.wrapping_add(self.seq.varint()? as i64);
        let time_ms = previous.1.wrapping_add(varint::unzigzag(self.time.varint()?));
        let series = self.series.varint()? as i64;
        let flags = self.flags.byte()?;
        let source = match self.source.byte()? {
            0 => Source::UsageReport,
            1 => Source::Span,
            _ => return Err(corrupt("unknown source")),
        };
        let at = |set: bool, column: &mut Cursor<'_>| -> Result<Option<i64>, StorageError> {
            let offset = if set { Some(varint::unzigzag(column.varint()?)) } else { None };
            Ok(offset.map(|offset| time_ms.wrapping_add(offset)))
        };
        let started_at_ms = at(flags & STARTED_AT != 0, &mut self.started)?;
        let completed_at_ms = at(flags & COMPLETED_AT != 0, &mut self.completed)?;
        let input_tokens = self.input.varint()?;
        let output_tokens = self.output.varint()?;
        let unexplained = varint::unzigzag(self.total.varint()?) as u64;
        let optional = |set: bool, column: &mut Cursor<'_>| -> Result<Option<u64>, StorageError> {
            if set { column.varint().map(Some) } else { Ok(None) }
        };
        let mut row = CallRow {
            seq,
            time_ms,
            series,
            id: None,
            session: None,
            started_at_ms,
            completed_at_ms,
            response_model: None,
            requests: self.requests.varint()?,
            input_tokens,
            output_tokens,
            total_tokens: input_tokens.wrapping_add(output_tokens).wrapping_add(unexplained),
            cache_read_tokens: self.cache_read.varint()?,
            cache_write_tokens: self.cache_write.varint()?,
            reasoning_tokens: self.reasoning.varint()?,
            completed: flags & COMPLETED != 0,
            estimated: flags & ESTIMATED != 0,
            streaming: (flags & STREAMING_KNOWN != 0).then_some(flags & STREAMING != 0),
            request_bytes: optional(flags & REQUEST_BYTES != 0, &mut self.request_bytes)?,
            output_chunks: optional(flags & OUTPUT_CHUNKS != 0, &mut self.output_chunks)?,
            ttft_ms: self.ttft.next(None)?,
            duration_ms: None,
            error_type: None,
            cost_usd: 0.0,
            price_id: None,
            reported_cost_usd: self.reported_cost.next(None)?,
            source,
            trace_id: None,
            span_id: None,
            own: None,
        };
        row.duration_ms = self.duration.next(row.implied_duration())?;
        row.cost_usd = self.cost.next(None)?.ok_or_else(|| corrupt("call without cost"))?;
        row.id = self.id.next_str()?;
        row.session = self.session.next_str()?;
        row.response_model = self.response_model.next_str()?;
        row.error_type = self.error_type.next_str()?;
        row.price_id = self.price_id.next_str()?;
        row.trace_id = self.trace_id.next_str()?;
        row.span_id = self.span_id.next_str()?;
        row.own = self.own.next()?;
        Ok(row)
    }
}

/// A call's keys as a chunk holds them: seq, id, (trace id, span id).
pub type RowKeys<'a> = (i64, Option<&'a str>, Option<(&'a str, &'a str)>);

impl Unpacked {
    /// The chunk's calls; `first_seq` and `min_time` are its row's.
    pub fn rows(&self, first_seq: i64, min_time: i64) -> Result<Vec<CallRow<'_>>, StorageError> {
        let mut columns = Columns::read(&self.bytes)?;
        let mut rows = Vec::with_capacity(columns.count.min(self.bytes.len()));
        let mut previous = (first_seq, min_time);
        for _ in 0..columns.count {
            let row = columns.next(previous)?;
            previous = (row.seq, row.time_ms);
            rows.push(row);
        }
        Ok(rows)
    }

    /// The keys of the chunk's calls, read from their columns alone.
    pub fn keys(&self, first_seq: i64) -> Result<Vec<RowKeys<'_>>, StorageError> {
        let mut columns = Columns::read(&self.bytes)?;
        let mut keys = Vec::with_capacity(columns.count.min(self.bytes.len()));
        let mut seq = first_seq;
        for _ in 0..columns.count {
            seq = seq.wrapping_add(columns.seq.varint()? as i64);
            let id = columns.id.next_str()?;
            let span = columns.trace_id.next_str()?.zip(columns.span_id.next_str()?);
            keys.push((seq, id, span));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn example(seq: i64, time_ms: i64) -> CallRow<'static> {
        CallRow {
            seq,
            time_ms,
            series: 7,
            id: Some("chatcmpl-9x2"),
            session: None,
            started_at_ms: Some(time_ms - 1_200),
            completed_at_ms: Some(time_ms),
            response_model: None,
            requests: 1,
            input_tokens: 1_000,
            output_tokens: 200,
            total_tokens: 1_200,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            completed: true,
            estimated: false,
            streaming: Some(true),
            request_bytes: None,
            output_chunks: None,
            ttft_ms: Some(150.0),
            duration_ms: Some(1_200.0),
            error_type: None,
            cost_usd: 0.004_5,
            price_id: Some("catalog:gpt-4o"),
            reported_cost_usd: None,
            source: Source::UsageReport,
            trace_id: None,
            span_id: None,
            own: None,
        }
    }

    fn round_trip(rows: &[CallRow<'_>], first_seq: i64, min_time: i64) {
        let mut body = Vec::new();
        pack(rows, first_seq, min_time, &mut body);
        let unpacked = unpack(&body).unwrap();
        assert_eq!(unpacked.rows(first_seq, min_time).unwrap(), rows);
        let keys = unpacked.keys(first_seq).unwrap();
        let expected: Vec<RowKeys<'_>> =
            rows.iter().map(|r| (r.seq, r.id, r.trace_id.zip(r.span_id))).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn every_field_comes_back_set_and_unset_at_its_extremes() {
        let plain = example(10, 5_000);
        let full = CallRow {
            seq: 12,
            time_ms: 4_000,
            series: i64::MAX,
            id: Some(""),
            session: Some("chat-1"),
            started_at_ms: Some(i64::MIN),
            completed_at_ms: Some(i64::MAX),
            response_model: Some("gpt-4o-2024-08-06"),
            requests: u64::MAX,
            input_tokens: u64::MAX,
            output_tokens: 3,
            total_tokens: 1,
            cache_read_tokens: 5,
            cache_write_tokens: 6,
            reasoning_tokens: 7,
            completed: false,
            estimated: true,
            streaming: Some(false),
            request_bytes: Some(u64::MAX),
            output_chunks: Some(0),
            ttft_ms: Some(-0.0),
            // Not the duration its times imply (they overflow it).
            duration_ms: Some(12.5),
            error_type: Some("timeout"),
            cost_usd: 1e300,
            price_id: None,
            reported_cost_usd: Some(f64::MAX),
            source: Source::Span,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            span_id: Some("00f067aa0ba902b7"),
            own: Some(&[0, 1, 2, 255]),
        };
        let bare = CallRow {
            seq: 40,
            time_ms: i64::MIN,
            id: None,
            started_at_ms: None,
            completed_at_ms: None,
            streaming: None,
            ttft_ms: None,
            duration_ms: None,
            cost_usd: 0.0,
            price_id: None,
            ..example(40, 0)
        };
        // A duration its times do not imply, and one they do, whole.
        let other = CallRow { duration_ms: Some(1_199.0), ..example(41, 9_000) };
        round_trip(&[plain, full, bare, other], 10, 4_000);
        round_trip(&[], 1, 0);
    }

    #[test]
    fn a_chunk_of_gateway_calls_packs_small() {
        let ids: Vec<String> = (0..4_096u64)
            .map(|i| {
                format!(
                    "{:016x}{:016x}",
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    (!i).wrapping_mul(31)
                )
            })
            .collect();
        let rows: Vec<CallRow<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let i = i as i64;
                let input = 50 + (i * 7_919) % 4_000;
                CallRow {
                    id: Some(id),
                    series: 1 + (i * 31) % 1_200,
                    input_tokens: input as u64,
                    total_tokens: input as u64 + 200,
                    cost_usd: input as f64 * 2.5e-6 + 200.0 * 1e-5,
                    ttft_ms: Some(((i * 13) % 900) as f64),
                    ..example(i + 1, 1_000 + i / 5)
                }
            })
            .collect();
        let mut body = Vec::new();
        pack(&rows, 1, 1_000, &mut body);
        // The id alone is 32 characters, 16 bytes of entropy.
        assert!(body.len() < rows.len() * 40, "{} bytes a call", body.len() / rows.len());
        round_trip(&rows, 1, 1_000);
    }

    #[test]
    fn a_damaged_body_is_an_error_not_a_panic() {
        let mut body = Vec::new();
        pack(&[example(1, 5), example(2, 6)], 1, 5, &mut body);
        assert!(unpack(&body[..body.len() - 1]).is_err());
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[1, 2, 3]).is_err());
        let mut wrong = body.clone();
        wrong[0] = 3;
        assert!(unpack(&wrong).is_err());
    }

    proptest! {
        #[test]
        fn any_unpacked_bytes_read_as_rows_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let unpacked = Unpacked { bytes };
            let _ = unpacked.rows(1, 0);
            let _ = unpacked.keys(1);
        }
    }
}
