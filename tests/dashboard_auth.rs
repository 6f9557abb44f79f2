//! The dashboard on a Tally that asks for API keys, in headless Chromium
//! (Debian's `chromium`, driven by `playwright-core` from `ui/node_modules`):
//! two projects get a read and an ingest key each from `tally keys create`,
//! each ingest key sends its project's usage (models and users of its own),
//! then `ui/e2e/auth.mjs` signs in with each read key in turn and checks
//! that the dashboard asks for a key first, shows the server's reason for a
//! wrong one, names the key's project and scope, shows that project's data
//! and nothing of the other's, keeps the key across a reload and forgets
//! it on Sign out. Screenshots go to `ui/test-output/`.

mod common;

use std::time::Duration;

use common::{TestServer, chat, now_ms, post_usage_bytes, tokens, with};
use serde_json::{Value, json};

/// Two sign-ins, four pages each, on two shared cores.
const DEADLINE: Duration = Duration::from_secs(600);

/// One project's keys and what its ingest key sends.
struct Project {
    name: &'static str,
    /// (model, user, calls): distinct from the other project's.
    calls: &'static [(&'static str, &'static str, usize)],
    read_key: String,
    ingest_key: String,
}

const TEAM_A: &[(&str, &str, usize)] =
    &[("gpt-4o", "alice-a", 3), ("gpt-4o-mini", "carol-a", 2), ("acme-a-llm", "alice-a", 1)];
const TEAM_B: &[(&str, &str, usize)] = &[
    ("claude-3-5-sonnet-20241022", "bob-b", 3),
    ("claude-sonnet-4-5", "dave-b", 2),
    ("acme-b-llm", "bob-b", 1),
];

async fn get_with(base: &str, path: &str, key: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let response = common::client()
        .get(format!("{base}{path}"))
        .query(query)
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn names(summary: &Value, field: &str) -> Vec<String> {
    let mut names: Vec<String> = summary["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["key"][field].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_asks_for_a_key_and_shows_only_its_project() {
    let ui = common::browser_ui_dir();

    let dir = tempfile::tempdir().expect("temp dir");
    let mut projects = Vec::new();
    for (name, calls) in [("team-a", TEAM_A), ("team-b", TEAM_B)] {
        let read_key =
            common::create_key(dir.path(), name, "read", &["--name", &format!("{name}-dashboard")])
                .text;
        let ingest_key =
            common::create_key(dir.path(), name, "ingest", &["--name", &format!("{name}-gateway")])
                .text;
        projects.push(Project { name, calls, read_key, ingest_key });
    }
    let server = TestServer::start(dir.path(), &[]);
    let base = server.url();

    // Each ingest key sends its project's calls, without naming the project.
    let now = now_ms();
    for p in &projects {
        let mut reports = Vec::new();
        for (model, user, count) in p.calls {
            for i in 0..*count {
                let id = format!("{}-{model}-{i}", p.name);
                let t = tokens(1_000 + 250 * i as u64, 400 + 50 * i as u64);
                let completed = now - (5 + 7 * reports.len() as i64) * 60_000;
                reports.push(with(chat(&id, model, t, completed), "user", json!(user)));
            }
        }
        let body = serde_json::to_vec(&reports).unwrap();
        let bearer = format!("Bearer {}", p.ingest_key);
        let headers = [("content-type", "application/json"), ("authorization", &bearer[..])];
        let reply = post_usage_bytes(base, body.clone(), &headers).await;
        assert_eq!(reply.status, 200, "{} ingest: {}", p.name, reply.text);
        assert_eq!(
            reply.json["accepted"],
            json!(reports.len()),
            "{} ingest: {}",
            p.name,
            reply.text
        );
        // Without a key the same reports are refused.
        let refused = post_usage_bytes(base, body, &headers[..1]).await;
        refused.assert_error(401, Some("unauthorized"));
    }
    // What the browser will be held to: each read key sees its own project.
    let window = [("from", (now - 3 * 3_600_000).to_string()), ("to", (now + 60_000).to_string())];
    let window: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for p in &projects {
        let (status, who) = get_with(base, "/api/v1/auth/whoami", &p.read_key, &[]).await;
        assert_eq!(status, 200, "whoami: {who}");
        assert_eq!((who["project"].as_str(), who["scope"].as_str()), (Some(p.name), Some("read")));
        let mut query = window.clone();
        query.extend([("group_by", "model"), ("limit", "100")]);
        let (status, summary) = get_with(base, "/api/v1/usage/summary", &p.read_key, &query).await;
        assert_eq!(status, 200, "summary: {summary}");
        let mut expected: Vec<String> = p.calls.iter().map(|(m, _, _)| m.to_string()).collect();
        expected.sort();
        assert_eq!(names(&summary, "model"), expected, "{}'s models", p.name);
        let calls: usize = p.calls.iter().map(|(_, _, n)| n).sum();
        assert_eq!(summary["total"]["requests"], json!(calls), "{}'s requests", p.name);
        let other = projects.iter().find(|o| o.name != p.name).expect("two projects");
        let (status, denied) =
            get_with(base, "/api/v1/usage/summary", &p.read_key, &[("project", other.name)]).await;
        assert_eq!(status, 403, "another project: {denied}");
    }
    let anonymous = common::get(base, "/api/v1/usage/summary", &[]).await;
    anonymous.assert_error(401, Some("unauthorized"));

    let key_arg = |p: &Project| format!("{}={}", p.name, p.read_key);
    let mut command = tokio::process::Command::new("node");
    command
        .current_dir(&ui)
        .args(["e2e/auth.mjs", "--url", base, "--out", "test-output"])
        .args(["--key-a", &key_arg(&projects[0]), "--key-b", &key_arg(&projects[1])])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("the browser run did not finish within {DEADLINE:?}"))
        .expect("run node (Node.js 20 or newer)");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    println!("{out}");
    assert!(
        output.status.success(),
        "the browser run failed ({}):\n{out}\n{err}\nserver log:\n{}",
        output.status,
        server.log()
    );
    // The run names each check; make sure they all ran.
    let summary = out.lines().rev().find(|l| l.ends_with(" failed")).expect("a summary line");
    assert!(summary.ends_with(", 0 failed"), "{summary}");
    let passed: usize = summary.split(' ').next().and_then(|n| n.parse().ok()).expect("a count");
    assert!(passed >= 10, "only {passed} checks ran: {summary}");
}
