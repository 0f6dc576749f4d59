//! The `openai` distiller: any OpenAI-compatible chat-completions endpoint. Requests run with
//! bounded concurrency and jittered retries; every answer is validated strictly (JSON with
//! known entity names and statuses) and a malformed one is retried, then recorded as a
//! failure, never stored as context. Answers are cached on disk by (report, prompt, model), so
//! a re-run costs nothing.

use std::path::PathBuf;
use std::time::Duration;

use ecamp_store::retry::Backoff;
use ecamp_store::shard::sha256_hex;
use ecamp_store::{Entity, Producer};
use futures::StreamExt;
use tokio::runtime::Handle;

use super::lexicon;
use super::rules::{EntityMention, Status, context_sentence};
use super::{Distilled, Distiller};

/// The instructions sent with every report; its hash is part of the cache key and provenance.
const PROMPT: &str = "You summarise chest X-ray reports for the given entities. Read the report and answer with \
JSON only, no prose: {\"entities\": [{\"name\": ENTITY, \"status\": \"present\" | \"uncertain\" | \"absent\", \
\"descriptors\": [WORD, ...]}]}. ENTITY must be one of the listed entity names; list an entity only if the report \
mentions it; descriptors are single lower-case words from the report (size, side, location, severity). Entities: ";

/// Settings of the endpoint and the client.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL, e.g. `https://api.openai.com/v1` (the client appends `/chat/completions`).
    pub endpoint: String,
    /// Model name.
    pub model: String,
    /// Bearer key (from `OPENAI_API_KEY`); never printed.
    pub api_key: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Attempts per report (network errors, 429/5xx and malformed answers are retried).
    pub attempts: u32,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Folder of cached answers (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
}

impl OpenAiConfig {
    /// Defaults for `endpoint` and `model`; the key is read from `OPENAI_API_KEY`.
    pub fn new(endpoint: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            endpoint: endpoint.into(),
            model: model.into(),
            api_key: std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty()),
            concurrency: 8,
            attempts: 4,
            timeout: Duration::from_secs(60),
            cache_dir: None,
        }
    }
}

/// The distiller; calls block on `rt`, so use it from worker threads.
pub struct OpenAi {
    cfg: OpenAiConfig,
    client: reqwest::Client,
    rt: Handle,
    prompt: String,
    prompt_hash: String,
    /// Set when the endpoint refused a request, before any answer came, in a way every other
    /// request would share (bad key, wrong URL): later reports fail at once instead of each
    /// asking again. After an answer, a refusal is taken as that report's (a proxy's 403 on one
    /// body, a 404 during a deploy).
    refused: std::sync::OnceLock<String>,
    /// Whether any request has been answered.
    answered: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi").field("endpoint", &self.cfg.endpoint).field("model", &self.cfg.model).finish()
    }
}

/// Why one answer was not accepted.
#[derive(Debug)]
enum Failure {
    /// Worth another attempt (network, 5xx, malformed answer).
    Retry(String),
    /// Rate limited: retry, waiting at least this long when the server said so.
    RateLimited(Option<Duration>),
    /// Not worth it for this report (400, ...).
    Fatal(String),
    /// Not worth it for any report (401, 403, 404, a URL the client cannot use).
    Refused(String),
}

