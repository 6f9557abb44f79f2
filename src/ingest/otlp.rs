//! OTLP traces and logs, whatever the transport: decoded export requests
//! become spans, the model calls they describe, and log records, which the
//! transports then commit together.

use std::sync::Arc;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::UsageIngest;
use crate::access::Principal;
use crate::durability::{CommitError, Records};
use crate::error::ApiError;
use crate::model::{Attributes, Source};
use crate::normalize::limits::Truncation;
use crate::normalize::otlp_metric::Staged;
use crate::normalize::otlp_wire::{Part, ResourceRef, SpanRef, WireError, read_spans};
use crate::normalize::usage_report::NormalizeContext;
use crate::normalize::{
    SpanContext, normalize_log, normalize_report, normalize_span, resource_attributes,
};

/// Most problems quoted in one partial-success message.
const MAX_QUOTED: usize = 10;

/// What went wrong with parts of an export: the count of rejected items and
/// a message naming the first few (empty when all went well).
#[derive(Debug, Default)]
pub struct Problems {
    pub rejected: i64,
    /// What the attribute caps cut from the accepted items.
    pub truncated: Truncation,
    quoted: Vec<String>,
    unquoted: usize,
}

impl Problems {
    fn note(&mut self, problem: String) {
        if self.quoted.len() < MAX_QUOTED {
            self.quoted.push(problem);
        } else {
            self.unquoted += 1;
        }
    }

    fn reject(&mut self, problem: String) {
        self.rejected += 1;
        self.note(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.rejected == 0 && self.quoted.is_empty()
    }

    /// The partial-success fields (rejected count, message), when there is
    /// anything to say.
    pub fn partial(&self) -> Option<(i64, String)> {
        (!self.is_empty()).then(|| (self.rejected, self.message()))
    }

    pub fn message(&self) -> String {
        let mut message = self.quoted.join("; ");
        if self.unquoted > 0 {
            message.push_str(&format!("; and {} more", self.unquoted));
        }
        message
    }
}

/// The project of records that name none: the key's, else the one the
/// request's credentials name (`project_hint`).
pub fn default_project(
    principal: Option<&Principal>,
    public_key: Option<&str>,
    authorization: Option<&str>,
) -> Option<String> {
    match principal {
        Some(principal) => Some(principal.project.clone()),
        None => project_hint(public_key, authorization),
    }
}

/// The project a request's credentials name: a Langfuse public key (its
/// `x-langfuse-public-key` header, or the user of Basic auth).
pub fn project_hint(public_key: Option<&str>, authorization: Option<&str>) -> Option<String> {
    if let Some(key) = public_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Some(key.to_owned());
    }
    let encoded = authorization?.trim().strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next()?.trim();
    (!user.is_empty()).then(|| user.to_owned())
}

/// Spans of a trace export, and the calls of those describing model calls
/// (accounted by `accounting`, as `UsageIngest::context` gives), gathered
/// as the export is read. Spans are numbered across the whole request in
/// rejection messages.
struct TraceRecords<'a> {
    accounting: &'a NormalizeContext<'a>,
    hint: Option<&'a str>,
    records: Records,
    problems: Problems,
    /// The resource of the spans read now.
    resource: Arc<Attributes>,
    index: usize,
}

impl<'a> TraceRecords<'a> {
    fn new(accounting: &'a NormalizeContext<'a>, hint: Option<&'a str>) -> Self {
        TraceRecords {
            accounting,
            hint,
            records: Records::default(),
            problems: Problems::default(),
            resource: Arc::default(),
            index: 0,
        }
    }

    fn resource(&mut self, resource: Option<&ResourceRef<'_>>) {
        self.resource = Arc::new(resource_attributes(resource, &mut self.problems.truncated));
    }

