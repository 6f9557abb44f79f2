//! One webhook POST to a URL an API client chose, made so that it cannot be
//! turned against the network Tally runs in: the URL and the addresses its
//! name resolves to are checked (`target`), the request goes to exactly the
//! addresses that passed, redirects are not followed, no proxy is used, the
//! connection and the whole exchange are timed out, and at most
//! `RESPONSE_CAP` bytes of the answer are read.

use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use tokio::time::{Instant, timeout_at};

use super::target::{self, Destination, TargetError};

/// Most bytes of a receiver's answer that are read (then dropped): a
/// receiver cannot hold memory or the delivery task with an endless body.
pub const RESPONSE_CAP: usize = 64 * 1024;
/// Longest part of a `Location` header quoted in a delivery's error.
const LOCATION_SHOWN: usize = 200;

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Time allowed to open the TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt: resolving, connecting, sending and
    /// receiving the answer's status.
    pub timeout: Duration,
    /// Whether loopback and private networks may receive webhooks.
    pub allow_private_targets: bool,
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Worth trying again: no answer, a non-2xx answer, a redirect.
    Failed(String),
    /// The target may not be reached; trying again will not help.
    Refused(TargetError),
}

/// POSTs `body` with `headers` to `url`, once.
pub async fn post(
    config: &DeliveryConfig,
    url: &str,
    headers: &[(&'static str, String)],
    body: String,
) -> Outcome {
    let target = match target::check_url(url, config.allow_private_targets) {
        Ok(target) => target,
        Err(refused) => return Outcome::Refused(refused),
    };
    let deadline = Instant::now() + config.timeout;
    let response = match timeout_at(deadline, send(config, target, headers, body)).await {
        Ok(Ok(response)) => response,
        Ok(Err(outcome)) => return outcome,
        Err(_) => {
            return Outcome::Failed(format!("no answer within {:?}", config.timeout));
        }
    };
    let status = response.status();
    let outcome = if status.is_success() {
        Outcome::Delivered
    } else if status.is_redirection() {
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(LOCATION_SHOWN).collect())
            .unwrap_or_else(|| "nowhere (no Location header)".to_owned());
        Outcome::Failed(format!("HTTP {status}: redirect to {location} not followed"))
    } else {
        Outcome::Failed(format!("HTTP {status}"))
    };
    // The status decides; the body is read only so the receiver is not cut
    // off mid-answer, and never past the cap or the attempt's deadline.
    let _ = timeout_at(deadline, drain(response)).await;
    outcome
}

/// Resolves the target's name (once), keeps the addresses that may be
/// reached, and sends the request pinned to them.
async fn send(
    config: &DeliveryConfig,
    target: target::Target,
    headers: &[(&'static str, String)],
    body: String,
) -> Result<reqwest::Response, Outcome> {
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // The attempt's deadline (`post`) bounds the rest.
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(NoLookups));
    if let Destination::Name { host, port } = &target.destination {
        let resolved = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|e| Outcome::Failed(format!("cannot resolve {host}: {e}")))?;
        let allowed = target::allowed_addresses(host, resolved, config.allow_private_targets)
            .map_err(Outcome::Refused)?;
        client = client.resolve_to_addrs(host, &allowed);
    }
    let client = client
        .build()
        .map_err(|e| Outcome::Failed(format!("cannot set up the HTTP client: {}", chain(&e))))?;
    let mut request = client.post(target.url).header(CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.body(body).send().await.map_err(|e| Outcome::Failed(chain(&e)))
}

async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while read < RESPONSE_CAP {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => return,
        }
    }
}

/// An error and its causes, `outer: inner: …` (reqwest's own message hides
/// the cause, such as "connection refused").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The client's resolver: every name it may reach was resolved and checked
/// before the request and handed to it as an override, so a lookup that gets
/// here would be of an unchecked name.
struct NoLookups;

impl Resolve for NoLookups {
    fn resolve(&self, name: Name) -> Resolving {
        let message = format!("{} was not resolved and checked before the request", name.as_str());
        Box::pin(std::future::ready(Err::<Addrs, _>(message.into())))
    }
}