impl OpenAi {
    /// A distiller for `cfg`, running its requests on `rt`.
    pub fn new(cfg: OpenAiConfig, rt: Handle) -> Result<Self, String> {
        let shown = ecamp_store::redact::url(&cfg.endpoint);
        match reqwest::Url::parse(&cfg.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(_) => return Err(format!("endpoint '{shown}' is not an http(s) URL with a host")),
            Err(e) => return Err(format!("endpoint '{shown}' is not a URL ({e}); e.g. https://api.openai.com/v1")),
        }
        let client = reqwest::Client::builder().timeout(cfg.timeout).build().map_err(|e| e.to_string())?;
        let names: Vec<&str> = lexicon::ENTITIES.iter().map(|e| e.name).collect();
        let prompt = format!("{PROMPT}{}.", names.join(", "));
        let prompt_hash = sha256_hex(prompt.as_bytes())[..16].to_string();
        if let Some(dir) = &cfg.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| format!("cache folder {}: {e}", dir.display()))?;
        }
        Ok(OpenAi {
            cfg,
            client,
            rt,
            prompt,
            prompt_hash,
            refused: std::sync::OnceLock::new(),
            answered: Default::default(),
        })
    }

    fn cache_path(&self, report: &str) -> Option<PathBuf> {
        let key = sha256_hex(
            format!("{}\n{}\n{}", self.cfg.model, self.prompt_hash, sha256_hex(report.as_bytes())).as_bytes(),
        );
        self.cfg.cache_dir.as_ref().map(|d| d.join(format!("{}.json", &key[..32])))
    }

    async fn ask(&self, report: &str) -> Result<Distilled, Failure> {
        let body = serde_json::json!({
            "model": self.cfg.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": self.prompt},
                {"role": "user", "content": report},
            ],
        });
        let url = format!("{}/chat/completions", self.cfg.endpoint.trim_end_matches('/'));
        let mut req = self.client.post(&url).header("content-type", "application/json").body(body.to_string());
        if let Some(key) = &self.cfg.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| {
            let why = format!("request failed: {}", without_url(&e));
            if e.is_builder() { Failure::Refused(why) } else { Failure::Retry(why) }
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.map_err(|e| Failure::Retry(format!("reading the answer: {}", without_url(&e))))?;
        if status.as_u16() == 429 {
            return Err(Failure::RateLimited(retry_after));
        }
        if status.is_server_error() {
            return Err(Failure::Retry(format!("HTTP {status}")));
        }
        if !status.is_success() {
            // Error bodies can echo parts of the key: scrub before keeping any of it.
            let body = ecamp_store::redact::scrub(&text.chars().take(200).collect::<String>());
            let body = match &self.cfg.api_key {
                Some(k) if !k.is_empty() => body.replace(k.as_str(), "***"),
                _ => body,
            };
            let why = format!("HTTP {status}: {body}");
            return Err(if matches!(status.as_u16(), 401 | 403 | 404) {
                Failure::Refused(why)
            } else {
                Failure::Fatal(why)
            });
        }
        let content = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["choices"][0]["message"]["content"].as_str().map(str::to_string))
            .ok_or_else(|| Failure::Retry("not a chat-completions answer".into()))?;
        parse_answer(&content).map_err(Failure::Retry)
    }

    async fn distill_one(&self, report: &str) -> Result<Distilled, String> {
        let cache = self.cache_path(report);
        if let Some(hit) =
            cache.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).and_then(|s| parse_answer(&s).ok())
        {
            return Ok(hit);
        }
        if let Some(why) = self.refused.get() {
            return Err(format!("not asked: the endpoint refused an earlier request ({why})"));
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(20));
        let mut last = String::new();
        let attempts = self.cfg.attempts.max(1);
        for attempt in 1..=attempts {
            match self.ask(report).await {
                Ok(d) => {
                    self.answered.store(true, std::sync::atomic::Ordering::Relaxed);
                    if let Some(p) = &cache {
                        // A cache that cannot be written only costs a future request.
                        let _ = std::fs::write(p, answer_json(&d));
                    }
                    return Ok(d);
                }
                Err(Failure::Fatal(m)) => return Err(m),
                Err(Failure::Refused(m)) => {
                    if !self.answered.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = self.refused.set(m.clone());
                    }
                    return Err(m);
                }
                Err(Failure::Retry(m)) => {
                    last = m;
                    if attempt < attempts {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Err(Failure::RateLimited(after)) => {
                    last = "HTTP 429 Too Many Requests".into();
                    if attempt < attempts {
                        // Honour Retry-After; without it, back off from a second, not from 200 ms.
                        let wait = after.unwrap_or_else(|| Duration::from_secs(1) + backoff.next_delay());
                        tokio::time::sleep(wait.min(Duration::from_secs(120))).await;
                    }
                }
            }
        }
        Err(format!("no valid answer after {attempts} attempts: {last}"))
    }
}

/// An HTTP error's message without the URL (which may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<endpoint>");
    }
    format!("{kind}: {}", ecamp_store::redact::scrub(&s))
}