    fn span(&mut self, span: &SpanRef<'_>) {
        let context = SpanContext {
            resource: &self.resource,
            project_hint: self.hint,
            now_ms: self.accounting.now_ms,
        };
        let at = self.index;
        self.index += 1;
        let normalized = match normalize_span(span, &context) {
            Ok(normalized) => normalized,
            Err(err) => {
                self.problems.reject(format!("span {at} ({}): {}", err.field, err.message));
                return;
            }
        };
        self.problems.truncated.add(normalized.truncation);
        let mut record = normalized.span;
        if let Some(raw) = normalized.call {
            match normalize_report(raw, self.accounting) {
                Ok(mut call) => {
                    call.source = Source::Span;
                    record.llm_call = true;
                    record.input_tokens = call.input_tokens;
                    record.output_tokens = call.output_tokens;
                    record.cache_read_tokens = call.cache_read_tokens;
                    record.cost_usd = call.cost_usd;
                    self.records.calls.push(call);
                }
                // The span is kept; only its usage is not counted.
                Err(err) => self.problems.note(format!("span {at}: usage not counted: {err}")),
            }
        }
        self.records.spans.push(record);
    }
}

/// The records of a decoded trace export (OTLP/JSON).
pub fn trace_records(
    accounting: &NormalizeContext<'_>,
    request: &ExportTraceServiceRequest,
    hint: Option<&str>,
) -> (Records, Problems) {
    let mut gathered = TraceRecords::new(accounting, hint);
    gathered.records.spans.reserve(request.items());
    for resource_spans in &request.resource_spans {
        gathered.resource(resource_spans.resource.as_ref().map(ResourceRef::of).as_ref());
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            gathered.span(&SpanRef::of(span));
        }
    }
    (gathered.records, gathered.problems)
}

/// The records of a protobuf trace export, read in place.
pub fn trace_records_in_place(
    accounting: &NormalizeContext<'_>,
    request: &[u8],
    hint: Option<&str>,
) -> Result<(Records, Problems), WireError> {
    let mut gathered = TraceRecords::new(accounting, hint);
    read_spans(request, |part| match part {
        Part::Resource(resource) => gathered.resource(resource.as_ref()),
        Part::Span(span) => gathered.span(span),
    })?;
    Ok((gathered.records, gathered.problems))
}

/// Metric points of a metrics export, and what its cumulative samples
/// changed (`forget_cumulative` takes it back if the points are not
/// committed).
pub fn metric_records(
    ingest: &UsageIngest,
    request: &ExportMetricsServiceRequest,
    hint: Option<&str>,
) -> (Records, Problems, crate::normalize::otlp_metric::Staged) {
    let now = crate::time::now_ms();
    let oldest = ingest.metric_horizon_ms.map_or(i64::MIN, |keep| now - keep);
    let mut state = ingest.cumulative.lock().unwrap_or_else(|p| p.into_inner());
    let (points, rejected) =
        crate::normalize::otlp_metric::metric_points(request, hint, now, oldest, &mut state);
    let staged = state.take_staged();
    drop(state);
    let mut problems = Problems::default();
    for problem in rejected {
        problems.reject(problem);
    }
    let records = Records { points, ..Records::default() };
    (records, problems, staged)
}

/// Takes back the cumulative samples of a metrics export whose points were
/// not committed.
fn forget_cumulative(ingest: &UsageIngest, staged: Staged) {
    ingest.cumulative.lock().unwrap_or_else(|p| p.into_inner()).forget(staged);
}

