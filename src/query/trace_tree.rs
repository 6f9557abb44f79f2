//! The span tree of one trace, built from its stored spans: parent links,
//! self time, and subtree totals. Pure (no I/O), so the trace endpoint only
//! fetches spans and serializes what this returns.
//!
//! Spans come from clients we do not control, so the input may hold orphans,
//! duplicate ids, cycles, or chains a hundred thousand spans deep. Nothing
//! here recurses: the tree is built bottom-up from an explicit order, and
//! `SpanNode` drops its descendants with a loop.

use std::collections::{HashMap, HashSet};
use std::mem;

use serde::Serialize;

use crate::model::{Attributes, SpanEvent, SpanKind, SpanRecord, SpanStatus};

/// The span tree of one trace.
#[derive(Debug, Serialize)]
pub struct TraceTree {
    /// Spans without a parent in the trace (true roots, orphans, and the spans
    /// where cycles were cut), sorted by start, then span id.
    pub roots: Vec<SpanNode>,
    /// Sums over every span of the trace.
    pub totals: Subtree,
    /// Earliest span start (unix ms), 0 for an empty trace.
    pub start_ms: f64,
    /// Latest span end minus the earliest start, 0 for an empty trace.
    pub duration_ms: f64,
    /// Spans in the tree (after dropping duplicate ids).
    pub span_count: usize,
    /// Spans whose status is `error`.
    pub error_count: usize,
    /// Spans on the longest root-to-leaf path; not served. Serializing nests
    /// one level per span, so callers should check this before serializing.
    #[serde(skip)]
    depth: usize,
}

impl TraceTree {
    /// Spans on the longest root-to-leaf path (0 for an empty trace).
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// One span with its children. `resource` is left out: it repeats on every
/// span of a service and would dominate the response.
#[derive(Debug, Serialize)]
pub struct SpanNode {
    pub span_id: String,
    /// As recorded, so it is also set on orphans and on cut cycle members.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub service: String,
    /// Unix ms.
    pub start_ms: f64,
    /// Start minus the trace's earliest start.
    pub offset_ms: f64,
    pub duration_ms: f64,
    /// Duration minus the time covered by at least one child (children
    /// clipped to this span); never negative.
    pub self_ms: f64,
    pub status: SpanStatus,
    pub status_message: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
    pub llm_call: bool,
    pub attributes: Attributes,
    pub events: Vec<NodeEvent>,
    /// Sorted by start, then span id.
    pub children: Vec<SpanNode>,
    /// This span and all its descendants.
    pub subtree: Subtree,
}

impl Drop for SpanNode {
    /// The derived drop would recurse once per level and overflow the stack
    /// on a deep chain, so descendants are detached and dropped in a loop.
    fn drop(&mut self) {
        let mut pending = mem::take(&mut self.children);
        while let Some(mut node) = pending.pop() {
            pending.append(&mut node.children);
        }
    }
}

/// A span event with its time both absolute and relative to the span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeEvent {
    pub name: String,
    /// Unix ms.
    pub time_ms: f64,
    /// Event time minus the span's start.
    pub offset_ms: f64,
    pub attributes: Attributes,
}

/// Sums over a span and all its descendants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Subtree {
    pub spans: usize,
    pub llm_calls: usize,
    pub errors: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
}

impl Subtree {
    fn of_span(span: &SpanRecord) -> Subtree {
        Subtree {
            spans: 1,
            llm_calls: usize::from(span.llm_call),
            errors: usize::from(span.status == SpanStatus::Error),
            input_tokens: span.input_tokens,
            output_tokens: span.output_tokens,
            cache_read_tokens: span.cache_read_tokens,
            cost_usd: span.cost_usd,
        }
    }

    /// Token counters saturate rather than wrap, as in the rollups.
    fn add(&mut self, other: &Subtree) {
        self.spans += other.spans;
        self.llm_calls += other.llm_calls;
        self.errors += other.errors;
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
        self.cost_usd += other.cost_usd;
    }
}