/// Validates a model answer strictly and builds the context from it.
pub fn parse_answer(content: &str) -> Result<Distilled, String> {
    // Models sometimes wrap JSON in a code fence; accept exactly that and nothing looser.
    let trimmed = content.trim();
    let json = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or(trimmed);
    let v: serde_json::Value = serde_json::from_str(json.trim()).map_err(|e| format!("answer is not JSON: {e}"))?;
    let list = v.get("entities").and_then(|e| e.as_array()).ok_or("answer has no 'entities' list")?;
    let mut mentions: Vec<EntityMention> = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let name =
            e.get("name").and_then(|n| n.as_str()).ok_or(format!("entity {i} has no name"))?.to_ascii_lowercase();
        if lexicon::entity(&name).is_none() {
            return Err(format!("entity {i}: '{name}' is not an ECAMP entity"));
        }
        let status = match e.get("status").and_then(|s| s.as_str()) {
            Some("present") => Status::Present,
            Some("uncertain") => Status::Uncertain,
            Some("absent") => Status::Absent,
            other => return Err(format!("entity {i} ({name}): bad status {other:?}")),
        };
        let descriptors = match e.get("descriptors") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|d| match d.as_str().map(str::trim) {
                    Some(w) if !w.is_empty() && w.len() <= 40 && !w.contains(char::is_whitespace) => {
                        Ok(w.to_ascii_lowercase())
                    }
                    _ => Err(format!("entity {i} ({name}): descriptor {d} is not a single word")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("entity {i} ({name}): descriptors is not a list")),
        };
        if mentions.iter().any(|m| m.name == name) {
            return Err(format!("entity '{name}' listed twice"));
        }
        mentions.push(EntityMention { name, status, descriptors });
    }
    let context = mentions.iter().map(context_sentence).collect::<Vec<_>>().join(" ");
    let entities = mentions
        .into_iter()
        .map(|m| Entity { name: m.name, status: m.status.as_str().to_string(), descriptors: m.descriptors })
        .collect();
    Ok(Distilled { context, entities })
}

fn answer_json(d: &Distilled) -> String {
    serde_json::json!({ "entities": d.entities.iter().map(|e| serde_json::json!({
        "name": e.name, "status": e.status, "descriptors": e.descriptors,
    })).collect::<Vec<_>>() })
    .to_string()
}

impl Distiller for OpenAi {
    fn producer(&self) -> Producer {
        Producer {
            distiller: "openai".into(),
            model: Some(self.cfg.model.clone()),
            prompt_hash: Some(self.prompt_hash.clone()),
        }
    }

    fn distill_batch(&self, reports: &[&str]) -> Vec<Result<Distilled, String>> {
        self.rt.block_on(async {
            let mut out: Vec<(usize, Result<Distilled, String>)> = futures::stream::iter(reports.iter().enumerate())
                .map(|(i, r)| async move { (i, self.distill_one(r).await) })
                .buffer_unordered(self.cfg.concurrency.max(1))
                .collect()
                .await;
            out.sort_by_key(|(i, _)| *i);
            out.into_iter().map(|(_, r)| r).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_validated_strictly() {
        let ok = parse_answer(r#"{"entities":[{"name":"effusion","status":"present","descriptors":["small","right"]},{"name":"pneumothorax","status":"absent"}]}"#)
            .expect("valid");
        assert_eq!(ok.context, "There is pleural effusion. There is no pneumothorax.");
        assert_eq!(ok.entities[0].descriptors, vec!["small", "right"]);
        assert!(parse_answer("```json\n{\"entities\":[]}\n```").is_ok());
        for bad in [
            "There is effusion.",
            r#"{"entities":[{"name":"dragon","status":"present"}]}"#,
            r#"{"entities":[{"name":"effusion","status":"maybe"}]}"#,
            r#"{"entities":[{"name":"effusion","status":"present","descriptors":"small"}]}"#,
            r#"{"entities":[{"name":"effusion","status":"present","descriptors":["very small"]}]}"#,
            r#"{"entities":[{"name":"effusion","status":"present","descriptors":[""]}]}"#,
            r#"{"found":[]}"#,
        ] {
            assert!(parse_answer(bad).is_err(), "{bad}");
        }
    }
}
