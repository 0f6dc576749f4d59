//! `ecamp demo`: the main job end to end on built-in data — phantom studies ingested into a local
//! dataset (rules distiller), a vocabulary, a pinned snapshot, `tiny` pre-training on the CPU, SR
//! windows from the trained model, and a linear probe on held-out phantoms against a randomly
//! initialised encoder. Every step is the `ecamp` command a user would type, run in-process, and
//! `DIR/report.md` lists them so the run can be repeated by hand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use ecamp_eval::labels::{Uncertain, phantom_labels};
use ecamp_model::eval::features::centre_crop;
use ecamp_model::eval::windows::{centre_window, covers};
use ecamp_store::{Dataset, SnapshotRef};

use super::downstream::{Cpu, label_rows, write_json};
use super::probe::{ProbeResult, evaluate};
use super::{Cli, annotate, plots};

/// Marker that makes a folder the demo's own, so a re-run may clear it.
const MARKER: &str = "ecamp-demo.json";

/// The demo's peak pre-training learning rate (see `Args::lr`).
const DEMO_LR: f64 = 3e-3;

/// Run the whole job on built-in phantoms: ingest, pre-train, annotate, probe, report.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Writes DIR/dataset (pre-training phantoms), DIR/heldout (evaluation phantoms, other seed),
DIR/run (checkpoints, metrics, plots), DIR/report.md, DIR/results.json and DIR/auc.png.
Re-running clears a folder that an earlier demo wrote (it carries ecamp-demo.json) and refuses
any other non-empty folder.")]
pub struct Args {
    /// Folder for the datasets, the run and the report.
    #[arg(long, default_value = "ecamp-demo")]
    dir: PathBuf,
    /// A smoke version in well under two minutes (fewer phantoms, a short pre-training).
    #[arg(long)]
    quick: bool,
    /// Pre-training phantoms [default: 2000; 256 with --quick].
    #[arg(value_parser = super::parse::count::<u64>, long)]
    studies: Option<u64>,
    /// Held-out phantoms for the probe [default: 2000 (a 400-image test split); 300 with --quick].
    #[arg(value_parser = super::parse::count::<u64>, long)]
    heldout: Option<u64>,
    /// Pre-training epochs [default: 20 (2,500 steps, ~5 min on 2 cores); 4 with --quick].
    #[arg(value_parser = super::parse::count::<u64>, long)]
    epochs: Option<u64>,
    /// Peak pre-training learning rate. Above spec-tiny's 1e-3: in 1,250 steps, 3e-3 adds
    /// 0.01–0.02 mean probe AUC on two snapshots, and the gain grows with longer training
    /// (BENCHMARKS.md has the sweep).
    #[arg(value_parser = super::parse::positive, long, default_value_t = DEMO_LR)]
    lr: f64,
    /// Phantom side in pixels (the tiny model crops and resizes to its input).
    #[arg(value_parser = super::parse::count::<u32>, long, default_value_t = 64)]
    image_size: u32,
}

/// Parses one command's arguments as the CLI would.
#[derive(Debug, Parser)]
struct ArgsOf<T: clap::Args> {
    #[command(flatten)]
    inner: T,
}

/// The demo's plan: sizes and the command lines it runs.
struct Plan {
    dir: PathBuf,
    dataset: String,
    heldout: String,
    run: PathBuf,
    studies: u64,
    held: u64,
    epochs: u64,
    lr: f64,
    image_size: u32,
}

impl Plan {
    fn new(a: &Args) -> Self {
        let url = |p: &Path| format!("file://{}", p.display());
        let dir = std::path::absolute(&a.dir).unwrap_or_else(|_| a.dir.clone());
        Self {
            dataset: url(&dir.join("dataset")),
            heldout: url(&dir.join("heldout")),
            run: dir.join("run"),
            studies: a.studies.unwrap_or(if a.quick { 256 } else { 2000 }),
            held: a.heldout.unwrap_or(if a.quick { 300 } else { 2000 }),
            epochs: a.epochs.unwrap_or(if a.quick { 4 } else { 20 }),
            lr: a.lr,
            image_size: a.image_size,
            dir,
        }
    }

    fn ingest(&self, url: &str, count: u64, seed: u64) -> Vec<String> {
        let size = self.image_size.to_string();
        argv(&["ingest", "--dataset", url, "--source", &format!("phantom:{count}:{seed}"), "--image-size", &size, "-q"])
    }

