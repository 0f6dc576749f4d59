//! The `openai` distiller against a real HTTP/1.1 chat-completions server on 127.0.0.1: the
//! request it sends, retries (malformed answers, timeouts, 5xx), no retry on 401, bounded
//! concurrency, input order, strict validation, the on-disk cache and provenance.
//!
//! The server runs on std threads (the workspace's tokio has no `net` feature) and picks its
//! behaviour from markers in the report text (the user message):
//! - `MALFORMED-ONCE`: the first answer is JSON with an unknown entity, later ones are valid;
//! - `ALWAYS-MALFORMED`: every answer is malformed (prose, or an unknown entity);
//! - `SLOW-ONCE`: the first request is answered only after the client hangs up (or `SLOW_CAP`),
//!   later ones at once;
//! - `HTTP-500-ONCE`: first a 500, then valid; `HTTP-401`: always 401;
//! - `DELAY-<ms>`: every answer waits `<ms>` milliseconds (a deliberate, slow model);
//! - `ID-<n>`: the valid answer carries the extra descriptor `id-<n>`, so answers can be told apart.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ecamp_ingest::distill::openai::{OpenAi, OpenAiConfig};
use ecamp_ingest::distill::{Distilled, Distiller};
use serde_json::{Value, json};

/// The answer to a normal report.
const VALID: &str = r#"{"entities":[{"name":"effusion","status":"present","descriptors":["small"]},{"name":"pneumothorax","status":"absent","descriptors":[]}]}"#;
/// The context the distiller must build from `VALID`.
const CONTEXT: &str = "There is pleural effusion. There is no pneumothorax.";
/// The model name the clients are configured with.
const MODEL: &str = "test-model";
/// The key the clients send.
const KEY: &str = "test-key";
/// Timeout of one request in the timeout test.
const SHORT_TIMEOUT: Duration = Duration::from_millis(500);
/// Timeout of one request elsewhere (generous, so a loaded machine causes no stray retry).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a `SLOW-ONCE` answer waits for the client to hang up.
const SLOW_CAP: Duration = Duration::from_secs(10);

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    version: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

/// What the server observed, shared with the test.
#[derive(Default)]
struct State {
    /// Requests per report (the user message).
    counts: Mutex<HashMap<String, usize>>,
    /// Every well-formed request, in arrival order.
    seen: Mutex<Vec<Seen>>,
    /// Reports in the order their answers were written.
    finished: Mutex<Vec<String>>,
    /// Requests between "body read" and "answer written".
    in_flight: AtomicUsize,
    /// The most requests in flight at once.
    max_in_flight: AtomicUsize,
    /// `SLOW-ONCE` requests whose client hung up before the answer.
    hung_up: AtomicUsize,
    /// Requests that were not `POST /v1/chat/completions` with a chat body.
    rejected: AtomicUsize,
}

impl State {
    fn count(&self, report: &str) -> usize {
        self.counts.lock().unwrap().get(report).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.counts.lock().unwrap().values().sum()
    }
}

/// A chat-completions server on a free port of 127.0.0.1; stops and joins its threads on drop.
struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handlers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (state, stop, handlers) = (state.clone(), stop.clone(), handlers.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    let h = std::thread::spawn(move || {
                        // A connection the client dropped mid-way is its business, not ours.
                        let _ = handle(stream, &state);
                    });
                    handlers.lock().unwrap().push(h);
                }
            })
        };
        Server { addr, state, stop, acceptor: Some(acceptor), handlers }
    }

    /// The base URL the client is configured with.
    fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the acceptor sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let handlers = std::mem::take(&mut *self.handlers.lock().unwrap());
        for h in handlers {
            let _ = h.join();
        }
    }
}