/// Builds the tree of one trace's spans (given in any order).
///
/// A span whose parent is not in `spans` is a root. Of spans sharing an id,
/// the first is kept. A cycle of parent links is cut at its member that
/// started first (then lowest span id), which becomes a root.
pub fn build(spans: Vec<SpanRecord>) -> TraceTree {
    let spans = first_of_each_id(spans);
    if spans.is_empty() {
        return TraceTree {
            roots: Vec::new(),
            totals: Subtree::default(),
            start_ms: 0.0,
            duration_ms: 0.0,
            span_count: 0,
            error_count: 0,
            depth: 0,
        };
    }

    let mut parents = parent_indices(&spans);
    cut_cycles(&spans, &mut parents);

    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (index, parent) in parents.iter().enumerate() {
        match parent {
            Some(parent) => children[*parent].push(index),
            None => roots.push(index),
        }
    }
    let by_start = |&a: &usize, &b: &usize| {
        (spans[a].start_ns, &spans[a].span_id).cmp(&(spans[b].start_ns, &spans[b].span_id))
    };
    roots.sort_by(by_start);
    for siblings in &mut children {
        siblings.sort_by(by_start);
    }

    // Parents before their descendants; walked backwards, every node is built
    // after all of its children.
    let mut order = Vec::with_capacity(spans.len());
    let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
    while let Some(index) = stack.pop() {
        order.push(index);
        stack.extend(children[index].iter().rev());
    }
    debug_assert_eq!(order.len(), spans.len(), "every span is reachable from a root");

    let trace_start_ns = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let trace_end_ns = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let bounds: Vec<(i64, i64)> = spans.iter().map(|s| (s.start_ns, s.end_ns)).collect();

    let mut heights = vec![0usize; spans.len()];
    let mut records: Vec<Option<SpanRecord>> = spans.into_iter().map(Some).collect();
    let mut built: Vec<Option<SpanNode>> =
        std::iter::repeat_with(|| None).take(order.len()).collect();
    for &index in order.iter().rev() {
        let record = records[index].take().expect("each span is built once");
        let child_nodes: Vec<SpanNode> = children[index]
            .iter()
            .map(|&child| built[child].take().expect("children are built before parents"))
            .collect();
        let covered_ns = union_within(bounds[index], children[index].iter().map(|&c| bounds[c]));
        heights[index] = 1 + children[index].iter().map(|&c| heights[c]).max().unwrap_or(0);
        built[index] = Some(node(record, child_nodes, covered_ns, trace_start_ns));
    }

    let mut totals = Subtree::default();
    let root_nodes: Vec<SpanNode> = roots
        .iter()
        .map(|&root| built[root].take().expect("roots are built"))
        .inspect(|node| totals.add(&node.subtree))
        .collect();
    TraceTree {
        roots: root_nodes,
        totals,
        start_ms: unix_ms(trace_start_ns),
        duration_ms: span_ms(trace_start_ns, trace_end_ns),
        span_count: totals.spans,
        error_count: totals.errors,
        depth: roots.iter().map(|&root| heights[root]).max().unwrap_or(0),
    }
}

/// Drops every span whose id an earlier span already has.
fn first_of_each_id(spans: Vec<SpanRecord>) -> Vec<SpanRecord> {
    let mut seen = HashSet::with_capacity(spans.len());
    let mut kept = Vec::with_capacity(spans.len());
    for span in spans {
        if seen.insert(span.span_id.clone()) {
            kept.push(span);
        }
    }
    kept
}

/// The index of each span's parent, when the parent is in the trace.
fn parent_indices(spans: &[SpanRecord]) -> Vec<Option<usize>> {
    let index_of: HashMap<&str, usize> =
        spans.iter().enumerate().map(|(index, span)| (span.span_id.as_str(), index)).collect();
    spans
        .iter()
        .map(|span| span.parent_span_id.as_deref().and_then(|id| index_of.get(id).copied()))
        .collect()
}

