//! `tally keys create|list|revoke` and `tally audit`: on a data dir
//! directly (how the first admin key is made, with or without a server
//! running on it), or through a running server's admin API with an admin
//! key (`--server`, `TALLY_API_KEY`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{DEFAULT_SERVER, check, print_rows};
use crate::access::{Access, AccessStore, AuditEntry, AuthConfig, NewKeyRequest, Scope};

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    what: KeysCommand,
}

/// Where the keys are: a data dir, or a running server.
#[derive(Args, Clone)]
struct Place {
    /// Work on this data dir's access store directly (no server needed).
    #[arg(long, conflicts_with = "server")]
    data_dir: Option<PathBuf>,
    /// A running server [default: http://127.0.0.1:4318 when no --data-dir].
    #[arg(long)]
    server: Option<String>,
    /// The admin key to use with --server.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key; its text is printed once, as the last word of the output.
    Create {
        #[command(flatten)]
        place: Place,
        /// The project the key reads or writes (made when new).
        #[arg(long)]
        project: Option<String>,
        /// ingest, read or admin.
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// A name to tell it by.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 90d or 12h [default: none].
        #[arg(long)]
        expires: Option<String>,
        /// Requests per second this key may make [default: its scope's].
        #[arg(long)]
        requests_per_second: Option<f64>,
        /// Records per second this key may send [default: its scope's].
        #[arg(long)]
        records_per_second: Option<f64>,
    },
    /// List keys (never their text).
    List {
        #[command(flatten)]
        place: Place,
        /// Only this project's keys (with --server: the key's own).
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id; every listener refuses it within a second.
    Revoke {
        #[command(flatten)]
        place: Place,
        id: String,
    },
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    place: Place,
    /// Only this project's entries (with --server: the key's own).
    #[arg(long)]
    project: Option<String>,
    /// Newest entries to show.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text).ok_or_else(|| format!("{text:?} is not ingest, read or admin"))
}

fn client(place: &Place) -> anyhow::Result<(reqwest::Client, String)> {
    let server = place.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    Ok((super::api_client(place.key.as_deref())?, server.trim_end_matches('/').to_owned()))
}

/// The data dir's access, offline: no listener, so no start-up refusal.
fn offline(dir: &std::path::Path) -> anyhow::Result<Access> {
    Access::open(dir, AuthConfig::default(), &[])
        .with_context(|| format!("cannot open the access store of {}", dir.display()))
}

fn print_keys(keys: &[Value], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(keys)?);
        return Ok(());
    }
    let time = |v: &Value| v.as_i64().map_or("-".to_owned(), crate::time::format_instant);
    let mut rows = vec![
        ["ID", "PROJECT", "SCOPE", "NAME", "CREATED", "EXPIRES", "LAST_USED", "REVOKED"]
            .map(String::from)
            .to_vec(),
    ];
    for k in keys {
        let text = |f: &str| k[f].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_owned();
        rows.push(vec![
            text("id"),
            text("project"),
            text("scope"),
            text("name"),
            time(&k["created_ms"]),
            time(&k["expires_ms"]),
            time(&k["last_used_ms"]),
            time(&k["revoked_ms"]),
        ]);
    }
    print_rows(&rows, 8);
    Ok(())
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.what {
        KeysCommand::Create {
            place,
            project,
            scope,
            name,
            expires,
            requests_per_second,
            records_per_second,
        } => {
            let (view, text) = if let Some(dir) = &place.data_dir {
                let Some(project) = project else { bail!("--project is required with --data-dir") };
                let expires_in = expires
                    .as_deref()
                    .map(crate::access::parse_lifetime)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
                let access = offline(dir)?;
                let request = NewKeyRequest {
                    project,
                    scope,
                    name,
                    expires_in,
                    requests_per_second,
                    records_per_second,
                };
                let (record, text) = access.create_key(request)?;
                access.audit(AuditEntry {
                    time_ms: crate::time::now_ms(),
                    key_id: None,
                    project: record.project.clone(),
                    action: "keys.create".into(),
                    target: record.id.clone(),
                    client: Some("tally keys --data-dir".into()),
                });
                let view = serde_json::to_value(crate::access::api::KeyView::from(&record))?;
                (view, text)
            } else {
                let (client, server) = client(&place)?;
                let body = json!({
                    "project": project,
                    "scope": scope,
                    "name": name,
                    "expires": expires,
                    "requests_per_second": requests_per_second,
                    "records_per_second": records_per_second,
                });
                let response =
                    client.post(format!("{server}/api/v1/admin/keys")).json(&body).send();
                let mut made: Value = check(response.await?).await?.json().await?;
                let text = made["key"].as_str().unwrap_or_default().to_owned();
                made.as_object_mut().map(|o| o.remove("key"));
                (made, text)
            };
            println!(
                "created {} key {} for project {:?}; it is shown only now, keep it secret:",
                view["scope"].as_str().unwrap_or("?"),
                view["id"].as_str().unwrap_or("?"),
                view["project"].as_str().unwrap_or("?"),
            );
            println!("{text}");
            Ok(())
        }
        KeysCommand::List { place, project, json } => {
            let keys: Vec<Value> = if let Some(dir) = &place.data_dir {
                let access = offline(dir)?;
                access
                    .list(project.as_deref())
                    .iter()
                    .map(|k| serde_json::to_value(crate::access::api::KeyView::from(k)))
                    .collect::<Result<_, _>>()?
            } else {
                let (client, server) = client(&place)?;
                let mut request = client.get(format!("{server}/api/v1/admin/keys"));
                if let Some(project) = &project {
                    request = request.query(&[("project", project)]);
                }
                let body: Value = check(request.send().await?).await?.json().await?;
                body["keys"].as_array().cloned().unwrap_or_default()
            };
            print_keys(&keys, json)
        }
        KeysCommand::Revoke { place, id } => {
            if let Some(dir) = &place.data_dir {
                let access = offline(dir)?;
                let record = access.list(None).into_iter().find(|k| k.id == id);
                if !access.revoke(&id, None)? {
                    bail!("no key {id} in {}", dir.display());
                }
                access.audit(AuditEntry {
                    time_ms: crate::time::now_ms(),
                    key_id: None,
                    project: record.map_or_else(|| "default".into(), |k| k.project),
                    action: "keys.revoke".into(),
                    target: id.clone(),
                    client: Some("tally keys --data-dir".into()),
                });
            } else {
                let (client, server) = client(&place)?;
                check(client.delete(format!("{server}/api/v1/admin/keys/{id}")).send().await?)
                    .await?;
            }
            println!("revoked key {id}");
            Ok(())
        }
    }
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let entries: Vec<Value> = if let Some(dir) = &args.place.data_dir {
        let store = AccessStore::open(dir)?;
        store
            .audit(args.project.as_deref(), None, args.limit)?
            .into_iter()
            .map(|(id, e)| {
                let mut v = serde_json::to_value(e)?;
                v["id"] = json!(id);
                Ok(v)
            })
            .collect::<Result<_, serde_json::Error>>()?
    } else {
        let (client, server) = client(&args.place)?;
        let mut request = client
            .get(format!("{server}/api/v1/admin/audit"))
            .query(&[("limit", args.limit.min(1000).to_string())]);
        if let Some(project) = &args.project {
            request = request.query(&[("project", project)]);
        }
        let body: Value = check(request.send().await?).await?.json().await?;
        body["entries"].as_array().cloned().unwrap_or_default()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let mut rows =
        vec![["TIME", "PROJECT", "KEY", "ACTION", "TARGET", "CLIENT"].map(String::from).to_vec()];
    for e in &entries {
        let text = |f: &str| e[f].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_owned();
        rows.push(vec![
            e["time_ms"].as_i64().map_or("-".into(), crate::time::format_instant),
            text("project"),
            text("key_id"),
            text("action"),
            text("target"),
            text("client"),
        ]);
    }
    print_rows(&rows, 6);
    Ok(())
}
