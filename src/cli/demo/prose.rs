//! What the demo's agents say: system prompts, the questions people ask,
//! what tools return and what the models answer, as templates with slots
//! (`{name}`, `{invoice}`, …) filled per run, so that each trace reads like a
//! real conversation and no two are quite alike.

use rand::Rng;
use rand::rngs::StdRng;

/// Picks one of `options`.
pub fn pick<'a>(options: &[&'a str], rng: &mut StdRng) -> &'a str {
    options[rng.random_range(0..options.len())]
}

/// Values for the slots of a template.
#[derive(Debug, Clone)]
pub struct Slots {
    pub name: String,
    pub invoice: String,
    pub order: String,
    pub amount: String,
    pub seats: u32,
    pub day: String,
    pub module: &'static str,
    pub test: &'static str,
    pub ticket: String,
}

impl Slots {
    pub fn new(user: &str, day: String, rng: &mut StdRng) -> Slots {
        let first = user.split('.').next().unwrap_or(user);
        let mut name = first.to_owned();
        if let Some(c) = name.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        Slots {
            name,
            invoice: format!("INV-2026-{:05}", rng.random_range(10_000..99_999)),
            order: format!("A-{:05}", rng.random_range(10_000..99_999)),
            amount: format!("{}.{:02}", rng.random_range(19..480), rng.random_range(0..100)),
            seats: rng.random_range(3..60),
            day,
            module: pick(
                &["billing/refunds.py", "orders/api.py", "export/nightly.py", "auth/session.py"],
                rng,
            ),
            test: pick(
                &[
                    "test_refund_rounding",
                    "test_orders_pagination",
                    "test_export_large_account",
                    "test_session_expiry",
                ],
                rng,
            ),
            ticket: format!("SUP-{}", rng.random_range(4_000..9_999)),
        }
    }

    /// `template` with every `{slot}` filled.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{name}", &self.name)
            .replace("{invoice}", &self.invoice)
            .replace("{order}", &self.order)
            .replace("{amount}", &self.amount)
            .replace("{seats}", &self.seats.to_string())
            .replace("{day}", &self.day)
            .replace("{module}", self.module)
            .replace("{test}", self.test)
            .replace("{ticket}", &self.ticket)
    }
}

// ---------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------

pub const SUPPORT_SYSTEM: &str = "You are Acme Cloud's support assistant. Answer the customer in a friendly, concise way, in the language they wrote in. Use the help-center articles and the account tools; never guess at billing amounts. If you cannot resolve the issue, open a ticket and say what happens next.";

/// A kind of support question, with the article the search finds, the tool
/// the agent calls (if any) and the answer it ends up giving.
pub struct SupportCase {
    pub questions: &'static [&'static str],
    pub article: &'static str,
    pub excerpt: &'static str,
    /// (tool name, arguments as JSON, result)
    pub tool: Option<(&'static str, &'static str, &'static str)>,
    pub answers: &'static [&'static str],
}

