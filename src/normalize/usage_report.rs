//! Usage reports (`POST /api/v1/usage`) into `LlmCall`s: field aliases of
//! GPUStack-style reports, validation, and the accounting rules of DESIGN.md (inclusive
//! cached tokens, stream estimation, embedding totals, time anchoring, cost).

use std::borrow::Cow;

use serde::Deserialize;

use super::fingerprint::KeyFingerprinter;
use super::limits::{MAX_COST_USD, MAX_DURATION_MS, check_time_ms, clip, clip_quoted, shown};
use super::values::{Amount, Count, Instant, TagMap, TextRef};
use crate::model::{LlmCall, Operation, Source, Status};
use crate::pricing::{PriceTable, TokenCounts, cost};

/// Longest accepted identifier-like string (model, user, tag values, …).
const MAX_TEXT_LEN: usize = 512;
/// Most tags one report may carry; rollups are keyed by the tag set.
pub const MAX_TAGS: usize = 32;
/// Longest tag name.
pub const MAX_TAG_NAME: usize = 64;

/// One report as sent. Every field is optional here so that one bad field
/// yields an error naming it rather than a generic parse failure.
/// Text fields borrow from the request body where they need no unescaping.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawReport<'a> {
    #[serde(borrow)]
    pub id: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub project: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub model: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub model_id: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub response_model: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub provider: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub provider_name: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub provider_type: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub provider_id: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub operation: Option<TextRef<'a>>,
    #[serde(borrow, alias = "user_id")]
    pub user: Option<TextRef<'a>>,
    #[serde(borrow, alias = "access_key")]
    pub api_key: Option<TextRef<'a>>,
    #[serde(borrow, alias = "session_id")]
    pub session: Option<TextRef<'a>>,
    #[serde(borrow, alias = "model_route_id")]
    pub route: Option<TextRef<'a>>,
    #[serde(borrow, alias = "cluster_id")]
    pub cluster: Option<TextRef<'a>>,
    pub tags: Option<TagMap>,
    #[serde(alias = "request_count")]
    pub requests: Option<Count>,
    #[serde(alias = "input_token")]
    pub input_tokens: Option<Count>,
    #[serde(alias = "output_token")]
    pub output_tokens: Option<Count>,
    #[serde(alias = "total_token")]
    pub total_tokens: Option<Count>,
    #[serde(alias = "input_cached_token")]
    pub cache_read_tokens: Option<Count>,
    pub cache_write_tokens: Option<Count>,
    pub reasoning_tokens: Option<Count>,
    pub completed: Option<bool>,
    #[serde(alias = "output_chunk_count")]
    pub output_chunks: Option<Count>,
    #[serde(alias = "request_content_bytes")]
    pub request_bytes: Option<Count>,
    pub started_at: Option<Instant>,
    pub completed_at: Option<Instant>,
    pub duration_ms: Option<Amount>,
    pub ttft_ms: Option<Amount>,
    pub streaming: Option<bool>,
    #[serde(borrow)]
    pub status: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub error_type: Option<TextRef<'a>>,
    pub cost_usd: Option<Amount>,
    #[serde(borrow)]
    pub trace_id: Option<TextRef<'a>>,
    #[serde(borrow)]
    pub span_id: Option<TextRef<'a>>,
}

/// Why one report was rejected; `Display` gives "field: what is wrong".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ReportError {
    pub field: String,
    pub message: String,
}

impl ReportError {
    /// `field` may come from the client (a tag's name): it is clipped.
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: clip(field).into_owned(), message: message.into() }
    }
}

/// The tunable parts of the accounting rules.
#[derive(Debug, Clone, Copy)]
pub struct AccountingRules {
    /// Request bytes per estimated input token for streams cut off early.
    pub bytes_per_input_token: u64,
    /// Estimated output tokens per streamed chunk.
    pub tokens_per_output_chunk: u64,
}

impl Default for AccountingRules {
    fn default() -> Self {
        Self { bytes_per_input_token: 4, tokens_per_output_chunk: 1 }
    }
}