/// Decrements the in-flight count however the handler ends.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection: one request, one answer, then close.
fn handle(stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // the shutdown wake-up, or a client that gave up before sending
    }
    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;

    let mut parts = request_line.split_whitespace();
    let (method, path, version) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut stream = stream;
    if method != "POST" || path != "/v1/chat/completions" {
        state.rejected.fetch_add(1, Ordering::SeqCst);
        return respond(&mut stream, 404, "Not Found", r#"{"error":{"message":"no such route"}}"#);
    }
    let parsed: Option<(Value, String)> = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        let report = v["messages"].as_array()?.iter().find(|m| m["role"] == "user")?["content"].as_str()?.to_string();
        Some((v, report))
    });
    let Some((body, report)) = parsed else {
        state.rejected.fetch_add(1, Ordering::SeqCst);
        return respond(&mut stream, 400, "Bad Request", r#"{"error":{"message":"not a chat request"}}"#);
    };
    let n = {
        let mut counts = state.counts.lock().unwrap();
        let c = counts.entry(report.clone()).or_default();
        *c += 1;
        *c
    };
    state.seen.lock().unwrap().push(Seen {
        method,
        path,
        version,
        authorization: headers.get("authorization").cloned(),
        content_type: headers.get("content-type").cloned(),
        body,
    });
    let in_flight = InFlight::enter(state);

    if let Some(ms) = marker_number(&report, "DELAY-") {
        std::thread::sleep(Duration::from_millis(ms)); // a deliberately slow model
    }
    if report.contains("SLOW-ONCE") && n == 1 {
        // Answer only once the client has given up (it closes the connection), or after the cap.
        stream.set_read_timeout(Some(SLOW_CAP))?;
        let mut byte = [0u8; 1];
        if matches!(stream.read(&mut byte), Ok(0)) {
            state.hung_up.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (code, reason, body): (u16, &str, String) = if report.contains("HTTP-401") {
        (401, "Unauthorized", r#"{"error":{"message":"invalid api key"}}"#.into())
    } else if report.contains("HTTP-500-ONCE") && n == 1 {
        (500, "Internal Server Error", r#"{"error":{"message":"overloaded"}}"#.into())
    } else if report.contains("ALWAYS-MALFORMED") {
        let content = if n % 2 == 1 {
            "There is a small pleural effusion and no pneumothorax."
        } else {
            r#"{"entities":[{"name":"dragon","status":"present","descriptors":[]}]}"#
        };
        (200, "OK", completion(content))
    } else if report.contains("MALFORMED-ONCE") && n == 1 {
        (200, "OK", completion(r#"{"entities":[{"name":"dragon","status":"present"}]}"#))
    } else {
        (200, "OK", completion(&valid_answer(&report)))
    };
    // Bookkeeping before the answer goes out: once the client has its answer it may send the next
    // request at once, and must find this one already finished and out of flight.
    state.finished.lock().unwrap().push(report);
    drop(in_flight);
    respond(&mut stream, code, reason, &body)
}

/// The number after `prefix` in `text`, if any.
fn marker_number(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `VALID`, with the descriptor `id-<n>` added to effusion when the report carries `ID-<n>`.
fn valid_answer(report: &str) -> String {
    match marker_number(report, "ID-") {
        None => VALID.to_string(),
        Some(id) => json!({"entities": [
            {"name": "effusion", "status": "present", "descriptors": ["small", format!("id-{id}")]},
            {"name": "pneumothorax", "status": "absent", "descriptors": []},
        ]})
        .to_string(),
    }
}

/// A chat-completions response body whose first choice says `content`.
fn completion(content: &str) -> String {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
    .to_string()
}

/// Writes a complete HTTP/1.1 answer and closes the connection.
fn respond(stream: &mut TcpStream, status: u16, reason: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

/// The distiller with the runtime it blocks on; the distiller drops first.
struct Client {
    openai: OpenAi,
    _rt: tokio::runtime::Runtime,
}

/// The test configuration (key, 3 in flight, 3 attempts), adjusted by `f`.
fn config(server: &Server, f: impl FnOnce(&mut OpenAiConfig)) -> OpenAiConfig {
    let mut cfg = OpenAiConfig::new(server.endpoint(), MODEL);
    cfg.api_key = Some(KEY.into());
    cfg.concurrency = 3;
    cfg.attempts = 3;
    cfg.timeout = TIMEOUT;
    cfg.cache_dir = None;
    f(&mut cfg);
    cfg
}

fn client(cfg: OpenAiConfig) -> Client {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let openai = OpenAi::new(cfg, rt.handle().clone()).expect("distiller");
    Client { openai, _rt: rt }
}

/// Runs one batch from this plain (non-async) test thread.
fn run(c: &Client, reports: &[&str]) -> Vec<Result<Distilled, String>> {
    c.openai.distill_batch(reports)
}

fn ok(r: &Result<Distilled, String>) -> &Distilled {
    r.as_ref().unwrap_or_else(|e| panic!("expected an answer, got: {e}"))
}

/// A normal report yields exactly the expected context and entities, from one faithful request.
#[test]
fn normal_report_gives_the_context_from_one_faithful_request() {
    let server = Server::start();
    let c = client(config(&server, |_| {}));
    let report = "Small left pleural effusion. No pneumothorax.";
    let out = run(&c, &[report]);
    assert_eq!(out.len(), 1);
    let d = ok(&out[0]);
    assert_eq!(d.context, CONTEXT);
    assert_eq!(d.entities.len(), 2);
    assert_eq!((d.entities[0].name.as_str(), d.entities[0].status.as_str()), ("effusion", "present"));
    assert_eq!(d.entities[0].descriptors, vec!["small"]);
    assert_eq!((d.entities[1].name.as_str(), d.entities[1].status.as_str()), ("pneumothorax", "absent"));
    assert!(d.entities[1].descriptors.is_empty());

    assert_eq!(server.state.count(report), 1);
    assert_eq!(server.state.rejected.load(Ordering::SeqCst), 0);
    let seen = server.state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!((s.method.as_str(), s.path.as_str(), s.version.as_str()), ("POST", "/v1/chat/completions", "HTTP/1.1"));
    assert_eq!(s.authorization.as_deref(), Some("Bearer test-key"));
    assert_eq!(s.content_type.as_deref(), Some("application/json"));
    assert_eq!(s.body["model"], MODEL);
    assert_eq!(s.body["temperature"], 0);
    let messages = s.body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    let prompt = messages[0]["content"].as_str().expect("system prompt");
    assert!(prompt.contains("effusion") && prompt.contains("pneumothorax"), "{prompt}");
    assert_eq!(messages[1]["role"], "user");
    assert_eq!(messages[1]["content"], report);
}

/// Without a key the client sends no Authorization header at all.
#[test]
fn no_key_sends_no_authorization_header() {
    let server = Server::start();
    let c = client(config(&server, |cfg| cfg.api_key = None));
    let out = run(&c, &["Effusion, no pneumothorax."]);
    assert_eq!(ok(&out[0]).context, CONTEXT);
    let seen = server.state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization, None);
}

/// `producer()` records distiller "openai", the model and a stable 16-hex-digit prompt hash.
#[test]
fn producer_records_openai_the_model_and_a_prompt_hash() {
    let server = Server::start();
    let a = client(config(&server, |_| {}));
    let b = client(config(&server, |cfg| cfg.model = "another-model".into()));
    let p = a.openai.producer();
    assert_eq!(p.distiller, "openai");
    assert_eq!(p.model.as_deref(), Some(MODEL));
    let hash = p.prompt_hash.clone().expect("prompt hash");
    assert_eq!(hash.len(), 16, "{hash}");
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    let q = b.openai.producer();
    assert_eq!(q.model.as_deref(), Some("another-model"));
    assert_eq!(q.prompt_hash, p.prompt_hash, "the prompt, not the model, decides the hash");
    assert_eq!(server.state.total(), 0, "provenance costs no request");
}

/// A malformed first answer (unknown entity) is retried and the valid second one is used.
#[test]
fn a_malformed_answer_is_retried_then_accepted() {
    let server = Server::start();
    let c = client(config(&server, |_| {}));
    let report = "MALFORMED-ONCE: small effusion, no pneumothorax.";
    let out = run(&c, &[report]);
    assert_eq!(ok(&out[0]).context, CONTEXT);
    assert_eq!(server.state.count(report), 2);
}

/// Answers that are always malformed end as an error after every attempt, and are never cached.
#[test]
fn an_always_malformed_answer_is_a_failure_not_a_context() {
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start();
    let c = client(config(&server, |cfg| cfg.cache_dir = Some(cache.path().to_path_buf())));
    let bad = "ALWAYS-MALFORMED: effusion?";
    let good = "Effusion. No pneumothorax.";
    let out = run(&c, &[bad, good]);
    let err = out[0].as_ref().expect_err("a malformed answer must not become a context");
    assert!(err.contains("no valid answer after 3 attempts"), "{err}");
    assert_eq!(server.state.count(bad), 3, "one request per attempt");
    assert_eq!(ok(&out[1]).context, CONTEXT);
    let files = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(files, 1, "only the valid answer is cached");

    // A re-run asks again for the failure only.
    let again = run(&c, &[bad, good]);
    assert!(again[0].is_err());
    assert_eq!(again[1], out[1]);
    assert_eq!(server.state.count(bad), 6);
    assert_eq!(server.state.count(good), 1);
}

/// A first answer slower than the client's timeout is abandoned and the retry succeeds.
#[test]
fn a_slow_answer_times_out_and_is_retried() {
    let server = Server::start();
    let c = client(config(&server, |cfg| cfg.timeout = SHORT_TIMEOUT));
    let report = "SLOW-ONCE: effusion, no pneumothorax.";
    let started = Instant::now();
    let out = run(&c, &[report]);
    let took = started.elapsed();
    assert_eq!(ok(&out[0]).context, CONTEXT);
    assert_eq!(server.state.count(report), 2);
    assert_eq!(server.state.hung_up.load(Ordering::SeqCst), 1, "the client gave up on the slow answer");
    assert!(took >= SHORT_TIMEOUT, "{took:?}");
    assert!(took < SLOW_CAP / 2, "the client waited for the slow answer: {took:?}");
}

/// A 500 is retried and the valid second answer is used.
#[test]
fn a_server_error_is_retried() {
    let server = Server::start();
    let c = client(config(&server, |_| {}));
    let report = "HTTP-500-ONCE: effusion, no pneumothorax.";
    let out = run(&c, &[report]);
    assert_eq!(ok(&out[0]).context, CONTEXT);
    assert_eq!(server.state.count(report), 2);
}

/// A 401 is an error at once: one request, no retry, and the key is not echoed.
#[test]
fn an_unauthorised_answer_fails_without_retrying() {
    let server = Server::start();
    let c = client(config(&server, |_| {}));
    let report = "HTTP-401: effusion.";
    let out = run(&c, &[report]);
    let err = out[0].as_ref().expect_err("401 must fail");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(KEY), "{err}");
    assert_eq!(server.state.count(report), 1);
    // A refused key refuses every report: later ones are not sent.
    let later = "Plain: effusion, no pneumothorax.";
    let out = run(&c, &[later]);
    let err = out[0].as_ref().expect_err("not asked after a 401");
    assert!(err.contains("not asked") && err.contains("401"), "{err}");
    assert_eq!(server.state.count(later), 0);
}

/// After an answer, a refusal belongs to its report (a proxy's 403 on one body): later reports
/// are still asked.
#[test]
fn a_refusal_after_an_answer_fails_only_its_report() {
    let server = Server::start();
    let c = client(config(&server, |_| {}));
    assert!(run(&c, &["Report ID-1: effusion."])[0].is_ok());
    assert!(run(&c, &["HTTP-401: effusion."])[0].is_err());
    assert!(run(&c, &["Report ID-2: effusion."])[0].is_ok());
}

/// An endpoint that is not an http(s) URL is refused when the distiller is built.
#[test]
fn an_endpoint_that_is_not_a_url_is_refused_up_front() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for endpoint in ["127.0.0.1:18765/v1", "", "ftp://host/v1"] {
        let mut cfg = OpenAiConfig::new(endpoint, "m");
        cfg.cache_dir = None;
        let err = OpenAi::new(cfg, rt.handle().clone()).expect_err(endpoint);
        assert!(err.contains("endpoint"), "{err}");
    }
}

/// With concurrency 3, twelve slow requests overlap but never more than 3 are in flight.
#[test]
fn concurrency_stays_bounded() {
    let server = Server::start();
    let c = client(config(&server, |cfg| cfg.concurrency = 3));
    let reports: Vec<String> = (0..12).map(|i| format!("Report ID-{i} DELAY-100: effusion.")).collect();
    let refs: Vec<&str> = reports.iter().map(String::as_str).collect();
    let out = run(&c, &refs);
    assert_eq!(out.len(), 12);
    for r in &out {
        assert_eq!(ok(r).context, CONTEXT);
    }
    assert_eq!(server.state.total(), 12);
    let max = server.state.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} requests in flight with concurrency 3");
    assert!(max >= 2, "requests never overlapped (max {max}), so the bound was not exercised");
}

/// Results come back in input order even when the server finishes them in another order.
#[test]
fn results_come_back_in_input_order() {
    let server = Server::start();
    let c = client(config(&server, |cfg| cfg.concurrency = 12));
    // Earlier reports are slower, so later ones finish first.
    let reports: Vec<String> = (0..12).map(|i| format!("Report ID-{i} DELAY-{}: effusion.", (12 - i) * 25)).collect();
    let refs: Vec<&str> = reports.iter().map(String::as_str).collect();
    let out = run(&c, &refs);
    assert_eq!(out.len(), 12);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(ok(r).entities[0].descriptors, vec!["small".to_string(), format!("id-{i}")], "result {i}");
    }
    let finished = server.state.finished.lock().unwrap().clone();
    assert_eq!(finished.len(), 12);
    assert_ne!(finished, reports, "the server finished in input order; the test proves nothing");
}

/// Every marker in one batch: each report gets its own outcome, in order.
#[test]
fn a_mixed_batch_keeps_each_outcome_in_place() {
    let server = Server::start();
    let c = client(config(&server, |_| {}));
    // (A 401 refuses the whole endpoint, so it has its own test.)
    let reports = [
        "Plain: effusion, no pneumothorax.",
        "MALFORMED-ONCE: effusion.",
        "ALWAYS-MALFORMED: effusion.",
        "HTTP-500-ONCE: effusion.",
        "Report ID-7: effusion.",
    ];
    let out = run(&c, &reports);
    assert_eq!(out.len(), reports.len());
    assert_eq!(ok(&out[0]).context, CONTEXT);
    assert_eq!(ok(&out[1]).context, CONTEXT);
    assert!(out[2].as_ref().is_err_and(|e| e.contains("3 attempts")));
    assert_eq!(ok(&out[3]).context, CONTEXT);
    assert_eq!(ok(&out[4]).entities[0].descriptors, vec!["small", "id-7"]);
    let counts: Vec<usize> = reports.iter().map(|r| server.state.count(r)).collect();
    assert_eq!(counts, vec![1, 2, 3, 2, 1]);
}

/// A second run over the same reports is served from the cache; another model misses it.
#[test]
fn the_cache_answers_a_rerun_and_a_new_model_misses_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("distill");
    let server = Server::start();
    let reports: Vec<String> = (0..5).map(|i| format!("Report ID-{i}: effusion, no pneumothorax.")).collect();
    let refs: Vec<&str> = reports.iter().map(String::as_str).collect();

    let first = run(&client(config(&server, |cfg| cfg.cache_dir = Some(dir.clone()))), &refs);
    assert!(first.iter().all(Result::is_ok));
    assert_eq!(server.state.total(), 5);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 5, "one cached answer per report");

    // A fresh distiller (same model, prompt and folder) reads the answers back from disk.
    let second = run(&client(config(&server, |cfg| cfg.cache_dir = Some(dir.clone()))), &refs);
    assert_eq!(server.state.total(), 5, "a cached re-run makes no request");
    assert_eq!(second, first);

    // Another model is another cache key.
    let other = client(config(&server, |cfg| {
        cfg.cache_dir = Some(dir.clone());
        cfg.model = "another-model".into();
    }));
    let third = run(&other, &refs);
    assert_eq!(third, first);
    assert_eq!(server.state.total(), 10);
    for r in &reports {
        assert_eq!(server.state.count(r), 2, "{r}");
    }
    let models: Vec<String> =
        server.state.seen.lock().unwrap().iter().map(|s| s.body["model"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(models.iter().filter(|m| *m == "another-model").count(), 5);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 10);
}