pub static SUPPORT_CASES: &[SupportCase] = &[
    SupportCase {
        questions: &[
            "Hi, I was charged twice for invoice {invoice} this month. Can you check what happened and refund the extra charge?",
            "Hello, our card shows two payments of ${amount} for {invoice}. Is this a mistake?",
        ],
        article: "Why do I see two charges on my statement?",
        excerpt: "A pending authorization can appear next to the final charge for up to five business days. Only the final charge is collected; the authorization is released by the bank.",
        tool: Some((
            "lookup_invoice",
            r#"{"invoice_id": "{invoice}"}"#,
            r#"{"invoice_id": "{invoice}", "status": "paid", "amount": "{amount}", "charges": [{"type": "authorization", "state": "voided"}, {"type": "capture", "state": "settled"}]}"#,
        )),
        answers: &[
            "Thanks for checking with us, {name}. I looked at {invoice}: there is one settled payment of ${amount}. The second line on your statement is a card authorization that we voided right after the payment went through, so your bank will drop it within three to five business days. You don't need to do anything, and you were not charged twice.",
            "Hi {name}, good news: you were only charged once. Invoice {invoice} shows a single captured payment of ${amount}; the other entry is a temporary authorization we already released. Depending on your bank it disappears within a few business days. If it is still there next week, reply here and I'll escalate it to billing.",
        ],
    },
    SupportCase {
        questions: &[
            "Since this morning nobody on our team can sign in with Okta. We get 'SAML response signature invalid'. What changed?",
            "SSO login fails for all of our users with an invalid signature error. Can you help quickly? We have a demo at 3pm.",
        ],
        article: "Rotating the SAML signing certificate",
        excerpt: "When your identity provider rotates its signing certificate, upload the new certificate under Settings → Security → Single sign-on. Logins fail with 'signature invalid' until both sides match.",
        tool: Some((
            "get_sso_config",
            r#"{"workspace": "current"}"#,
            r#"{"provider": "okta", "certificate_expires": "{day}", "last_login_success": "yesterday 18:42 UTC", "recent_errors": 41}"#,
        )),
        answers: &[
            "Sorry about the trouble, {name}. Your Okta signing certificate expired on {day}, and Okta switched to a new one, so our side still expects the old signature. An admin can fix it in two minutes: open Settings → Security → Single sign-on, click Replace certificate and paste the new certificate from Okta's SAML setup page. Sign-ins work again as soon as it is saved. Until then, admins can still log in with email and password.",
            "Hi {name}, I found the cause: the SAML certificate on file expired on {day}. Ask your Okta admin to download the current signing certificate, then upload it under Settings → Security → Single sign-on. I've also opened {ticket} so our team can confirm once it's done; you should be fine well before your demo.",
        ],
    },
    SupportCase {
        questions: &[
            "How can I export all the data of a project as CSV? I need it for our auditors by Friday.",
            "Is there a way to download everything in our workspace as a spreadsheet?",
        ],
        article: "Exporting project data",
        excerpt: "Project owners can export every table of a project as CSV files from Project settings → Export. Large exports are prepared in the background and sent by email as a download link valid for 7 days.",
        tool: None,
        answers: &[
            "Sure, {name}! As a project owner, go to Project settings → Export and choose CSV. We prepare the files in the background and email you a download link, which stays valid for seven days. For large projects that can take up to an hour, so I'd start it today to be safe for Friday.",
            "Yes: open the project, then Project settings → Export, and pick CSV. You'll get one file per table in a zip, sent to your email as a link that works for seven days. Only project owners see the Export tab; if you don't, ask an owner to run it or to give you the role.",
        ],
    },
    SupportCase {
        questions: &[
            "Our nightly sync keeps failing with HTTP 429 after about 2,000 requests. Did you lower our rate limit?",
            "We get 'Too Many Requests' from the API during our import. What is the limit for our plan?",
        ],
        article: "API rate limits by plan",
        excerpt: "Business plans allow 600 requests per minute per API key, with bursts of up to 100 requests. Responses include X-RateLimit-Remaining and Retry-After headers.",
        tool: Some((
            "get_rate_limits",
            r#"{"api_key_prefix": "ak_live"}"#,
            r#"{"plan": "business", "limit_per_minute": 600, "burst": 100, "throttled_last_24h": 1873}"#,
        )),
        answers: &[
            "Hi {name}, your limit has not changed: your plan allows 600 requests per minute per key, with bursts of 100. Your sync sends them much faster at the start, so about 1,900 requests were throttled last night. The simplest fix is to honor the Retry-After header on 429 responses and pause for that many seconds; spreading the job over a few more minutes also works. If you need more headroom, we can raise the limit on a second key.",
            "No change on our side, {name}. The key your sync uses is limited to 600 requests a minute, and the job bursts well above that right after midnight. Please retry after the number of seconds in the Retry-After header, or run the import with at most 8 parallel workers. I've noted this in {ticket} in case you'd like a temporary increase.",
        ],
    },
    SupportCase {
        questions: &[
            "We'd like to go from {seats} seats down to fewer at renewal. How does that work and when is it billed?",
            "Can I remove seats in the middle of the contract? We have {seats} and only use about half.",
        ],
        article: "Changing the number of seats",
        excerpt: "Seats can be added at any time and are prorated. Removing seats takes effect at the next renewal date; the invoice for the new period reflects the lower count.",
        tool: Some((
            "get_subscription",
            r#"{"account": "current"}"#,
            r#"{"plan": "business", "seats": {seats}, "renews_on": "{day}", "billing": "annual"}"#,
        )),
        answers: &[
            "Of course, {name}. You have {seats} seats on an annual plan renewing on {day}. You can lower the seat count any time before then under Billing → Seats; the change takes effect on the renewal date and your next invoice will use the new number. Adding seats, by contrast, is immediate and prorated.",
            "Good question! Removing seats applies from your next renewal on {day}, not mid-term, so you keep all {seats} until then. Set the new number under Billing → Seats whenever you like and it will be used for the next invoice. I can also send you a quote for the lower count if that helps your budget planning.",
        ],
    },
];