/// Parses one report's JSON text. On failure the error names the field (the
/// fast path parses directly; only a failing report is parsed again with path
/// tracking to find where it went wrong).
pub fn parse_report(json: &str) -> Result<RawReport<'_>, ReportError> {
    // The derived deserializer would also read an array as the fields in
    // order; a record is an object.
    if !json.trim_start().starts_with('{') {
        return Err(ReportError::new("record", "must be a JSON object"));
    }
    if let Ok(report) = serde_json::from_str::<RawReport>(json) {
        return Ok(report);
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, RawReport>(&mut deserializer) {
        Ok(report) => Ok(report),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if inner.to_string().starts_with("number out of range") {
                let field = oversized_number_field(json);
                return Err(ReportError::new(
                    field.as_deref().unwrap_or("record"),
                    "is too large (a number beyond the range of a 64-bit float)",
                ));
            }
            if inner.is_syntax() || inner.is_eof() {
                let message = clip_quoted(&inner.to_string()).into_owned();
                return Err(ReportError::new("record", format!("invalid JSON: {message}")));
            }
            if path == "." {
                let message = inner.to_string();
                if let Some(rest) = message.strip_prefix("duplicate field `")
                    && let Some((field, _)) = rest.split_once('`')
                {
                    return Err(ReportError::new(
                        field,
                        "given more than once (directly or through a GPUStack-style alias)",
                    ));
                }
                if inner.is_data() {
                    return Err(ReportError::new("record", "must be a JSON object"));
                }
                let message = clip_quoted(&inner.to_string()).into_owned();
                return Err(ReportError::new("record", format!("invalid JSON: {message}")));
            }
            Err(ReportError::new(&path, clip_quoted(&strip_position(&inner.to_string()))))
        }
    }
}

/// The top-level field of a record whose value is a number no `f64` holds
/// (`1e1000`): serde_json refuses it before any field is known, so the
/// record is read again with its values left as text.
fn oversized_number_field(json: &str) -> Option<String> {
    use serde_json::value::RawValue;
    let fields: std::collections::HashMap<String, &RawValue> = serde_json::from_str(json).ok()?;
    fields.into_iter().find_map(|(key, value)| {
        let parsed = serde_json::from_str::<serde_json::Value>(value.get());
        parsed.is_err_and(|e| e.to_string().starts_with("number out of range")).then_some(key)
    })
}

/// serde_json appends " at line 1 column 42"; the field name already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Everything `normalize_report` needs besides the report itself.
pub struct NormalizeContext<'a> {
    pub now_ms: i64,
    pub rules: AccountingRules,
    pub prices: &'a PriceTable,
    pub fingerprinter: &'a KeyFingerprinter,
    /// The project of reports that name none.
    pub default_project: &'a str,
}

/// `text.trim()`, without walking the characters when the ends are plain
/// ASCII (as nearly every value is).
fn trim(text: &str) -> &str {
    let plain = |b: u8| b > b' ' && b.is_ascii();
    match text.as_bytes() {
        [first, .., last] if plain(*first) && plain(*last) => text,
        [only] if plain(*only) => text,
        _ => text.trim(),
    }
}

/// A text field trimmed, borrowed; `None` when absent or blank.
fn text_ref<'r>(
    field: &str,
    value: &'r Option<TextRef<'_>>,
) -> Result<Option<&'r str>, ReportError> {
    let Some(TextRef(value)) = value else {
        return Ok(None);
    };
    let trimmed = trim(value);
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.len() > MAX_TEXT_LEN {
        return Err(ReportError::new(field, format!("longer than {MAX_TEXT_LEN} bytes")));
    }
    Ok(Some(trimmed))
}

/// A text field trimmed, owned; `None` when absent or blank.
fn text(field: &str, value: Option<TextRef<'_>>) -> Result<Option<String>, ReportError> {
    let trimmed_len = text_ref(field, &value)?.map(str::len);
    match (trimmed_len, value) {
        (Some(len), Some(TextRef(Cow::Owned(value)))) if len == value.len() => Ok(Some(value)),
        (Some(_), Some(value)) => Ok(Some(trim(&value.0).to_owned())),
        _ => Ok(None),
    }
}

fn count(value: Option<Count>) -> Option<u64> {
    value.map(|Count(n)| n)
}

/// `value` when at most `max` (already known to be finite and not negative).
fn bounded(field: &str, value: f64, max: f64) -> Result<f64, ReportError> {
    if value > max {
        return Err(ReportError::new(
            field,
            format!("is too large: {} (at most {})", shown(value), shown(max)),
        ));
    }
    Ok(value)
}