/// Makes every span reach a root by following parent links, by cutting each
/// cycle (including a span that names itself as parent) at the member that
/// started first. Each span is walked once.
fn cut_cycles(spans: &[SpanRecord], parents: &mut [Option<usize>]) {
    #[derive(Clone, Copy, PartialEq)]
    enum Walk {
        Unseen,
        OnPath,
        ReachesRoot,
    }
    let mut state = vec![Walk::Unseen; spans.len()];
    let mut path = Vec::new();
    for start in 0..spans.len() {
        let mut current = start;
        loop {
            match state[current] {
                Walk::ReachesRoot => break,
                Walk::OnPath => {
                    // `current` was met earlier on this path: the path from
                    // there on is a cycle.
                    let from = path.iter().rposition(|&i| i == current).expect("on the path");
                    let cut = path[from..]
                        .iter()
                        .copied()
                        .min_by(|&a: &usize, &b: &usize| {
                            (spans[a].start_ns, &spans[a].span_id)
                                .cmp(&(spans[b].start_ns, &spans[b].span_id))
                        })
                        .expect("a cycle has a member");
                    parents[cut] = None;
                    break;
                }
                Walk::Unseen => {
                    state[current] = Walk::OnPath;
                    path.push(current);
                    match parents[current] {
                        Some(parent) => current = parent,
                        None => break,
                    }
                }
            }
        }
        for index in path.drain(..) {
            state[index] = Walk::ReachesRoot;
        }
    }
}