    fn vocab(&self) -> Vec<String> {
        argv(&["vocab", "build", "--dataset", &self.dataset, "--vocab-size", "5000"])
    }

    fn pretrain(&self, snapshot: &str) -> Vec<String> {
        let (epochs, run, lr) = (self.epochs.to_string(), self.run.display().to_string(), self.lr.to_string());
        let warmup = (self.epochs as f64 / 5.0).max(0.5).to_string();
        argv(&[
            "pretrain",
            "--dataset",
            &self.dataset,
            "--snapshot",
            snapshot,
            "--preset",
            "tiny",
            "--out",
            &run,
            "--epochs",
            &epochs,
            "--horizon-epochs",
            &epochs,
            "--warmup-epochs",
            &warmup,
            "--lr",
            &lr,
            "-q",
        ])
    }

    fn annotate(&self, snapshot: &str) -> Vec<String> {
        let run = self.run.display().to_string();
        argv(&["annotate-windows", "--dataset", &self.dataset, "--snapshot", snapshot, "--checkpoint", &run])
    }

    fn probe(&self, model: &[&str]) -> Vec<String> {
        let mut v = argv(&["probe", "--dataset", &self.heldout, "--labels", "phantom"]);
        v.extend(argv(model));
        v
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// A command line for the report, shell-quoted where needed.
fn shell(args: &[String]) -> String {
    let quote = |s: &String| {
        if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c)) { s.clone() } else { format!("'{s}'") }
    };
    std::iter::once("ecamp".to_string()).chain(args.iter().map(quote)).collect::<Vec<_>>().join(" ")
}

/// Runs one `ecamp` command in-process.
async fn invoke(args: &[String]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("ecamp".to_string()).chain(args.iter().cloned()))
        .with_context(|| format!("demo step `{}` does not parse", shell(args)))?;
    let code = Box::pin(super::run(cli)).await.with_context(|| format!("demo step `{}` failed", shell(args)))?;
    if code != ExitCode::SUCCESS {
        bail!("demo step `{}` exited with {code:?}", shell(args));
    }
    Ok(())
}

/// Parses one command's arguments into its `Args` (skipping the command words).
fn parse<T: clap::Args>(args: &[String], words: usize) -> anyhow::Result<T> {
    let it = std::iter::once("ecamp".to_string()).chain(args.iter().skip(words).cloned());
    Ok(ArgsOf::<T>::try_parse_from(it).with_context(|| format!("demo step `{}` does not parse", shell(args)))?.inner)
}

/// Makes `dir` ready: created, or cleared when an earlier demo wrote it.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.join(MARKER).is_file() {
        for sub in ["dataset", "heldout", "run"] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("cannot clear {}", p.display()))?;
            }
        }
    } else if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} is not empty and was not written by `ecamp demo`; choose another --dir", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "{\"written_by\": \"ecamp demo\"}\n")
        .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let plan = Plan::new(&a);
    prepare(&plan.dir)?;
    let mut commands: Vec<String> = Vec::new();
    let step = |n: usize, what: &str| eprintln!("\n[{n}/6] {what} ({:.0} s)", started.elapsed().as_secs_f64());

    step(1, &format!("ingesting {} + {} phantom studies", plan.studies, plan.held));
    for args in [plan.ingest(&plan.dataset, plan.studies, 0), plan.ingest(&plan.heldout, plan.held, 1)] {
        invoke(&args).await?;
        commands.push(shell(&args));
    }
    step(2, "building the vocabulary and pinning a snapshot");
    let vocab = plan.vocab();
    invoke(&vocab).await?;
    commands.push(shell(&vocab));
    let ds = Dataset::open(&plan.dataset).await?;
    let snap = super::snapshot::pin_snapshot(&ds, &SnapshotRef::LATEST, None).await?;
    commands.push(format!("ecamp snapshot pin --dataset {}", plan.dataset));

    step(3, "pre-training the tiny model on the CPU");
    let pretrain = plan.pretrain(&snap.id);
    let t = Instant::now();
    invoke(&pretrain).await?;
    let pretrain_s = t.elapsed().as_secs_f64();
    commands.push(shell(&pretrain));

    step(4, "annotating SR windows from entity attention");
    let ann_args = plan.annotate(&snap.id);
    let annotated = annotate::annotate(&parse::<annotate::Args>(&ann_args, 1)?).await?;
    commands.push(shell(&ann_args));
    let coverage = window_coverage(&ds, &snap, &annotated).await?;
    eprintln!(
        "windows: {} from attention, {} centre; single-finding phantoms covered: {:.1}% (centre window {:.1}%, n = {}); \
         where the choice matters: {:.1}% (centre window {:.1}%, n = {})",
        annotated.from_attention,
        annotated.centre,
        100.0 * coverage.attention,
        100.0 * coverage.centre,
        coverage.n,
        100.0 * coverage.attention_decisive,
        100.0 * coverage.centre_decisive,
        coverage.n_decisive
    );

    step(5, "linear probe on held-out phantoms: pre-trained vs random init");
    let run = plan.run.display().to_string();
    let probe_pre = plan.probe(&["--checkpoint", &run]);
    let probe_rand = plan.probe(&["--random", "--preset", "tiny"]);
    let first = parse::<super::probe::Args>(&probe_pre, 1)?;
    let task = first.task.open().await?;
    let mut results = Vec::new();
    for args in [&probe_pre, &probe_rand] {
        let a = parse::<super::probe::Args>(args, 1)?;
        let model = a.task.model.load::<Cpu>(&Default::default())?;
        results.push(evaluate(&task.ds, &task.snap, &task.labels, &model, &a.task.split, &a.probe).await?);
        commands.push(shell(args));
    }

    step(6, "writing the report");
    let total_s = started.elapsed().as_secs_f64();
    let report = Report { plan: &plan, snapshot: &snap.id, results: &results, coverage, pretrain_s, total_s, commands };
    let table = report.table();
    println!("\n{table}");
    report.write(&table)?;
    println!("report: {}", plan.dir.join("report.md").display());
    Ok(ExitCode::SUCCESS)
}

