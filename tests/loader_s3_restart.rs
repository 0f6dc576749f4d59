//! The loader survives an S3 outage: a private moto server is killed mid-epoch and a new one
//! started with the same bucket and objects (as a restarted real store would still have them);
//! the epoch completes with every sample exactly once, in the same order as an uninterrupted run.
//!
//! The loader talks to a TCP forwarder on a fixed port: while the server is down the forwarder
//! drops every connection, and it only forwards to the new server once its objects are restored
//! (moto keeps its state in memory, so a bare restart would come back empty). Its own test binary
//! because it points the process's S3 endpoint at that private endpoint.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{runtime, service_env};
use ecamp_ingest::phantom::{PhantomSpec, generate};
use ecamp_loader::text::{TextConfig, TextPrep};
use ecamp_loader::{Batch, Cursor, Loader, LoaderConfig};
use ecamp_store::shard::sha256_hex;
use ecamp_store::{Dataset, Location, SampleRow, ShardOptions, SnapshotRef};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mimic_wordpiece.json");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// Forwards connections on a port to `target` (0 = down: connections are dropped at once).
fn forwarder(target: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let to = target.load(Ordering::SeqCst);
            let server = if to == 0 { None } else { TcpStream::connect(("127.0.0.1", to)).ok() };
            let Some(server) = server else {
                continue; // dropped: the endpoint is down
            };
            for (mut from, mut into) in
                [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
            {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    port
}

fn start_moto(python: &str, port: u16) -> Child {
    let child = Command::new(python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not come up on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let made = Command::new(python)
        .args([
            "-c",
            &format!(
                "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', \
                 aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket='restart')"
            ),
        ])
        .status()
        .expect("create bucket");
    assert!(made.success());
    child
}

fn rows(n: u64) -> Vec<SampleRow> {
    (0..n)
        .map(|i| {
            let p = generate(&PhantomSpec { seed: 9, size: 64 }, i);
            let mut jpeg = Vec::new();
            jpeg_encoder::Encoder::new(&mut jpeg, 90)
                .encode(&p.pixels, 64, 64, jpeg_encoder::ColorType::Luma)
                .expect("encode");
            SampleRow {
                sample_id: p.sample_id,
                subject_id: None,
                study_id: None,
                view: None,
                image_sha256: sha256_hex(&jpeg),
                image: jpeg,
                image_path: None,
                width: 64,
                height: 64,
                orig_width: 64,
                orig_height: 64,
                report: p.report,
                source: "phantom".into(),
                ingested_at_us: 0,
            }
        })
        .collect()
}

fn ids(batches: &[Batch]) -> Vec<String> {
    batches.iter().flat_map(|b| b.sample_ids.clone()).collect()
}

#[test]
fn an_s3_server_restarted_mid_epoch_loses_and_repeats_nothing() {
    let Some(python) = service_env("ECAMP_PYTHON", "a Python with moto") else { return };
    let Ok(tok) = tokenizers::Tokenizer::from_file(TOKENIZER) else {
        assert!(!common::in_ci(), "official tokenizer missing at {TOKENIZER}");
        return;
    };
    let text = TextPrep::new(&tok, TextConfig::default()).expect("text");
    let port = free_port();
    let target = Arc::new(AtomicU16::new(port));
    let endpoint = forwarder(target.clone());
    // SAFETY: this binary's only test sets the variables before any other thread reads them.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{endpoint}"));
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let mut moto = start_moto(&python, port);
    let url = "s3://restart/ds";
    let rt = runtime();
    let saved: Vec<(object_store::path::Path, Bytes)> = rt.block_on(async {
        let ds = Dataset::create(url)
            .await
            .expect("create")
            .with_shard_options(ShardOptions { row_group_bytes: 8 << 10, ..Default::default() });
        let all = rows(96);
        for chunk in all.chunks(32) {
            ds.append_samples(chunk, None).await.expect("append");
        }
        let store = Location::parse("s3://restart").expect("loc").store().clone();
        let metas: Vec<_> = store.list(None).try_collect().await.expect("list");
        let mut saved = Vec::new();
        for m in metas {
            let bytes = store.get(&m.location).await.expect("get").bytes().await.expect("bytes");
            saved.push((m.location, bytes));
        }
        saved
    });

    let cfg = LoaderConfig {
        batch_size: 4,
        workers: 2,
        shuffle_buffer: 8,
        prefetch_bytes: 16 << 10,
        prefetch_batches: 1,
        io_concurrency: 2,
        io_retries: 60,
        ..Default::default()
    };
    let loader = Loader::open(url, &SnapshotRef::LATEST, text, cfg).expect("open");
    let uninterrupted: Vec<Batch> =
        loader.epoch(Cursor::default()).expect("epoch").map(|b| b.expect("batch")).collect();
    assert_eq!(uninterrupted.len(), 24);

    let mut epoch = loader.epoch(Cursor::default()).expect("epoch");
    let mut got: Vec<Batch> = epoch.by_ref().take(3).map(|b| b.expect("batch")).collect();
    target.store(0, Ordering::SeqCst);
    moto.kill().expect("kill moto");
    let _ = moto.wait();
    let fetched_at_kill = epoch.telemetry().bytes_fetched;
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let port = free_port();
        let moto = start_moto(&python, port);
        // Restore through a client of its own (the process endpoint still points at the forwarder).
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_bucket_name("restart")
            .build()
            .expect("restore client");
        runtime().block_on(async {
            for (path, bytes) in saved {
                store.put(&path, PutPayload::from(bytes)).await.expect("restore");
            }
        });
        target.store(port, Ordering::SeqCst);
        moto
    });
    got.extend(epoch.by_ref().map(|b| b.expect("batch after the restart")));
    let mut moto = restarter.join().expect("restarter");
    let t = epoch.telemetry();
    let _ = moto.kill();
    let _ = moto.wait();
    let table: u64 = loader.snapshot().files().map(|(_, f)| f.size).sum();
    assert!(
        fetched_at_kill < table / 2,
        "most of the epoch was still unread at the kill ({fetched_at_kill} of {table})"
    );
    assert_eq!(ids(&got), ids(&uninterrupted), "same samples in the same order, none lost or repeated");
    eprintln!("restart test: {} fetch retries, {} bytes fetched", t.fetch_retries, t.bytes_fetched);
}
