//! Distiller options shared by `ecamp ingest` and `ecamp distill`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ecamp_ingest::distill::openai::{OpenAi, OpenAiConfig};
use ecamp_ingest::distill::{Distiller, Rules};

/// Which distiller turns reports into contexts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Offline, deterministic rules (entity lexicon, negation and uncertainty cues).
    Rules,
    /// An OpenAI-compatible chat-completions endpoint (key from OPENAI_API_KEY).
    Openai,
}

/// Distiller choice and its settings.
#[derive(Debug, clap::Args)]
pub struct DistillerArgs {
    /// Distiller for the context column.
    #[arg(long, value_enum, default_value = "rules")]
    distiller: Kind,
    /// Chat-completions base URL (openai), e.g. https://api.openai.com/v1.
    #[arg(long, env = "ECAMP_LLM_ENDPOINT", required_if_eq("distiller", "openai"))]
    endpoint: Option<String>,
    /// Model name (openai).
    #[arg(long, env = "ECAMP_LLM_MODEL", default_value = "gpt-4o-mini")]
    model: String,
    /// Requests in flight at once (openai).
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 8)]
    concurrency: usize,
    /// Attempts per report before it is recorded as a failure (openai).
    #[arg(value_parser = super::parse::count::<u32>, long, default_value_t = 4)]
    attempts: u32,
    /// Seconds before one request times out (openai).
    #[arg(value_parser = super::parse::count::<u64>, long, default_value_t = 60)]
    request_timeout: u64,
    /// Folder of cached answers, keyed by report, prompt and model (openai).
    #[arg(long, default_value = ".ecamp-cache/distill")]
    cache_dir: PathBuf,
}

impl DistillerArgs {
    /// Builds the chosen distiller; the openai one runs its requests on `rt`.
    pub fn build(&self, rt: tokio::runtime::Handle) -> anyhow::Result<Arc<dyn Distiller>> {
        Ok(match self.distiller {
            Kind::Rules => Arc::new(Rules::new()),
            Kind::Openai => {
                let endpoint = self.endpoint.clone().context("--endpoint is required with --distiller openai")?;
                let mut cfg = OpenAiConfig::new(endpoint, &self.model);
                cfg.concurrency = self.concurrency;
                cfg.attempts = self.attempts;
                cfg.timeout = std::time::Duration::from_secs(self.request_timeout);
                cfg.cache_dir = Some(self.cache_dir.clone());
                Arc::new(
                    OpenAi::new(cfg, rt).map_err(anyhow::Error::msg).context("cannot set up the openai distiller")?,
                )
            }
        })
    }
}