/// How often the attention window covers the drawn finding.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Coverage {
    /// Phantoms with exactly one drawn finding (one box).
    n: usize,
    /// Fraction whose attention window contains the finding's box centre.
    attention: f64,
    /// The same for the centre window (the fixed baseline).
    centre: f64,
    /// Of those, the phantoms where some candidate window misses the finding (where the choice
    /// matters; with a 6-of-8 window most lung findings are inside every candidate).
    n_decisive: usize,
    /// Fraction of the decisive phantoms covered by the attention window.
    attention_decisive: f64,
    /// The same for the centre window.
    centre_decisive: f64,
}

/// Window coverage over the single-finding phantoms of the pre-training snapshot.
async fn window_coverage(
    ds: &Dataset,
    snap: &ecamp_store::Snapshot,
    annotated: &annotate::Annotated,
) -> anyhow::Result<Coverage> {
    let labels = phantom_labels(label_rows(ds, snap).await?, Uncertain::Ones, None)?;
    let config = ecamp_model::EcampConfig::tiny();
    let centre = centre_window(config.grid(), config.sr_window);
    let (mut n, mut hit, mut hit_centre) = (0usize, 0usize, 0usize);
    let (mut nd, mut hit_d, mut hit_centre_d) = (0usize, 0usize, 0usize);
    let span = (config.grid() - config.sr_window) as i32;
    for item in &labels.items {
        let (Some(&w), [bbox], Some((width, height))) =
            (annotated.windows.get(&item.key), item.boxes.as_slice(), item.size)
        else {
            continue;
        };
        // Box in encoder-input pixels: the centre square crop, resized to img_size.
        let (top, left, side, _) = centre_crop(width, height);
        let scale = config.img_size as f32 / side as f32;
        let b = [
            (bbox[0] - left as f32) * scale,
            (bbox[1] - top as f32) * scale,
            (bbox[2] - left as f32) * scale,
            (bbox[3] - top as f32) * scale,
        ];
        let (a, c) = (covers(w, config.sr_window, config.patch, b), covers(centre, config.sr_window, config.patch, b));
        n += 1;
        hit += usize::from(a);
        hit_centre += usize::from(c);
        let candidates = (0..=span).flat_map(|i| (0..=span).map(move |j| (i, j)));
        if candidates.clone().any(|cw| !covers(cw, config.sr_window, config.patch, b)) {
            nd += 1;
            hit_d += usize::from(a);
            hit_centre_d += usize::from(c);
        }
    }
    let frac = |k: usize, n: usize| if n == 0 { f64::NAN } else { k as f64 / n as f64 };
    Ok(Coverage {
        n,
        attention: frac(hit, n),
        centre: frac(hit_centre, n),
        n_decisive: nd,
        attention_decisive: frac(hit_d, nd),
        centre_decisive: frac(hit_centre_d, nd),
    })
}