// ---------------------------------------------------------------------------
// Research
// ---------------------------------------------------------------------------

pub const RESEARCH_SYSTEM: &str = "You are a research assistant for Acme's strategy team. Break the question into searches, read the sources, and write a short, well-structured brief with numbered citations. Say clearly where the evidence is thin or sources disagree.";

pub struct ResearchCase {
    pub question: &'static str,
    pub searches: &'static [&'static str],
    pub finding: &'static str,
    pub brief: &'static str,
}

pub static RESEARCH_CASES: &[ResearchCase] = &[
    ResearchCase {
        question: "Compare what the main hosted LLMs would cost for our support workload: about 2 million conversations a month, 1,500 input and 300 output tokens each, with most of the prompt being a shared system prompt.",
        searches: &[
            "LLM API pricing per million tokens 2026",
            "prompt caching discount input tokens providers",
            "batch API discount LLM providers",
        ],
        finding: "Prices per million tokens vary by a factor of twenty between the small and the frontier models. Cached input is billed at 10 to 25 percent of the normal input price by the providers that offer caching, which matters here because the shared system prompt is about 1,100 of the 1,500 input tokens.",
        brief: "## Cost of the support workload\n\nAt 2 million conversations a month the workload is 3.0 B input and 0.6 B output tokens. Because roughly 70 % of each prompt is the same system prompt, prompt caching changes the picture more than the choice of provider:\n\n1. **Small models** (gpt-4.1-mini, claude-haiku-4-5, gemini-2.5-flash) land between roughly $1,500 and $4,000 a month with caching on [1][2].\n2. **Frontier models** cost five to ten times as much; they are worth it only for the escalation path, not for every turn [1].\n3. Batch pricing does not apply, since customers wait for the answer [3].\n\n**Recommendation:** route first-line answers to a small model with caching and send the 5 to 10 % of hard cases to a larger one. Evidence on cache hit rates in production is thin; measure it for two weeks before committing.",
    },
    ResearchCase {
        question: "Summarize what is known about sodium-ion batteries for grid storage: energy density, cycle life, cost outlook, and who is shipping them at scale.",
        searches: &[
            "sodium-ion battery grid storage cycle life",
            "sodium-ion cell cost per kWh forecast",
            "sodium-ion manufacturers gigawatt-hour capacity",
        ],
        finding: "Commercial sodium-ion cells reach 140 to 160 Wh/kg, below lithium iron phosphate, but keep working at low temperatures and use no lithium, cobalt or nickel. Reported cycle life for stationary cells is 3,000 to 6,000 cycles. Several manufacturers announced gigawatt-hour lines, mostly in China.",
        brief: "## Sodium-ion for grid storage\n\n- **Energy density:** 140 to 160 Wh/kg at cell level, about 20 % below LFP; for stationary storage weight matters little [1].\n- **Cycle life:** 3,000 to 6,000 cycles reported for stationary products, comparable with LFP in the same duty [1][2].\n- **Cost:** forecasts put cells 10 to 30 % below LFP once volumes grow, but today's prices are similar because lines are new [2].\n- **Supply:** a handful of manufacturers run gigawatt-hour lines; most capacity is in China [3].\n\nSources disagree on the cost outlook, which depends heavily on lithium prices. The technology looks ready for pilots; long-term degradation data is still limited.",
    },
    ResearchCase {
        question: "What are current best practices for evaluating retrieval-augmented generation systems? We want a lightweight process for our help-center bot.",
        searches: &[
            "RAG evaluation faithfulness answer relevance metrics",
            "LLM as a judge reliability evaluation",
            "golden dataset help center chatbot evaluation",
        ],
        finding: "Teams evaluate retrieval and generation separately: recall of the right passages on a labelled set, then faithfulness (is every claim supported by the retrieved text) and answer relevance. LLM-as-a-judge scores correlate reasonably with human ratings when the rubric is specific, but drift when the judge model changes.",
        brief: "## Evaluating the help-center bot\n\n1. **Build a golden set** of 150 to 300 real questions with the article that answers each one [3].\n2. **Measure retrieval first:** recall@5 of the right article. Most bad answers trace back to retrieval, not generation [1].\n3. **Score answers** for faithfulness and relevance with a model judge and a short, specific rubric; have a person review 10 % of the scores every week [2].\n4. **Pin the judge model** and re-baseline when it changes, since scores drift between versions [2].\n\nRun the set on every prompt or model change and keep the results next to the release notes. The evidence on judge reliability is mixed for long answers; keep answers short.",
    },
    ResearchCase {
        question: "How do European data-residency rules affect where we can host model inference for customers in Germany and France?",
        searches: &[
            "GDPR data transfer model inference hosting EU",
            "EU data boundary cloud providers inference regions",
            "German public sector cloud requirements",
        ],
        finding: "GDPR does not require data to stay in the EU, but transfers need a legal basis such as the EU-US Data Privacy Framework or standard contractual clauses. Many enterprise and public-sector customers contractually require EU-only processing, and the major providers now offer EU inference regions.",
        brief: "## Hosting inference for German and French customers\n\n- **Law:** GDPR allows transfers outside the EU with a valid mechanism (adequacy decision, standard contractual clauses) [1].\n- **Contracts:** enterprise and public-sector customers often require EU-only processing regardless; this is the stricter constraint in practice [3].\n- **Options:** all three large providers offer EU regions for their main models; some newer models reach EU regions weeks later [2].\n\n**Recommendation:** default EU customers to EU regions, record the region per request in our usage logs, and document the fallback path. Legal should confirm the public-sector requirements per contract.",
    },
];

