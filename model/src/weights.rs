//! Weights in and out in the official naming: PyTorch `.pth` checkpoints (a raw state dict or
//! `{"model": state_dict}` as the official and MAE checkpoints are) and safetensors files load
//! into an [`Ecamp`]; the encoder exports as safetensors with timm's ViT names.
//!
//! Official names are those of `model_ecamp.py` (`patch_embed.*`, `blocks.N.*`, `decoder_*`,
//! `super_res.conv1`, `bert_mlp`, `bert_encoder.model.bert.*`, `bert_encoder.model.cls.*`). The
//! attribute holding the fusion layer inside the BERT model is not in the released sources we
//! know, so any `bert_encoder.model.bert.<name>.` whose children are the fusion layer's
//! (`attention`, `cross_self_attention`, `gap_mlp`, `out_layer`, `intermediate`, `output`) maps
//! to it.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn_store::{
    ApplyResult, BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use crate::ecamp::Ecamp;

/// Official state-dict names → this crate's module paths, applied in order.
const OFFICIAL_TO_BURN: &[(&str, &str)] = &[
    // DistributedDataParallel saves every name under `module.`.
    (r"^module\.", ""),
    (r"^(patch_embed\.|cls_token$|pos_embed$|blocks\.|norm\.)", "encoder.$1"),
    (r"^(decoder_|mask_token$)", "decoder.$1"),
    (r"^super_res\.", "sr."),
    (r"^bert_encoder\.model\.bert\.embeddings\.", "text.embeddings."),
    (r"^bert_encoder\.model\.bert\.encoder\.layer\.", "text.layers."),
    (r"^bert_encoder\.model\.bert\.pooler\.", "text.pooler."),
    (
        r"^bert_encoder\.model\.bert\.[A-Za-z_]+\.(attention|cross_self_attention|gap_mlp|out_layer|intermediate|output)\.",
        "text.fusion.$1.",
    ),
    (r"^bert_encoder\.model\.cls\.predictions\.transform\.dense\.", "text.head.transform_dense."),
    (r"^bert_encoder\.model\.cls\.predictions\.transform\.LayerNorm\.", "text.head.transform_norm."),
    (r"^bert_encoder\.model\.cls\.predictions\.decoder\.weight$", "text.head.decoder.weight"),
    (r"^bert_encoder\.model\.cls\.predictions\.bias$", "text.head.decoder.bias"),
    (r"\.attention\.self\.", ".attention.self_attn."),
    (r"\.LayerNorm\.", ".layer_norm."),
];

/// Why weights could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or parsed.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Tensors the model needs are not in the file (names are this crate's module paths).
    #[error("{path}: {} tensor(s) missing: {}", names.len(), names.join(", "))]
    Missing {
        /// The file.
        path: PathBuf,
        /// The missing tensors.
        names: Vec<String>,
    },
    /// Tensors with the wrong shape or type.
    #[error("{path}: {}", problems.join("; "))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// One line per tensor.
        problems: Vec<String>,
    },
    /// Not one tensor of the file has a name the model knows: the wrong file, or another naming.
    #[error("{path}: none of its {} tensor(s) names a model parameter (e.g. {})", unused.len(), unused.iter().take(3).cloned().collect::<Vec<_>>().join(", "))]
    NoMatch {
        /// The file.
        path: PathBuf,
        /// The file's tensor names.
        unused: Vec<String>,
    },
    /// The file could not be written.
    #[error("{path}: cannot write: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// What a load applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Tensors loaded.
    pub applied: usize,
    /// Model tensors the file did not have (allowed with `partial`).
    pub missing: Vec<String>,
    /// File tensors the model has no place for (e.g. MAE decoder blocks 4–7).
    pub unused: Vec<String>,
}

/// Loads `path` (`.pth`/`.pt`/`.bin` as PyTorch, `.safetensors`) in the official naming into
/// `model`. With `partial`, tensors absent from the file keep their values (MAE initialisation);
/// otherwise every model tensor must be present. A wrong shape is always an error.
pub fn load_official<B: Backend>(model: &mut Ecamp<B>, path: &Path, partial: bool) -> Result<LoadReport, WeightsError> {
    let read = |reason: String| WeightsError::Read { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(read("no such file".into()));
    }
    let safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let result = if safetensors {
        let mut store = remapped_safetensors(path);
        model.load_from(&mut store).map_err(|e| read(e.to_string()))?
    } else {
        // Official checkpoints wrap the state dict as {"model": ...}; plain state dicts do not.
        let mut wrapped = remapped_pytorch(path).with_top_level_key("model");
        match model.load_from(&mut wrapped) {
            Ok(r) => r,
            Err(_) => {
                let mut plain = remapped_pytorch(path);
                model.load_from(&mut plain).map_err(|e| read(e.to_string()))?
            }
        }
    };
    check(path, result, partial)
}

fn remapped_pytorch(path: &Path) -> PytorchStore {
    OFFICIAL_TO_BURN
        .iter()
        .fold(PytorchStore::from_file(path), |s, (from, to)| s.with_key_remapping(from, *to))
        .allow_partial(true)
}

fn remapped_safetensors(path: &Path) -> SafetensorsStore {
    OFFICIAL_TO_BURN
        .iter()
        .fold(SafetensorsStore::from_file(path), |s, (from, to)| s.with_key_remapping(from, *to))
        .with_from_adapter(PyTorchToBurnAdapter)
        .allow_partial(true)
}

fn check(path: &Path, r: ApplyResult, partial: bool) -> Result<LoadReport, WeightsError> {
    if !r.errors.is_empty() {
        let problems = r.errors.iter().map(|e| e.to_string()).collect();
        return Err(WeightsError::Mismatch { path: path.to_path_buf(), problems });
    }
    if r.applied.is_empty() {
        return Err(WeightsError::NoMatch { path: path.to_path_buf(), unused: r.unused });
    }
    let missing: Vec<String> = r.missing.iter().map(|(p, _)| p.clone()).collect();
    if !partial && !missing.is_empty() {
        return Err(WeightsError::Missing { path: path.to_path_buf(), names: missing });
    }
    Ok(LoadReport { applied: r.applied.len(), missing, unused: r.unused })
}

/// Writes the image encoder as safetensors with timm's ViT names (`patch_embed.proj.weight`,
/// `cls_token`, `pos_embed`, `blocks.N.attn.qkv.weight`, …, `norm.bias`), PyTorch layouts.
pub fn save_encoder_timm<B: Backend>(model: &Ecamp<B>, path: &Path) -> Result<(), WeightsError> {
    let mut store = SafetensorsStore::from_file(path)
        .with_regex(r"^encoder\.")
        .with_key_remapping(r"^encoder\.", "")
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata("format", "pt")
        .metadata("producer", "ecamp");
    model.save_into(&mut store).map_err(|e| WeightsError::Write { path: path.to_path_buf(), reason: e.to_string() })
}