/// What differs between the three OTLP signals.
pub trait Signal: Message + Default + DeserializeOwned + Send + 'static {
    /// The protobuf message name, for errors.
    const NAME: &'static str;
    /// The `endpoint` label of `tally_ingest_records_total`, over HTTP and
    /// over gRPC.
    const HTTP_ENDPOINT: &'static str;
    const GRPC_ENDPOINT: &'static str;
    /// The gRPC method.
    const GRPC_PATH: &'static str;
    type Response: Message + Serialize;
    /// Spans, log records or metrics in the request.
    fn items(&self) -> usize;
    /// The records to commit, what was wrong, and cumulative metric samples
    /// to keep once the records are committed. Parts of the request may be
    /// moved into the records.
    fn records(
        &mut self,
        ingest: &UsageIngest,
        hint: Option<&str>,
    ) -> (Records, Problems, Option<Staged>);
    /// The records of a protobuf-encoded request (as `records` gives
    /// them); the error says what is wrong with the bytes.
    fn protobuf_records(
        request: &[u8],
        ingest: &UsageIngest,
        hint: Option<&str>,
    ) -> Result<(Records, Problems, Option<Staged>), String> {
        let mut message = Self::decode(request).map_err(|e| e.to_string())?;
        Ok(message.records(ingest, hint))
    }
    fn response(partial: Option<(i64, String)>) -> Self::Response;
}

impl Signal for ExportTraceServiceRequest {
    const NAME: &'static str = "ExportTraceServiceRequest";
    const HTTP_ENDPOINT: &'static str = "otlp_http_traces";
    const GRPC_ENDPOINT: &'static str = "otlp_grpc_traces";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Response = ExportTraceServiceResponse;
    fn items(&self) -> usize {
        self.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
    }
    fn records(
        &mut self,
        ingest: &UsageIngest,
        hint: Option<&str>,
    ) -> (Records, Problems, Option<Staged>) {
        let (mut records, problems) = trace_records(&ingest.context(), self, hint);
        ingest.privacy.apply(&mut records.spans, &mut records.logs);
        (records, problems, None)
    }
    fn protobuf_records(
        request: &[u8],
        ingest: &UsageIngest,
        hint: Option<&str>,
    ) -> Result<(Records, Problems, Option<Staged>), String> {
        let (mut records, problems) =
            trace_records_in_place(&ingest.context(), request, hint).map_err(|e| e.to_string())?;
        ingest.privacy.apply(&mut records.spans, &mut records.logs);
        Ok((records, problems, None))
    }
    fn response(partial: Option<(i64, String)>) -> Self::Response {
        let partial_success = partial.map(|(rejected_spans, error_message)| {
            ExportTracePartialSuccess { rejected_spans, error_message }
        });
        ExportTraceServiceResponse { partial_success }
    }
}

impl Signal for ExportLogsServiceRequest {
    const NAME: &'static str = "ExportLogsServiceRequest";
    const HTTP_ENDPOINT: &'static str = "otlp_http_logs";
    const GRPC_ENDPOINT: &'static str = "otlp_grpc_logs";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    type Response = ExportLogsServiceResponse;
    fn items(&self) -> usize {
        self.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
    }
    fn records(
        &mut self,
        ingest: &UsageIngest,
        hint: Option<&str>,
    ) -> (Records, Problems, Option<Staged>) {
        let (mut records, problems) = log_records(self, hint);
        ingest.privacy.apply(&mut records.spans, &mut records.logs);
        (records, problems, None)
    }
    fn response(partial: Option<(i64, String)>) -> Self::Response {
        let partial_success = partial.map(|(rejected_log_records, error_message)| {
            ExportLogsPartialSuccess { rejected_log_records, error_message }
        });
        ExportLogsServiceResponse { partial_success }
    }
}

impl Signal for ExportMetricsServiceRequest {
    const NAME: &'static str = "ExportMetricsServiceRequest";
    const HTTP_ENDPOINT: &'static str = "otlp_http_metrics";
    const GRPC_ENDPOINT: &'static str = "otlp_grpc_metrics";
    const GRPC_PATH: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Response = ExportMetricsServiceResponse;
    fn items(&self) -> usize {
        self.resource_metrics.iter().flat_map(|r| &r.scope_metrics).map(|s| s.metrics.len()).sum()
    }
    fn records(
        &mut self,
        ingest: &UsageIngest,
        hint: Option<&str>,
    ) -> (Records, Problems, Option<Staged>) {
        let (records, problems, staged) = metric_records(ingest, self, hint);
        (records, problems, Some(staged))
    }
    fn response(partial: Option<(i64, String)>) -> Self::Response {
        let partial_success = partial.map(|(rejected_data_points, error_message)| {
            ExportMetricsPartialSuccess { rejected_data_points, error_message }
        });
        ExportMetricsServiceResponse { partial_success }
    }
}