/// Parses one report's JSON and normalizes it.
pub fn normalize_json(json: &str, ctx: &NormalizeContext<'_>) -> Result<LlmCall, ReportError> {
    normalize_report(parse_report(json)?, ctx)
}

/// Applies validation and the accounting rules to one parsed report.
pub fn normalize_report(
    raw: RawReport<'_>,
    ctx: &NormalizeContext<'_>,
) -> Result<LlmCall, ReportError> {
    let model =
        text("model", raw.model)?.ok_or_else(|| ReportError::new("model", "is required"))?;
    let model_id = text("model_id", raw.model_id)?;
    let provider = match text("provider", raw.provider)? {
        Some(p) => Some(p),
        None => match text("provider_name", raw.provider_name)? {
            Some(p) => Some(p),
            None => match text("provider_type", raw.provider_type)? {
                Some(p) => Some(p),
                None => text("provider_id", raw.provider_id)?,
            },
        },
    };
    let operation = match text_ref("operation", &raw.operation)? {
        None => Operation::Chat,
        Some(op) => Operation::parse(op).ok_or_else(|| {
            ReportError::new(
                "operation",
                format!(
                    "unknown operation {:?} (expected chat, completion, embedding, rerank, image, audio or other)",
                    clip(op)
                ),
            )
        })?,
    };
    let status = match text_ref("status", &raw.status)? {
        None => Status::Ok,
        Some(s) => Status::parse(s).ok_or_else(|| {
            ReportError::new(
                "status",
                format!("unknown status {:?} (expected ok, error or cancelled)", clip(s)),
            )
        })?,
    };

    let mut tags = raw.tags.map(|t| t.0).unwrap_or_default();
    if let Some(model_id) = model_id {
        tags.entry("model_id".to_owned()).or_insert(model_id);
    }
    if tags.len() > MAX_TAGS {
        return Err(ReportError::new("tags", format!("more than {MAX_TAGS} tags")));
    }
    for (key, value) in &tags {
        if key.is_empty() || key.len() > MAX_TAG_NAME {
            return Err(ReportError::new(
                "tags",
                format!("tag name {:?} must be 1 to {MAX_TAG_NAME} bytes", clip(key)),
            ));
        }
        if value.len() > MAX_TEXT_LEN {
            return Err(ReportError::new(
                &format!("tags.{key}"),
                format!("longer than {MAX_TEXT_LEN} bytes"),
            ));
        }
    }

    let started_at_ms = raw.started_at.and_then(|i| i.0);
    let completed_at_ms = raw.completed_at.and_then(|i| i.0);
    for (field, value) in [("started_at", started_at_ms), ("completed_at", completed_at_ms)] {
        if let Some(ms) = value {
            check_time_ms(ms, ctx.now_ms)
                .map_err(|bound| ReportError::new(field, bound.to_string()))?;
        }
    }
    let duration_ms = match (raw.duration_ms, started_at_ms, completed_at_ms) {
        (Some(Amount(ms)), _, _) => Some(bounded("duration_ms", ms, MAX_DURATION_MS)?),
        (None, Some(start), Some(end)) if end >= start => {
            let ms = (end - start) as f64;
            if ms > MAX_DURATION_MS {
                return Err(ReportError::new(
                    "completed_at",
                    format!("is more than {} ms after started_at", shown(MAX_DURATION_MS)),
                ));
            }
            Some(ms)
        }
        _ => None,
    };
    let ttft_ms = match raw.ttft_ms {
        Some(Amount(ms)) => Some(bounded("ttft_ms", ms, MAX_DURATION_MS)?),
        None => None,
    };
    let reported_cost_usd = match raw.cost_usd {
        Some(Amount(usd)) => Some(bounded("cost_usd", usd, MAX_COST_USD)?),
        None => None,
    };
    let time_ms = completed_at_ms.or(started_at_ms).unwrap_or(ctx.now_ms);

    let completed = raw.completed.unwrap_or(true);
    let request_bytes = count(raw.request_bytes);
    let output_chunks = count(raw.output_chunks);
    let mut input = count(raw.input_tokens).unwrap_or(0);
    let mut output = count(raw.output_tokens).unwrap_or(0);
    let reported_total = count(raw.total_tokens);
    let cache_read = count(raw.cache_read_tokens).unwrap_or(0);
    let cache_write = count(raw.cache_write_tokens).unwrap_or(0);
    let reasoning = count(raw.reasoning_tokens).unwrap_or(0);

    // Streams cut off before their usage chunk: gateways send 0 or nothing
    // for what they did not see, so only empty slots are estimated.
    let mut estimated = false;
    if !completed {
        if input == 0
            && let Some(bytes) = request_bytes.filter(|b| *b > 0)
        {
            input = (bytes / ctx.rules.bytes_per_input_token.max(1)).max(1);
            estimated = true;
        }
        if output == 0
            && let Some(chunks) = output_chunks.filter(|c| *c > 0)
        {
            output = chunks.saturating_mul(ctx.rules.tokens_per_output_chunk);
            estimated = true;
        }
    }
    // Embedding and reranker calls often report only a total; an input count
    // the report did carry is kept.
    if operation.reports_only_total()
        && input == 0
        && let Some(total) = reported_total
        && total > input.saturating_add(output)
    {
        input = total - output;
    }
    let total = reported_total.unwrap_or(0).max(input.saturating_add(output));

    if cache_read.saturating_add(cache_write) > input {
        let field = if cache_write == 0 { "cache_read_tokens" } else { "cache_write_tokens" };
        return Err(ReportError::new(
            field,
            format!(
                "cached tokens ({cache_read} read + {cache_write} write) exceed input_tokens ({input}); input_tokens must include cached tokens"
            ),
        ));
    }
    if reasoning > output {
        return Err(ReportError::new(
            "reasoning_tokens",
            format!(
                "{reasoning} exceeds output_tokens ({output}); output_tokens must include reasoning tokens"
            ),
        ));
    }

    let requests = count(raw.requests).unwrap_or(1);
    if requests == 0 {
        return Err(ReportError::new("requests", "must be at least 1"));
    }

    let tokens = TokenCounts { input, output, cache_read, cache_write, reasoning };
    let (cost_usd, price_id, matched_provider) =
        match ctx.prices.lookup(&model, provider.as_deref(), time_ms) {
            Some(found) => (
                cost(found.price, &tokens),
                Some(found.price_id.to_owned()),
                found.provider.map(str::to_owned),
            ),
            None => (0.0, None, None),
        };

    Ok(LlmCall {
        id: text("id", raw.id)?,
        project: text("project", raw.project)?.unwrap_or_else(|| ctx.default_project.to_owned()),
        time_ms,
        started_at_ms,
        completed_at_ms,
        model,
        response_model: text("response_model", raw.response_model)?,
        provider: provider.or(matched_provider),
        operation,
        user: text("user", raw.user)?,
        api_key: text_ref("api_key", &raw.api_key)?.map(|key| ctx.fingerprinter.fingerprint(key)),
        session: text("session", raw.session)?,
        route: text("route", raw.route)?,
        cluster: text("cluster", raw.cluster)?,
        tags,
        requests,
        input_tokens: input,
        output_tokens: output,
        total_tokens: total,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: reasoning,
        completed,
        estimated,
        request_bytes,
        output_chunks,
        streaming: raw.streaming,
        ttft_ms,
        duration_ms,
        status,
        error_type: text("error_type", raw.error_type)?,
        cost_usd,
        price_id,
        reported_cost_usd,
        source: Source::UsageReport,
        trace_id: text("trace_id", raw.trace_id)?,
        span_id: text("span_id", raw.span_id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn normalize(json: &str) -> Result<LlmCall, ReportError> {
        let prices = PriceTable::builtin();
        let fingerprinter = KeyFingerprinter::new(b"test");
        let ctx = NormalizeContext {
            now_ms: NOW,
            rules: AccountingRules::default(),
            prices: &prices,
            fingerprinter: &fingerprinter,
            default_project: "default",
        };
        parse_report(json).and_then(|raw| normalize_report(raw, &ctx))
    }

    fn field_of(json: &str) -> String {
        normalize(json).unwrap_err().field
    }

    #[test]
    fn cached_tokens_are_part_of_input_and_priced_apart() {
        let call = normalize(
            r#"{"model":"gpt-4o","input_tokens":1000,"output_tokens":200,"cache_read_tokens":400}"#,
        )
        .unwrap();
        assert_eq!(
            (call.input_tokens, call.cache_read_tokens, call.total_tokens),
            (1000, 400, 1200)
        );
        let expected = 600.0 * 2.5e-6 + 400.0 * 1.25e-6 + 200.0 * 1e-5;
        assert!((call.cost_usd - expected).abs() < 1e-15);
        assert_eq!(call.price_id.as_deref(), Some("catalog:gpt-4o"));
        assert_eq!(call.provider.as_deref(), Some("openai"));
    }

    #[test]
    fn incomplete_streams_are_estimated_without_overwriting() {
        let call =
            normalize(r#"{"model":"m","completed":false,"request_bytes":801,"output_chunks":9}"#)
                .unwrap();
        assert_eq!((call.input_tokens, call.output_tokens, call.total_tokens), (200, 9, 209));
        assert!(call.estimated);
        let call = normalize(
            r#"{"model":"m","completed":false,"input_tokens":55,"request_bytes":801,"output_chunks":9}"#,
        )
        .unwrap();
        assert_eq!((call.input_tokens, call.output_tokens), (55, 9));
        let call = normalize(r#"{"model":"m","completed":false,"request_bytes":3}"#).unwrap();
        assert_eq!(call.input_tokens, 1, "at least one token");
        let call = normalize(r#"{"model":"m","request_bytes":801,"output_chunks":9}"#).unwrap();
        assert_eq!((call.input_tokens, call.output_tokens, call.estimated), (0, 0, false));
    }

    #[test]
    fn embedding_totals_become_input() {
        let call = normalize(
            r#"{"model":"text-embedding-3-small","operation":"embeddings","total_tokens":512}"#,
        )
        .unwrap();
        assert_eq!((call.input_tokens, call.output_tokens, call.total_tokens), (512, 0, 512));
        assert_eq!(call.operation, Operation::Embedding);
        let chat = normalize(r#"{"model":"m","total_tokens":512}"#).unwrap();
        assert_eq!((chat.input_tokens, chat.total_tokens), (0, 512));
    }

    #[test]
    fn time_anchors_on_completion_then_start_then_arrival() {
        // 1_700_000_001_000 is 2023-11-14T22:13:21Z.
        let call = normalize(
            r#"{"model":"m","started_at":1700000001000,"completed_at":"2023-11-14T22:13:25Z"}"#,
        )
        .unwrap();
        assert_eq!((call.time_ms, call.duration_ms), (1_700_000_005_000, Some(4000.0)));
        let call =
            normalize(r#"{"model":"m","started_at":1700000001000,"completed_at":0}"#).unwrap();
        assert_eq!(call.time_ms, 1_700_000_001_000);
        let call = normalize(r#"{"model":"m","started_at":0}"#).unwrap();
        assert_eq!(call.time_ms, NOW);
    }

    #[test]
    fn seed_003_aliases() {
        let call = normalize(
            r#"{"model":"m","model_id":7,"input_token":10,"output_token":4,"total_token":14,
                "input_cached_token":3,"request_count":5,"output_chunk_count":2,
                "request_content_bytes":99,"user_id":42,"model_route_id":3,"cluster_id":1,
                "provider_id":9,"provider_type":"vllm","access_key":"ak-1"}"#,
        )
        .unwrap();
        assert_eq!((call.input_tokens, call.output_tokens, call.cache_read_tokens), (10, 4, 3));
        assert_eq!((call.requests, call.output_chunks, call.request_bytes), (5, Some(2), Some(99)));
        assert_eq!(call.user.as_deref(), Some("42"));
        assert_eq!(call.route.as_deref(), Some("3"));
        assert_eq!(call.cluster.as_deref(), Some("1"));
        assert_eq!(call.provider.as_deref(), Some("vllm"));
        assert_eq!(call.tags.get("model_id").map(String::as_str), Some("7"));
        let key = call.api_key.unwrap();
        assert!(key.starts_with("k_") && !key.contains("ak-1"));
    }

    #[test]
    fn rejections_name_the_field() {
        assert_eq!(field_of(r#"{"input_tokens":1}"#), "model");
        assert_eq!(field_of(r#"{"model":"m","input_tokens":-1}"#), "input_tokens");
        assert_eq!(field_of(r#"{"model":"m","output_tokens":2.5}"#), "output_tokens");
        assert_eq!(
            field_of(r#"{"model":"m","input_tokens":1,"cache_read_tokens":2}"#),
            "cache_read_tokens"
        );
        assert_eq!(
            field_of(r#"{"model":"m","input_tokens":1,"cache_write_tokens":2}"#),
            "cache_write_tokens"
        );
        assert_eq!(
            field_of(r#"{"model":"m","output_tokens":1,"reasoning_tokens":2}"#),
            "reasoning_tokens"
        );
        assert_eq!(field_of(r#"{"model":"m","completed_at":"soon"}"#), "completed_at");
        assert_eq!(field_of(r#"{"model":"m","started_at":1900000000000}"#), "started_at");
        assert_eq!(field_of(r#"{"model":"m","operation":"dance"}"#), "operation");
        assert_eq!(field_of(r#"{"model":"m","status":"meh"}"#), "status");
        assert_eq!(field_of(r#"{"model":"m","input_tokens":1,"input_token":2}"#), "input_tokens");
        assert_eq!(field_of(r#"{"model":"m","tags":{"team":[1]}}"#), "tags.team");
        assert_eq!(field_of("42"), "record");
        assert_eq!(field_of("{"), "record");
    }

    #[test]
    fn numbers_and_instants_out_of_bounds_name_their_field() {
        let error = |json: &str| normalize(json).unwrap_err().to_string();
        assert_eq!(
            error(r#"{"model":"m","cost_usd":1e308}"#),
            "cost_usd: is too large: 1e308 (at most 1000000)"
        );
        assert_eq!(field_of(r#"{"model":"m","cost_usd":1000000.5}"#), "cost_usd");
        assert!(normalize(r#"{"model":"m","cost_usd":1000000}"#).is_ok());
        assert_eq!(field_of(r#"{"model":"m","duration_ms":1e300}"#), "duration_ms");
        assert_eq!(field_of(r#"{"model":"m","ttft_ms":2592000001}"#), "ttft_ms");
        assert_eq!(
            field_of(r#"{"model":"m","started_at":1700000000000,"completed_at":1800000000000}"#),
            "completed_at"
        );
        for instant in ["1", "-1", "\"0001-01-01T00:00:00Z\"", "-9223372036854775808"] {
            assert_eq!(
                error(&format!(r#"{{"model":"m","started_at":{instant}}}"#)),
                "started_at: is before 2000-01-01T00:00:00Z"
            );
        }
        let ahead = NOW + 86_400_000 + 60_000;
        assert_eq!(
            error(&format!(r#"{{"model":"m","completed_at":{ahead}}}"#)),
            "completed_at: is more than 1 day in the future"
        );
        assert_eq!(field_of(r#"{"model":"m","started_at":18446744073709551615}"#), "started_at");
        // Numbers no f64 holds, and 300 digits: too large, not echoed.
        let oversized = error(r#"{"model":"m","input_tokens":1e1000}"#);
        assert!(oversized.starts_with("input_tokens: is too large"), "{oversized}");
        let digits = "9".repeat(300);
        for field in ["input_tokens", "cost_usd", "duration_ms"] {
            let message = error(&format!(r#"{{"model":"m","{field}":{digits}}}"#));
            assert!(message.starts_with(&format!("{field}: is too large")), "{message}");
            assert!(message.len() < 120, "{message}");
        }
        let message = error(&format!(r#"{{"model":"m","input_tokens":"{digits}"}}"#));
        assert!(message.starts_with("input_tokens: is too large") && message.len() < 120);
        let long = "x".repeat(10_000);
        for json in [
            format!(r#"{{"model":"m","operation":"{long}"}}"#),
            format!(r#"{{"model":"m","started_at":"{long}"}}"#),
            format!(r#"{{"model":"m","tags":{{"{long}":"v"}}}}"#),
            format!(r#"{{"model":"m","tags":{{"k{long}":[1]}}}}"#),
            format!(r#"{{"model":"m","input_tokens":"{long}"}}"#),
        ] {
            let message = error(&json);
            assert!(message.len() < 300, "{message}");
        }
    }

    #[test]
    fn unknown_models_are_unpriced_not_dropped() {
        let call = normalize(r#"{"model":"in-house-7b","input_tokens":10}"#).unwrap();
        assert!(call.is_unpriced());
        assert_eq!(call.cost_usd, 0.0);
    }
}