/// Everything the report shows.
struct Report<'a> {
    plan: &'a Plan,
    snapshot: &'a str,
    results: &'a [ProbeResult],
    coverage: Coverage,
    pretrain_s: f64,
    total_s: f64,
    commands: Vec<String>,
}

impl Report<'_> {
    /// The AUC table: one row per finding, pre-trained and random init side by side.
    fn table(&self) -> String {
        let (pre, rand) = (&self.results[0], &self.results[1]);
        let fmt = |v: Option<f64>| v.map_or("   n/a".to_string(), |v| format!("{v:.3}"));
        let mut t = String::from("| finding | pre-trained | random init |\n|---|---:|---:|\n");
        for ((name, a), (_, b)) in pre.classes.iter().zip(&rand.classes) {
            t += &format!("| {name} | {} | {} |\n", fmt(*a), fmt(*b));
        }
        let delta = match (pre.score, rand.score) {
            (Some(a), Some(b)) => format!(" (Δ {:+.3})", a - b),
            _ => String::new(),
        };
        t += &format!("| **mean AUC** | **{}** | **{}**{delta} |\n", fmt(pre.score), fmt(rand.score));
        t
    }

    fn write(&self, table: &str) -> anyhow::Result<()> {
        let dir = &self.plan.dir;
        let (pre, rand) = (&self.results[0], &self.results[1]);
        let names: Vec<String> = pre.classes.iter().map(|c| c.0.clone()).chain(["mean".to_string()]).collect();
        let values = |r: &ProbeResult| -> Vec<f64> {
            r.classes.iter().map(|c| c.1.unwrap_or(0.5)).chain([r.score.unwrap_or(0.5)]).collect()
        };
        plots::bars(
            &dir.join("auc.png"),
            "Linear probe on held-out phantoms (test ROC-AUC)",
            &names,
            &[("pre-trained (tiny)", values(pre)), ("random init", values(rand))],
            0.5,
        )?;
        write_json(
            &dir.join("results.json"),
            &serde_json::json!({
                "snapshot": self.snapshot,
                "probe": self.results,
                "windows": self.coverage,
                "pretrain_seconds": self.pretrain_s,
                "total_seconds": self.total_s,
                "commands": self.commands,
            }),
        )?;
        let p = self.plan;
        let c = self.coverage;
        let text = format!(
            "# ecamp demo\n\n\
             Pre-training snapshot **{snap}** of `{ds}` ({studies} phantom studies, {size} px); \
             tiny model, {epochs} epochs on the CPU in {pre_s:.0} s; whole demo {total_s:.0} s.\n\n\
             ## Linear probe on {held} held-out phantoms (test split by patient: {sizes:?} train/val/test)\n\n\
             {table}\n![AUC per finding](auc.png)\n\n\
             ## SR windows from entity attention\n\n\
             On the {n} pre-training phantoms with a single drawn finding, the attention window contains the \
             finding's centre for **{att:.1}%** of them (the fixed centre window: {cen:.1}%). On the {nd} of them \
             where some candidate window misses the finding, so that the choice matters: **{att_d:.1}%** \
             (centre window: {cen_d:.1}%).\n\n\
             ## Pre-training\n\n![losses](run/losses.png)\n\n![data wait](run/data_wait.png)\n\n\
             ## Reproduce\n\n```sh\n{cmds}\n```\n\
             The snapshot id pins every table version: the same commands on it give the same run bit for bit.\n",
            snap = self.snapshot,
            ds = p.dataset,
            studies = p.studies,
            size = p.image_size,
            epochs = p.epochs,
            pre_s = self.pretrain_s,
            total_s = self.total_s,
            held = p.held,
            sizes = pre.sizes,
            n = c.n,
            att = 100.0 * c.attention,
            cen = 100.0 * c.centre,
            nd = c.n_decisive,
            att_d = 100.0 * c.attention_decisive,
            cen_d = 100.0 * c.centre_decisive,
            cmds = self.commands.join("\n"),
        );
        std::fs::write(dir.join("report.md"), text)
            .with_context(|| format!("cannot write {}", dir.join("report.md").display()))
    }
}