/// Why an export was not committed.
pub enum Failure {
    /// The export could not be read or normalized.
    Request(ApiError),
    Commit(CommitError),
}

/// Normalizes one export with `normalize` on a lane of its own, commits
/// the records, frees them on that lane, and counts them for `/metrics`.
/// Cumulative metric samples staged by `normalize` are taken back when the
/// commit fails.
pub async fn normalize_and_commit(
    ingest: &Arc<UsageIngest>,
    endpoint: &'static str,
    principal: Option<Principal>,
    normalize: impl FnOnce(&UsageIngest) -> Result<(Records, Problems, Option<Staged>), ApiError>
    + Send
    + 'static,
) -> Result<Problems, Failure> {
    let lane = ingest.lanes.lane();
    let normalized = {
        let ingest = Arc::clone(ingest);
        lane.run(move || {
            let (records, problems, staged) = normalize(&ingest)?;
            if let Err(err) = ingest.access.bind_records(principal.as_ref(), &records) {
                if let Some(staged) = staged {
                    forget_cumulative(&ingest, staged);
                }
                return Err(err);
            }
            Ok((ingest.committer.prepare(records), problems, staged))
        })
        .await
    };
    let (prepared, problems, staged) = normalized.map_err(Failure::Request)?;
    let accepted = prepared.telemetry_records() as u64;
    match ingest.committer.commit_prepared(prepared).await {
        Ok((_, made)) => lane.free(made),
        Err(err) => {
            if let Some(staged) = staged {
                forget_cumulative(ingest, staged);
            }
            return Err(Failure::Commit(err));
        }
    }
    ingest.metrics.ingested(endpoint, accepted, 0, problems.rejected as u64);
    ingest.metrics.truncated(&problems.truncated);
    Ok(problems)
}

/// Log records of a logs export.
pub fn log_records(request: &ExportLogsServiceRequest, hint: Option<&str>) -> (Records, Problems) {
    let mut records = Records::default();
    let mut problems = Problems::default();
    let mut index = 0usize;
    let now_ms = crate::time::now_ms();
    for resource_logs in &request.resource_logs {
        let resource = resource_logs.resource.as_ref().map(ResourceRef::of);
        let resource = resource_attributes(resource.as_ref(), &mut problems.truncated);
        let resource = Arc::new(resource);
        let context = SpanContext { resource: &resource, project_hint: hint, now_ms };
        for scope_logs in &resource_logs.scope_logs {
            for log in &scope_logs.log_records {
                let at = index;
                index += 1;
                match normalize_log(log, &context, &mut problems.truncated) {
                    Ok(record) => records.logs.push(record),
                    Err(err) => {
                        problems.reject(format!("log record {at} ({}): {}", err.field, err.message))
                    }
                }
            }
        }
    }
    (records, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_hint_from_langfuse_credentials() {
        assert_eq!(project_hint(Some("pk-lf-1"), None).as_deref(), Some("pk-lf-1"));
        // base64("pk-lf-2:sk-lf-2")
        let basic = "Basic cGstbGYtMjpzay1sZi0y";
        assert_eq!(project_hint(None, Some(basic)).as_deref(), Some("pk-lf-2"));
        assert_eq!(project_hint(None, Some("Bearer abc")), None);
        assert_eq!(project_hint(None, Some("Basic !!!")), None);
    }

    #[test]
    fn problems_quote_the_first_few() {
        let mut problems = Problems::default();
        for i in 0..12 {
            problems.reject(format!("span {i}: bad"));
        }
        assert_eq!(problems.rejected, 12);
        assert!(problems.message().starts_with("span 0: bad; span 1: bad"));
        assert!(problems.message().ends_with("; and 2 more"));
    }
}