/// How much of `parent` (start, end in ns) the union of `children` covers,
/// each child clipped to the parent. Children come sorted by start.
fn union_within(parent: (i64, i64), children: impl Iterator<Item = (i64, i64)>) -> i64 {
    let (parent_start, parent_end) = parent;
    let mut covered = 0;
    // The merged interval still open, as (start, end).
    let mut open: Option<(i64, i64)> = None;
    for (start, end) in children {
        let start = start.max(parent_start);
        let end = end.min(parent_end);
        if end <= start {
            continue;
        }
        open = match open {
            Some((open_start, open_end)) if start <= open_end => {
                Some((open_start, open_end.max(end)))
            }
            Some((open_start, open_end)) => {
                covered += open_end - open_start;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((open_start, open_end)) = open {
        covered += open_end - open_start;
    }
    covered
}

fn node(
    record: SpanRecord,
    children: Vec<SpanNode>,
    covered_ns: i64,
    trace_start_ns: i64,
) -> SpanNode {
    let mut subtree = Subtree::of_span(&record);
    for child in &children {
        subtree.add(&child.subtree);
    }
    let duration_ns = record.end_ns.saturating_sub(record.start_ns);
    let events = record
        .events
        .into_iter()
        .map(|event: SpanEvent| NodeEvent {
            name: event.name,
            time_ms: unix_ms(event.time_ns),
            offset_ms: span_ms(record.start_ns, event.time_ns),
            attributes: event.attributes,
        })
        .collect();
    SpanNode {
        span_id: record.span_id,
        parent_span_id: record.parent_span_id,
        name: record.name,
        kind: record.kind,
        service: record.service,
        start_ms: unix_ms(record.start_ns),
        offset_ms: span_ms(trace_start_ns, record.start_ns),
        duration_ms: span_ms(record.start_ns, record.end_ns),
        self_ms: duration_ns.saturating_sub(covered_ns).max(0) as f64 / 1e6,
        status: record.status,
        status_message: record.status_message,
        model: record.model,
        provider: record.provider,
        user: record.user,
        session: record.session,
        input_tokens: record.input_tokens,
        output_tokens: record.output_tokens,
        cache_read_tokens: record.cache_read_tokens,
        cost_usd: record.cost_usd,
        llm_call: record.llm_call,
        attributes: record.attributes,
        events,
        children,
        subtree,
    }
}

/// Unix ns to unix ms. Whole ms and the remainder are converted apart so the
/// fraction survives at today's magnitudes better than `ns as f64 / 1e6`.
fn unix_ms(ns: i64) -> f64 {
    ns.div_euclid(1_000_000) as f64 + ns.rem_euclid(1_000_000) as f64 / 1e6
}

/// Milliseconds from `from_ns` to `to_ns`, computed in integers first.
fn span_ms(from_ns: i64, to_ns: i64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::*;

    /// 2023-11-14T22:13:20Z in ns; whole ms so values compare exactly.
    const BASE_NS: i64 = 1_700_000_000_000_000_000;
    const MS: i64 = 1_000_000;

    /// A span from `start` to `end` ms after `BASE_NS`.
    fn span(id: &str, parent: Option<&str>, start: i64, end: i64) -> SpanRecord {
        SpanRecord {
            span_id: id.to_owned(),
            parent_span_id: parent.map(str::to_owned),
            name: format!("op {id}"),
            start_ns: BASE_NS + start * MS,
            end_ns: BASE_NS + end * MS,
            ..SpanRecord::example()
        }
    }

    fn llm(mut span: SpanRecord, input: u64, output: u64, cached: u64, cost: f64) -> SpanRecord {
        span.kind = SpanKind::Llm;
        span.llm_call = true;
        span.input_tokens = input;
        span.output_tokens = output;
        span.cache_read_tokens = cached;
        span.cost_usd = cost;
        span
    }

    fn failed(mut span: SpanRecord) -> SpanRecord {
        span.status = SpanStatus::Error;
        span.status_message = Some("boom".to_owned());
        span
    }

    fn ids(nodes: &[SpanNode]) -> Vec<&str> {
        nodes.iter().map(|n| n.span_id.as_str()).collect()
    }

    #[test]
    fn self_time_subtracts_the_union_of_children() {
        let tree = build(vec![
            span("b", Some("a"), 20, 50),
            span("a", None, 0, 100),
            span("c", Some("a"), 10, 30),
        ]);

        assert_eq!(ids(&tree.roots), ["a"]);
        let root = &tree.roots[0];
        assert_eq!(ids(&root.children), ["c", "b"]);
        assert_eq!(root.duration_ms, 100.0);
        assert_eq!(root.self_ms, 60.0);
        assert_eq!(root.offset_ms, 0.0);
        assert_eq!(root.start_ms, 1_700_000_000_000.0);
        assert_eq!(root.children[0].offset_ms, 10.0);
        assert_eq!(root.children[0].self_ms, 20.0);
        assert_eq!(root.children[1].offset_ms, 20.0);
        assert_eq!(root.children[1].self_ms, 30.0);
        assert_eq!(tree.start_ms, 1_700_000_000_000.0);
        assert_eq!(tree.duration_ms, 100.0);
        assert_eq!(tree.span_count, 3);
        assert_eq!(tree.depth(), 2);
    }

    #[test]
    fn disjoint_children_add_up() {
        let tree = build(vec![
            span("a", None, 0, 100),
            span("b", Some("a"), 10, 20),
            span("c", Some("a"), 30, 45),
            span("d", Some("a"), 40, 60),
        ]);

        // [10,20] + [30,60] = 40
        assert_eq!(tree.roots[0].self_ms, 60.0);
    }

    #[test]
    fn children_are_clipped_to_the_parent() {
        let tree = build(vec![
            span("a", None, 10, 100),
            span("early", Some("a"), 0, 30),
            span("late", Some("a"), 90, 150),
            span("outside", Some("a"), 200, 250),
        ]);

        let root = &tree.roots[0];
        assert_eq!(ids(&root.children), ["early", "late", "outside"]);
        // [10,30] + [90,100] = 30 of 90
        assert_eq!(root.self_ms, 60.0);
        assert_eq!(root.offset_ms, 10.0);
        assert_eq!(root.children[0].offset_ms, 0.0);
        assert_eq!(tree.duration_ms, 250.0);
    }

    #[test]
    fn self_time_is_never_negative() {
        let tree = build(vec![
            span("a", None, 0, 10),
            span("b", Some("a"), 0, 10),
            span("c", Some("a"), 0, 10),
        ]);

        assert_eq!(tree.roots[0].self_ms, 0.0);
    }

    #[test]
    fn orphans_are_roots_sorted_by_start() {
        let tree = build(vec![
            span("late", None, 50, 60),
            span("orphan", Some("missing"), 5, 20),
            span("child", Some("orphan"), 6, 10),
            span("tie-b", None, 30, 40),
            span("tie-a", None, 30, 35),
        ]);

        assert_eq!(ids(&tree.roots), ["orphan", "tie-a", "tie-b", "late"]);
        let orphan = &tree.roots[0];
        assert_eq!(orphan.parent_span_id.as_deref(), Some("missing"));
        assert_eq!(ids(&orphan.children), ["child"]);
        assert_eq!(tree.start_ms, 1_700_000_000_005.0);
        assert_eq!(tree.duration_ms, 55.0);
        assert_eq!(tree.totals.spans, 5);
    }

    #[test]
    fn subtrees_sum_each_level() {
        let tree = build(vec![
            span("root", None, 0, 100),
            span("agent", Some("root"), 0, 90),
            llm(span("llm1", Some("agent"), 10, 20), 100, 20, 50, 0.25),
            failed(llm(span("llm2", Some("agent"), 30, 40), 200, 0, 0, 0.5)),
            failed(span("tool", Some("root"), 90, 95)),
            llm(span("other-root", None, 200, 210), 7, 3, 1, 0.125),
        ]);

        let root = &tree.roots[0];
        let agent = &root.children[0];
        assert_eq!(
            agent.children[0].subtree,
            Subtree {
                spans: 1,
                llm_calls: 1,
                errors: 0,
                input_tokens: 100,
                output_tokens: 20,
                cache_read_tokens: 50,
                cost_usd: 0.25,
            }
        );
        assert_eq!(
            agent.subtree,
            Subtree {
                spans: 3,
                llm_calls: 2,
                errors: 1,
                input_tokens: 300,
                output_tokens: 20,
                cache_read_tokens: 50,
                cost_usd: 0.75,
            }
        );
        assert_eq!(
            root.subtree,
            Subtree {
                spans: 5,
                llm_calls: 2,
                errors: 2,
                input_tokens: 300,
                output_tokens: 20,
                cache_read_tokens: 50,
                cost_usd: 0.75,
            }
        );
        assert_eq!(
            tree.totals,
            Subtree {
                spans: 6,
                llm_calls: 3,
                errors: 2,
                input_tokens: 307,
                output_tokens: 23,
                cache_read_tokens: 51,
                cost_usd: 0.875,
            }
        );
        assert_eq!(tree.span_count, 6);
        assert_eq!(tree.error_count, 2);
        assert_eq!(tree.depth(), 3);
    }

    #[test]
    fn cycles_are_cut_at_the_earliest_member() {
        let tree = build(vec![
            span("b", Some("a"), 10, 20),
            span("a", Some("b"), 5, 30),
            span("c", Some("b"), 12, 15),
            span("self", Some("self"), 40, 50),
            span("root", None, 0, 1),
        ]);

        assert_eq!(ids(&tree.roots), ["root", "a", "self"]);
        let a = &tree.roots[1];
        assert_eq!(a.parent_span_id.as_deref(), Some("b"));
        assert_eq!(ids(&a.children), ["b"]);
        assert_eq!(ids(&a.children[0].children), ["c"]);
        assert!(tree.roots[2].children.is_empty());
        assert_eq!(tree.span_count, 5);
        assert_eq!(tree.depth(), 3);
    }

    #[test]
    fn a_long_cycle_with_a_tail_is_one_tree() {
        // 0 -> 1 -> ... -> 999 -> 0, and a tail hanging off span 500.
        let count = 1000;
        let mut spans: Vec<SpanRecord> = (0..count)
            .map(|i| {
                let parent = format!("s{}", (i + count - 1) % count);
                span(&format!("s{i}"), Some(&parent), i, 2000)
            })
            .collect();
        spans.push(span("tail", Some("s500"), 600, 700));

        let tree = build(spans);

        assert_eq!(ids(&tree.roots), ["s0"]);
        assert_eq!(tree.roots[0].subtree.spans, 1001);
        assert_eq!(tree.depth(), 1000);
    }

    #[test]
    fn duplicate_ids_keep_the_first() {
        let mut second = span("a", None, 0, 500);
        second.name = "second".to_owned();
        let tree = build(vec![
            span("a", None, 0, 100),
            span("b", Some("a"), 10, 20),
            second,
            span("b", Some("a"), 30, 90),
        ]);

        assert_eq!(ids(&tree.roots), ["a"]);
        let root = &tree.roots[0];
        assert_eq!(root.name, "op a");
        assert_eq!(root.duration_ms, 100.0);
        assert_eq!(ids(&root.children), ["b"]);
        assert_eq!(root.children[0].offset_ms, 10.0);
        assert_eq!(root.self_ms, 90.0);
        assert_eq!(tree.span_count, 2);
        assert_eq!(tree.duration_ms, 100.0);
    }

    #[test]
    fn a_chain_of_100_000_spans_builds_and_drops_without_recursion() {
        let count: i64 = 100_000;
        let end = 2 * count;
        // Given leaf first, so parents are resolved out of order.
        let spans: Vec<SpanRecord> = (0..count)
            .rev()
            .map(|i| {
                let parent = (i > 0).then(|| format!("s{}", i - 1));
                llm(span(&format!("s{i}"), parent.as_deref(), i, end), 1, 2, 0, 0.5)
            })
            .collect();

        let started = Instant::now();
        let tree = build(spans);
        let elapsed = started.elapsed();

        assert_eq!(tree.span_count, 100_000);
        assert_eq!(tree.depth(), 100_000);
        assert_eq!(tree.totals.llm_calls, 100_000);
        assert_eq!(tree.totals.input_tokens, 100_000);
        assert_eq!(tree.totals.output_tokens, 200_000);
        assert_eq!(tree.totals.cost_usd, 50_000.0);
        assert_eq!(ids(&tree.roots), ["s0"]);
        let mut node = &tree.roots[0];
        let mut level = 0;
        loop {
            assert_eq!(node.offset_ms, level as f64);
            assert_eq!(node.subtree.spans, (count - level) as usize);
            match node.children.as_slice() {
                [child] => {
                    // Each span covers one ms before its child starts.
                    assert_eq!(node.self_ms, 1.0);
                    node = child;
                }
                [] => break,
                _ => panic!("a chain has one child per span"),
            }
            level += 1;
        }
        assert_eq!(level, count - 1);
        assert_eq!(node.self_ms, (end - level) as f64);
        // A quadratic step would take minutes; this takes well under a second.
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
        drop(tree);
    }

    #[test]
    fn empty_input_is_an_empty_tree() {
        let tree = build(Vec::new());

        assert!(tree.roots.is_empty());
        assert_eq!(tree.totals, Subtree::default());
        assert_eq!(tree.start_ms, 0.0);
        assert_eq!(tree.duration_ms, 0.0);
        assert_eq!(tree.span_count, 0);
        assert_eq!(tree.error_count, 0);
        assert_eq!(tree.depth(), 0);
    }

    #[test]
    fn serializes_events_with_absolute_and_relative_times() {
        let mut root = span("a", None, 0, 100);
        root.start_ns += 250_000;
        root.events.push(SpanEvent {
            time_ns: BASE_NS + 40 * MS,
            name: "first_token".to_owned(),
            attributes: Attributes::new(),
        });
        std::sync::Arc::make_mut(&mut root.resource).insert("host.name".to_owned(), json!("box"));

        let value = serde_json::to_value(build(vec![root])).unwrap();

        let node = &value["roots"][0];
        assert_eq!(node["start_ms"], json!(1_700_000_000_000.25));
        assert_eq!(node["duration_ms"], json!(99.75));
        assert_eq!(
            node["events"],
            json!([{
                "name": "first_token",
                "time_ms": 1_700_000_000_040.0,
                "offset_ms": 39.75,
                "attributes": {},
            }])
        );
        assert_eq!(node["kind"], json!("chain"));
        assert_eq!(node["status"], json!("unset"));
        assert_eq!(node.get("resource"), None);
        assert_eq!(value.get("depth"), None);
        assert_eq!(value["span_count"], json!(1));
        assert_eq!(value["totals"]["spans"], json!(1));
        assert!(matches!(node["children"], Value::Array(ref c) if c.is_empty()));
    }
}