// ---------------------------------------------------------------------------
// Coding
// ---------------------------------------------------------------------------

pub const CODING_SYSTEM: &str = "You are a coding agent working in the acme-platform repository (Python 3.12, pytest). Read the relevant code before changing it, make the smallest change that solves the task, run the tests, and explain what you changed and why.";

pub struct CodingCase {
    pub task: &'static str,
    pub files: &'static [&'static str],
    pub diagnosis: &'static str,
    pub patch: &'static str,
    pub summary: &'static str,
    pub commit: &'static str,
}

pub static CODING_CASES: &[CodingCase] = &[
    CodingCase {
        task: "The test {test} fails on CI about one run in ten. Find out why and fix it.",
        files: &["billing/refunds.py", "tests/billing/test_refunds.py"],
        diagnosis: "The refund amount is computed with floats and rounded with round(), which uses banker's rounding; amounts ending in .5 cents round differently depending on the random test data.",
        patch: "--- a/billing/refunds.py\n+++ b/billing/refunds.py\n@@ def prorated_refund(amount, days_used, days_total):\n-    return round(amount * (1 - days_used / days_total), 2)\n+    exact = Decimal(amount) * (1 - Decimal(days_used) / Decimal(days_total))\n+    return exact.quantize(Decimal(\"0.01\"), rounding=ROUND_HALF_UP)\n",
        summary: "The flaky failure came from float arithmetic plus banker's rounding in prorated_refund: for amounts that land exactly on half a cent, the result depended on the random inputs. I switched the computation to Decimal with ROUND_HALF_UP, which matches what finance expects, and added a test with the three half-cent cases that used to fail. The full billing suite passes.",
        commit: "billing: compute prorated refunds with Decimal, round half up\n\nFixes the intermittent failure of test_refund_rounding.",
    },
    CodingCase {
        task: "Add cursor-based pagination to GET /orders. Keep the offset parameter working for one more release.",
        files: &["orders/api.py", "orders/queries.py", "tests/orders/test_api.py"],
        diagnosis: "list_orders builds the query with OFFSET, which gets slow for large accounts and skips rows when orders are inserted between pages. Orders have a unique (created_at, id) order we can use as a cursor.",
        patch: "--- a/orders/api.py\n+++ b/orders/api.py\n@@ def list_orders(request):\n-    rows = queries.orders_page(account, offset=request.args.get(\"offset\", 0))\n+    cursor = decode_cursor(request.args.get(\"cursor\"))\n+    rows = queries.orders_after(account, cursor, limit=page_size + 1)\n+    next_cursor = encode_cursor(rows[page_size]) if len(rows) > page_size else None\n",
        summary: "GET /orders now accepts a cursor parameter and returns next_cursor; pages are read with a keyset query on (created_at, id), so they stay fast and stable while new orders arrive. The offset parameter still works and logs a deprecation warning. I added tests for paging through 250 orders with inserts between pages.",
        commit: "orders: keyset pagination for GET /orders\n\nAdds cursor/next_cursor; offset still works and is deprecated.",
    },
    CodingCase {
        task: "Our nightly export job runs out of memory on large accounts. Make it stream rows instead of loading them all.",
        files: &["export/nightly.py", "export/writers.py"],
        diagnosis: "export_account calls fetchall() on a query over every row of the account and builds the whole CSV in memory; the largest account has 40 million rows.",
        patch: "--- a/export/nightly.py\n+++ b/export/nightly.py\n@@ def export_account(conn, account, out):\n-    rows = conn.execute(EXPORT_QUERY, account).fetchall()\n-    out.write(to_csv(rows))\n+    with conn.cursor(name=\"export\") as cursor:\n+        cursor.itersize = 10_000\n+        cursor.execute(EXPORT_QUERY, account)\n+        writer = csv.writer(out)\n+        for row in cursor:\n+            writer.writerow(row)\n",
        summary: "The export now uses a server-side cursor and writes each row as it arrives, so memory stays flat (about 60 MB in my run) regardless of account size. The output is byte-for-byte identical to before on the test fixtures. The job also takes about a third less time because it no longer builds one huge string.",
        commit: "export: stream rows with a server-side cursor\n\nKeeps the nightly export's memory flat on large accounts.",
    },
    CodingCase {
        task: "Sessions sometimes expire right after login for users in UTC+ time zones. Investigate and fix it in {module}.",
        files: &["auth/session.py", "tests/auth/test_session.py"],
        diagnosis: "The expiry is computed with datetime.now() (local, naive) and compared with a UTC timestamp from the token, so users east of UTC get sessions that look hours older than they are.",
        patch: "--- a/auth/session.py\n+++ b/auth/session.py\n@@ def is_expired(session):\n-    return datetime.now() > session.expires_at\n+    return datetime.now(timezone.utc) > session.expires_at.astimezone(timezone.utc)\n",
        summary: "Session expiry compared a naive local time with a UTC expiry, so on servers or users ahead of UTC a fresh session could look expired. Both sides are now timezone-aware UTC. I added a test that freezes time in UTC+9 and checks a new session stays valid for its full lifetime.",
        commit: "auth: compare session expiry in UTC\n\nFixes sessions expiring right after login east of UTC.",
    },
];

// ---------------------------------------------------------------------------
// Workspace chat (direct model calls through the gateway)
// ---------------------------------------------------------------------------

/// Prompts people send the workspace chat; these calls are reported by the
/// gateway only (they are not traced), so only their size matters.
pub static CHAT_PROMPTS: &[&str] = &[
    "Rewrite this paragraph for a customer audience and keep it under 80 words.",
    "Summarize the attached meeting notes into decisions and action items.",
    "Draft a polite reply declining the meeting and proposing next Tuesday.",
    "Explain the difference between a left join and an inner join with an example.",
    "Translate this release note into German and French.",
];
