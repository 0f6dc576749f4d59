//! Text preparation exactly as the official ECAMP code does it (spec §2.3–§2.8): LLM-context
//! insertion, WordPiece encoding, negation-template down-weighting, entity/descriptor masking and
//! the entity-aware re-balanced loss factor.
//!
//! The official code draws from Python's unseeded `random`; here every random draw comes from an
//! explicit `rand::Rng` in the same order as the code draws them, so a sample's result depends
//! only on the generator handed in (see [`sample_rng`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;
use tokenizers::utils::padding::{PaddingDirection, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::TruncationParams;

/// The 44 entity strings of the official code (§2.5), matched exactly against single-token vocab strings.
pub const ENTITIES: [&str; 44] = [
    "abnormality",
    "abscess",
    "aerate",
    "aorta",
    "atelectasis",
    "bronchiectasis",
    "calcification",
    "cardiomediastinal",
    "cardiomegaly",
    "catheter",
    "chf",
    "collapse",
    "congestion",
    "consolidation",
    "contour",
    // Upper-case on purpose: the official list has it so, and it therefore never matches a
    // lower-cased vocab token; kept to stay faithful.
    "COPD",
    "deformity",
    "dilation",
    "distention",
    "edema",
    "effusion",
    "embolism",
    "emphysema",
    "engorgement",
    "fibrosis",
    "fracture",
    "granuloma",
    "hernia",
    "hilar",
    "hyperinflate",
    "hemidiaphragm",
    "infiltrate",
    "mass",
    "nodule",
    "obscure",
    "opacity",
    "perihilar",
    "pneumonia",
    "pneumothorax",
    "sarcoidosis",
    "silhouette",
    "thickening",
    "tuberculosis",
    "vasculature",
];

/// The long negation template of §2.6; tokenised at construction so any vocabulary works.
pub const TEMPLATE_LONG: &str = "there is no evidence of";
/// The short negation template of §2.6; tokenised at construction so any vocabulary works.
pub const TEMPLATE_SHORT: &str = "there is no";

/// Vocab flag: token string starts with `##` (a word continuation piece).
const FLAG_CONTINUATION: u8 = 1;
/// Vocab flag: token string is one of [`ENTITIES`].
const FLAG_ENTITY: u8 = 2;

/// Errors while building a [`TextPrep`] or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A token the preparation needs (`[PAD]`, `[CLS]`, `[MASK]`, `.`) is not in the vocabulary.
    #[error("token {0:?} is not in the tokenizer vocabulary")]
    MissingToken(&'static str),
    /// A negation template tokenised to nothing, so it could never be found.
    #[error("negation template {0:?} tokenises to no tokens")]
    EmptyTemplate(&'static str),
    /// The tokenizer itself failed (configuration or encoding).
    #[error("tokenizer failed: {0}")]
    Tokenizer(#[source] tokenizers::Error),
}

/// How descriptor tokens (the ≤2 tokens before an entity) are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DescriptorMasking {
    /// As the official code: the descriptor branch is dead code, descriptors are only re-weighted (§10.2).
    #[default]
    CodeFaithful,
    /// As intended by the paper: always mask the ≤2 non-'.' non-entity tokens before each entity.
    Intended,
}

/// Knobs of the text preparation; `Default` gives the official code's values.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Sequence length after truncation and padding (`L`).
    pub max_len: usize,
    /// Probability of inserting the LLM context into the report (§2.3).
    pub context_prob: f64,
    /// Loss weight of negation-template tokens before re-balancing (γ).
    pub template_weight: f32,
    /// Masking probability of non-entity word-initial tokens in a report that has entities.
    pub mask_prob_entity_report: f64,
    /// Masking probability of entity tokens (second pass).
    pub mask_prob_entity: f64,
    /// Masking probability of word-initial tokens in a report without entities.
    pub mask_prob_plain: f64,
    /// Whether descriptors are forcibly masked (see [`DescriptorMasking`]).
    pub descriptor_masking: DescriptorMasking,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            max_len: 256,
            context_prob: 0.8,
            template_weight: 0.05,
            mask_prob_entity_report: 0.70,
            mask_prob_entity: 0.75,
            mask_prob_plain: 0.75,
            descriptor_masking: DescriptorMasking::CodeFaithful,
        }
    }
}

/// One prepared text sample: the §2.8 text tensors of a single row plus the sets behind the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Masked token ids, the model input (`max_len`).
    pub ids: Vec<i64>,
    /// Unmasked token ids, the MLM targets (`max_len`, no −100 anywhere, as the code).
    pub labels: Vec<i64>,
    /// 1 for real tokens, 0 for padding (from the unmasked encoding).
    pub attention_mask: Vec<i64>,
    /// Per-token loss weights (§2.6); they sum to `max_len`.
    pub weights: Vec<f32>,
    /// Descriptor positions `D` in the order the code finds them (deduplicated).
    pub descriptors: Vec<usize>,
    /// Negation-template positions `T`, ascending.
    pub templates: Vec<usize>,
    /// Re-balance factor applied: the descriptor factor `f` when `D` and `T` are non-empty, the
    /// global scale `L/(L−(1−γ)|T|)` when only `T` is, `None` when weights stayed 1.
    pub factor: Option<f64>,
}

/// Text preparation bound to one tokenizer and config; build once, use for every sample.
#[derive(Clone)]
pub struct TextPrep {
    /// Tokenizer with the §2.4 truncation and fixed padding enabled.
    tokenizer: Tokenizer,
    /// The config this was built with.
    config: TextConfig,
    /// `[PAD]` id (the code tests `== 0`; resolved so other vocabularies work).
    pad_id: u32,
    /// `[CLS]` id.
    cls_id: u32,
    /// `[MASK]` id (the code uses 3).
    mask_id: u32,
    /// `'.'` id (the code uses 16).
    dot_id: u32,
    /// Token ids of [`TEMPLATE_LONG`].
    template_long: Vec<u32>,
    /// Token ids of [`TEMPLATE_SHORT`].
    template_short: Vec<u32>,
    /// Ids of the entity strings present in the vocab, ascending.
    entity_ids: Vec<u32>,
    /// Per-id flags (`FLAG_*`), indexed by token id; ids beyond it have no flags.
    flags: Vec<u8>,
    /// [`vocab_fingerprint`] of the tokenizer.
    fingerprint: String,
}

/// A short hash of a tokenizer's (token, id) table: two tokenizers with the same fingerprint
/// give every token the same id, whatever their padding or truncation settings. Checkpoints
/// record it so a model is never paired with another vocabulary.
pub fn vocab_fingerprint(tokenizer: &Tokenizer) -> String {
    use sha2::{Digest, Sha256};
    let mut pairs: Vec<(String, u32)> = tokenizer.get_vocab(true).into_iter().collect();
    // By id, then token: two tokens may share an id, and the map's order differs per process.
    pairs.sort_unstable_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut hash = Sha256::new();
    for (token, id) in &pairs {
        hash.update(id.to_le_bytes());
        hash.update(token.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

impl std::fmt::Debug for TextPrep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tokenizer's own Debug dumps the whole vocabulary; show only what was resolved.
        f.debug_struct("TextPrep")
            .field("config", &self.config)
            .field("pad_id", &self.pad_id)
            .field("cls_id", &self.cls_id)
            .field("mask_id", &self.mask_id)
            .field("dot_id", &self.dot_id)
            .field("template_long", &self.template_long)
            .field("template_short", &self.template_short)
            .field("entity_ids", &self.entity_ids)
            .finish_non_exhaustive()
    }
}

impl TextPrep {
    /// Resolves special ids, templates and entities from `tokenizer` and enables truncation/padding.
    pub fn new(tokenizer: &Tokenizer, config: TextConfig) -> Result<Self, TextError> {
        let id = |tok: &'static str| tokenizer.token_to_id(tok).ok_or(TextError::MissingToken(tok));
        let pad_id = id("[PAD]")?;
        let cls_id = id("[CLS]")?;
        let mask_id = id("[MASK]")?;
        let dot_id = id(".")?;

        // Templates are tokenised with a plain copy: a caller's padding/truncation would add pads.
        let mut plain = tokenizer.clone();
        plain.with_padding(None);
        plain.with_truncation(None).map_err(TextError::Tokenizer)?;
        let tokenise = |s: &'static str| -> Result<Vec<u32>, TextError> {
            let ids = plain.encode(s, false).map_err(TextError::Tokenizer)?.get_ids().to_vec();
            if ids.is_empty() { Err(TextError::EmptyTemplate(s)) } else { Ok(ids) }
        };
        let template_long = tokenise(TEMPLATE_LONG)?;
        let template_short = tokenise(TEMPLATE_SHORT)?;

        let fingerprint = vocab_fingerprint(tokenizer);
        let vocab = tokenizer.get_vocab(true);
        let size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        let mut flags = vec![0u8; size];
        for (tok, &tid) in &vocab {
            if tok.starts_with("##") {
                flags[tid as usize] |= FLAG_CONTINUATION;
            }
        }
        let mut entity_ids: Vec<u32> = ENTITIES.iter().filter_map(|e| vocab.get(*e).copied()).collect();
        entity_ids.sort_unstable();
        entity_ids.dedup();
        for &e in &entity_ids {
            flags[e as usize] |= FLAG_ENTITY;
        }

        let mut tokenizer = tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: config.max_len, ..Default::default() }))
            .map_err(TextError::Tokenizer)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(config.max_len),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: "[PAD]".to_string(),
        }));

        Ok(Self {
            tokenizer,
            config,
            pad_id,
            cls_id,
            mask_id,
            dot_id,
            template_long,
            template_short,
            entity_ids,
            flags,
            fingerprint,
        })
    }

    /// [`vocab_fingerprint`] of the tokenizer this was built from.
    pub fn vocab_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The config this preparation was built with.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// `[PAD]` token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// `[CLS]` token id.
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }

    /// `[MASK]` token id.
    pub fn mask_id(&self) -> u32 {
        self.mask_id
    }

    /// `'.'` token id.
    pub fn dot_id(&self) -> u32 {
        self.dot_id
    }

    /// Token ids of the long negation template ("there is no evidence of").
    pub fn template_long(&self) -> &[u32] {
        &self.template_long
    }

    /// Token ids of the short negation template ("there is no").
    pub fn template_short(&self) -> &[u32] {
        &self.template_short
    }

    /// Ids of the entity strings found in the vocabulary, ascending.
    pub fn entity_ids(&self) -> &[u32] {
        &self.entity_ids
    }

    /// Whether `id` is one of the matchable entity tokens.
    pub fn is_entity(&self, id: u32) -> bool {
        self.flag(id, FLAG_ENTITY)
    }

    /// Whether `id` is a `##` continuation piece.
    pub fn is_continuation(&self, id: u32) -> bool {
        self.flag(id, FLAG_CONTINUATION)
    }

    /// Looks up a vocab flag; unknown ids carry none.
    fn flag(&self, id: u32, flag: u8) -> bool {
        self.flags.get(id as usize).is_some_and(|f| f & flag != 0)
    }

    /// Inserts the LLM context at a random sentence boundary and prefixes `"[CLS] "` (§2.3).
    ///
    /// Follows Python exactly: `str.split('.')` (trailing empty piece kept), one `random() < p`
    /// draw, then `randint(0, len(pieces))` inclusive, every piece re-joined with a `'.'`, one
    /// left-to-right `replace("..", ".")`. A missing or empty context is treated as the code
    /// treats an empty `llm_output`: the same two draws happen (so the random stream does not
    /// depend on whether a row has context) and the insertion path still appends the trailing '.'.
    pub fn insert_context(&self, report: &str, context: Option<&str>, rng: &mut impl Rng) -> String {
        let context = context.unwrap_or("");
        let sent = if rng.random::<f64>() < self.config.context_prob {
            let pieces: Vec<&str> = report.split('.').collect();
            let loc = rng.random_range(0..=pieces.len());
            let mut s = String::with_capacity(report.len() + context.len() + 2);
            for p in &pieces[..loc] {
                s.push_str(p);
                s.push('.');
            }
            s.push_str(context);
            for p in &pieces[loc..] {
                s.push_str(p);
                s.push('.');
            }
            s
        } else {
            report.to_string()
        };
        // Rust's `replace` is the same single non-overlapping left-to-right pass as Python's.
        format!("[CLS] {}", sent.replace("..", "."))
    }

    /// Inserts context then prepares: the whole per-row text path of the official `__getitem__`.
    pub fn prepare_row(&self, report: &str, context: Option<&str>, rng: &mut impl Rng) -> Result<Prepared, TextError> {
        let text = self.insert_context(report, context, rng);
        self.prepare(&text, rng)
    }

    /// Encodes `text_with_cls` to `max_len` tokens, masks it and computes loss weights (§2.6–§2.7).
    pub fn prepare(&self, text_with_cls: &str, rng: &mut impl Rng) -> Result<Prepared, TextError> {
        // add_special_tokens = true as the code; the official tokenizer has no post-processor,
        // so `[CLS]` comes only from the literal prefix.
        let enc = self.tokenizer.encode(text_with_cls, true).map_err(TextError::Tokenizer)?;
        Ok(self.prepare_ids(enc.get_ids(), enc.get_attention_mask(), rng))
    }

    /// Encodes `text_with_cls` to `max_len` ids and attention mask, unmasked (for inference,
    /// e.g. attention maps): the same tokenisation as [`TextPrep::prepare`].
    pub fn encode(&self, text_with_cls: &str) -> Result<(Vec<u32>, Vec<u32>), TextError> {
        let enc = self.tokenizer.encode(text_with_cls, true).map_err(TextError::Tokenizer)?;
        Ok((enc.get_ids().to_vec(), enc.get_attention_mask().to_vec()))
    }

    /// The vocabulary string of `id`, if it has one.
    pub fn token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// Masks and weights already-encoded ids; split out so tests can skip the tokenizer.
    fn prepare_ids(&self, ids: &[u32], attention: &[u32], rng: &mut impl Rng) -> Prepared {
        let templates = self.template_positions(ids);
        let (masked, descriptors) = self.context_mask(ids, rng);
        let (weights, factor) = self.weights(ids.len(), &templates, &descriptors);
        Prepared {
            ids: masked.iter().map(|&t| i64::from(t)).collect(),
            labels: ids.iter().map(|&t| i64::from(t)).collect(),
            attention_mask: attention.iter().map(|&a| i64::from(a)).collect(),
            weights,
            descriptors,
            templates,
            factor,
        }
    }

    /// Step A of §2.6: greedy left-to-right template scan with the code's `i < L-4` bound.
    fn template_positions(&self, ids: &[u32]) -> Vec<usize> {
        let l = ids.len();
        let matches = |i: usize, tpl: &[u32]| ids.get(i..i + tpl.len()) == Some(tpl);
        let mut t = Vec::new();
        let mut i = 0;
        while i + 4 < l {
            // Long template first: the code tests the 5-token pattern before the 3-token one.
            let len = if matches(i, &self.template_long) {
                self.template_long.len()
            } else if matches(i, &self.template_short) {
                self.template_short.len()
            } else {
                i += 1;
                continue;
            };
            t.extend(i..i + len);
            i += len;
        }
        t
    }

    /// `_context_mask` of §2.7: returns the masked copy and the descriptor positions `D`.
    ///
    /// Random draws happen in the code's order: one per non-continuation position of pass 1, then
    /// one per entity position of pass 2.
    fn context_mask(&self, tokens: &[u32], rng: &mut impl Rng) -> (Vec<u32>, Vec<usize>) {
        let l = tokens.len();
        // Positions 1..=L-2: [CLS] at 0 and the last slot are never touched by the code.
        let scan = 1..l.saturating_sub(1);
        let entity_exist = scan.clone().any(|i| self.is_entity(tokens[i]));
        let cfg = &self.config;
        let mut masked = tokens.to_vec();
        let mut entities: Vec<usize> = Vec::new();
        let mut descriptors: Vec<usize> = Vec::new();

        for i in scan.clone() {
            if masked[i] == self.pad_id {
                break;
            }
            let tok = masked[i];
            if self.is_continuation(tok) {
                // Whole-word masking: a piece follows its (already decided) predecessor.
                if masked[i - 1] == self.mask_id {
                    masked[i] = self.mask_id;
                }
                continue;
            }
            let is_entity = self.is_entity(tok);
            if is_entity {
                entities.push(i);
                for j in 1..=2 {
                    if i <= j {
                        break;
                    }
                    let d = i - j;
                    // The '.' test reads the unmasked tokens, as the code does.
                    if tokens[d] != self.dot_id {
                        if !descriptors.contains(&d) {
                            descriptors.push(d);
                        }
                        if cfg.descriptor_masking == DescriptorMasking::Intended && !self.is_entity(tokens[d]) {
                            masked[d] = self.mask_id;
                        }
                    }
                }
            }
            let p: f64 = rng.random();
            if !entity_exist {
                if p < cfg.mask_prob_plain {
                    masked[i] = self.mask_id;
                }
            } else if p < cfg.mask_prob_entity_report && !is_entity && !descriptors.contains(&i) {
                masked[i] = self.mask_id;
            }
        }
        // Second pass: entities, in ascending position order as the code's range loop visits them.
        for &e in &entities {
            if rng.random::<f64>() < cfg.mask_prob_entity {
                masked[e] = self.mask_id;
            }
        }
        (masked, descriptors)
    }

    /// Steps A (weights) and C of §2.6: down-weight templates, then re-balance to Σw = L.
    fn weights(&self, l: usize, templates: &[usize], descriptors: &[usize]) -> (Vec<f32>, Option<f64>) {
        let gamma = self.config.template_weight;
        let down = 1.0 - f64::from(gamma);
        let mut w = vec![1.0f32; l];
        for &t in templates {
            w[t] = gamma;
        }
        let n_t = templates.len() as f64;
        let n_d = descriptors.len() as f64;
        let n_dm = descriptors.iter().filter(|d| templates.contains(d)).count() as f64;
        if !descriptors.is_empty() && !templates.is_empty() {
            let f = (down * (n_t - n_dm) + n_d) / (n_d - down * n_dm);
            for &d in descriptors {
                w[d] = (f64::from(w[d]) * f) as f32;
            }
            (w, Some(f))
        } else if !templates.is_empty() {
            let lf = l as f64;
            let s = lf / (lf - down * n_t);
            for x in &mut w {
                *x = (f64::from(*x) * s) as f32;
            }
            (w, Some(s))
        } else {
            (w, None)
        }
    }
}

/// Finalizer of SplitMix64: a bijection on `u64` that spreads every input bit over the output.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Per-sample generator that depends only on (seed, epoch, global sample index).
///
/// Each input fills its own 64-bit word of the ChaCha key through a bijective mix, so distinct
/// triples always give distinct keys (no hash collisions) and worker scheduling cannot change results.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    // Distinct offsets keep (a, b, c) and (b, a, c) from sharing key words.
    let words = [
        splitmix64(seed),
        splitmix64(epoch ^ 0xA076_1D64_78BD_642F),
        splitmix64(index ^ 0xE703_7ED1_A0B4_28DB),
        0x6563_616D_702D_6C64, // domain tag "ecamp-ld": separates these streams from other ChaCha uses
    ];
    let mut key = [0u8; 32];
    for (chunk, w) in key.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/mimic_wordpiece.json");

    const GOLDEN: &str = "[CLS] There is no evidence of pneumothorax. Small right pleural effusion. \
                          There is no focal consolidation.";

    /// Loads the official tokenizer; missing is a failure on CI and a skipped test elsewhere.
    fn tokenizer() -> Option<Tokenizer> {
        if !std::path::Path::new(TOKENIZER).exists() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "official tokenizer missing at {TOKENIZER}");
            eprintln!("note: {TOKENIZER} not found; skipping test");
            return None;
        }
        Some(Tokenizer::from_file(TOKENIZER).expect("official tokenizer loads"))
    }

    fn prep_with(config: TextConfig) -> Option<TextPrep> {
        tokenizer().map(|t| TextPrep::new(&t, config).expect("TextPrep builds"))
    }

    fn prep() -> Option<TextPrep> {
        prep_with(TextConfig::default())
    }

    fn first_pad(p: &Prepared) -> usize {
        p.labels.iter().position(|&t| t == 0).unwrap_or(p.labels.len())
    }

    #[test]
    fn golden_weights_templates_descriptors() {
        let Some(prep) = prep() else { return };
        let want_ids: [i64; 19] =
            [2, 219, 149, 152, 422, 158, 258, 16, 418, 207, 221, 203, 16, 219, 149, 152, 385, 334, 16];
        let want_w: [f32; 19] = [
            1.0, 0.05, 0.05, 0.05, 0.1706, 0.1706, 1.0, 1.0, 1.0, 3.4127, 3.4127, 1.0, 1.0, 0.05, 0.05, 0.1706, 3.4127,
            1.0, 1.0,
        ];
        let mut weights = Vec::new();
        for seed in [1u64, 2] {
            let p = prep.prepare(GOLDEN, &mut sample_rng(seed, 0, 0)).unwrap();
            assert_eq!(p.labels.len(), 256);
            assert_eq!(&p.labels[..19], &want_ids);
            assert!(p.labels[19..].iter().all(|&t| t == 0));
            assert_eq!(p.attention_mask.iter().sum::<i64>(), 19);
            assert!(p.attention_mask[..19].iter().all(|&a| a == 1));
            assert_eq!(p.templates, vec![1, 2, 3, 4, 5, 13, 14, 15]);
            assert_eq!(p.descriptors, vec![5, 4, 10, 9, 16, 15], "code order");
            let mut d = p.descriptors.clone();
            d.sort_unstable();
            assert_eq!(d, vec![4, 5, 9, 10, 15, 16]);
            let f = p.factor.unwrap();
            assert!((f - 3.412_698_412_7).abs() < 1e-6, "f = {f}");
            for (i, (&got, &want)) in p.weights.iter().zip(&want_w).enumerate() {
                assert!((got - want).abs() < 1e-3, "w[{i}] = {got}, want {want}");
            }
            assert!(p.weights[19..].iter().all(|&w| w == 1.0));
            let sum: f64 = p.weights.iter().map(|&w| f64::from(w)).sum();
            assert!((sum - 256.0).abs() < 1e-3, "sum = {sum}");
            weights.push(p);
        }
        // Weights come from unmasked ids only, so the masking draws must not change them.
        assert_ne!(weights[0].ids, weights[1].ids, "the two seeds should mask differently");
        assert_eq!(weights[0].weights, weights[1].weights);
        assert_eq!(weights[0].descriptors, weights[1].descriptors);
    }

    #[test]
    fn ids_resolved_from_vocab_and_tokenising() {
        let Some(prep) = prep() else { return };
        assert_eq!(prep.template_long(), &[219, 149, 152, 422, 158]);
        assert_eq!(prep.template_short(), &[219, 149, 152]);
        assert_eq!(prep.mask_id(), 3);
        assert_eq!(prep.dot_id(), 16);
        assert_eq!(prep.pad_id(), 0);
        assert_eq!(prep.cls_id(), 2);
        // 41 of 44 match: aerate, hyperinflate are not vocab tokens and COPD is upper-case.
        assert_eq!(prep.entity_ids().len(), 41);
        assert!(!prep.is_entity(1127), "copd must not match COPD");
        assert!(!prep.is_entity(449), "plural effusions must not match");
        assert!(prep.is_entity(203) && prep.is_entity(258) && prep.is_entity(334));
        assert_eq!(prep.entity_ids().iter().max(), Some(&4210));
    }

    #[test]
    fn template_scan_bound_and_rebalance_without_descriptors() {
        let Some(prep) = prep() else { return };
        // Only T: every one of the L weights (padding included) is scaled by L/(L-0.95|T|).
        let p = prep.prepare("[CLS] there is no change.", &mut sample_rng(0, 0, 0)).unwrap();
        assert_eq!(p.templates, vec![1, 2, 3]);
        assert!(p.descriptors.is_empty());
        let s = 256.0 / (256.0 - 0.95 * 3.0);
        assert!((p.factor.unwrap() - s).abs() < 1e-6);
        assert!((f64::from(p.weights[200]) - s).abs() < 1e-5);
        let sum: f64 = p.weights.iter().map(|&w| f64::from(w)).sum();
        assert!((sum - 256.0).abs() < 1e-3);
        // The `i < L-4` bound: a short template in the last four slots is not found.
        let l = 256;
        let mut ids = vec![418u32; l];
        ids[0] = 2;
        ids[l - 4..l - 1].copy_from_slice(&[219, 149, 152]);
        assert!(prep.template_positions(&ids).is_empty());
        ids[l - 5..l - 2].copy_from_slice(&[219, 149, 152]);
        assert_eq!(prep.template_positions(&ids), vec![l - 5, l - 4, l - 3]);
    }

    #[test]
    fn masking_invariants() {
        let Some(prep) = prep() else { return };
        // "zzqx" splits into `##` pieces, exercising the whole-word rule.
        let text = "[CLS] Small zzqx effusion. Heart size normal with zzqx contour.";
        let mut saw_continuation_after_mask = false;
        for seed in 0..200 {
            let p = prep.prepare(text, &mut sample_rng(seed, 3, 7)).unwrap();
            let pad = first_pad(&p);
            assert!(pad < 256);
            assert_eq!(p.ids[0], 2, "[CLS] never masked");
            assert_eq!(&p.ids[pad..], &p.labels[pad..], "padding never masked");
            for i in 1..pad {
                assert!(p.ids[i] == p.labels[i] || p.ids[i] == 3, "masked positions hold [MASK]");
                let cont = prep.is_continuation(p.labels[i] as u32);
                if cont {
                    // Continuations follow their predecessor exactly (no entity is ever a `##` piece).
                    assert_eq!(p.ids[i] == 3, p.ids[i - 1] == 3, "seed {seed} pos {i}");
                    saw_continuation_after_mask |= p.ids[i - 1] == 3;
                }
            }
        }
        assert!(saw_continuation_after_mask, "test text must contain a ## piece after a masked token");
    }

    /// Masked fractions of (entity, other word-initial) tokens over many seeds.
    fn fractions(prep: &TextPrep, text: &str, seeds: u64) -> (f64, f64) {
        let (mut ent, mut ent_m, mut other, mut other_m) = (0u32, 0u32, 0u32, 0u32);
        for seed in 0..seeds {
            let p = prep.prepare(text, &mut sample_rng(seed, 1, 2)).unwrap();
            for i in 1..first_pad(&p) {
                let t = p.labels[i] as u32;
                if prep.is_continuation(t) {
                    continue;
                }
                let m = u32::from(p.ids[i] == 3);
                if prep.is_entity(t) {
                    ent += 1;
                    ent_m += m;
                } else {
                    other += 1;
                    other_m += m;
                }
            }
        }
        let frac = |m: u32, n: u32| if n == 0 { f64::NAN } else { f64::from(m) / f64::from(n) };
        (frac(ent_m, ent), frac(other_m, other))
    }

    #[test]
    fn masking_rates() {
        let Some(prep) = prep() else { return };
        let plain = "[CLS] Heart size is normal. Lungs are clear. No acute findings since the prior study.";
        let (ent, other) = fractions(&prep, plain, 400);
        assert!(ent.is_nan(), "plain text must have no entities");
        assert!((other - 0.75).abs() < 0.05, "plain rate {other}");

        let (ent, other) = fractions(&prep, GOLDEN, 600);
        assert!((ent - 0.75).abs() < 0.05, "entity rate {ent}");
        assert!((other - 0.70).abs() < 0.05, "other rate {other}");
    }

    #[test]
    fn descriptor_masking_modes() {
        let Some(intended) =
            prep_with(TextConfig { descriptor_masking: DescriptorMasking::Intended, ..TextConfig::default() })
        else {
            return;
        };
        let Some(faithful) = prep() else { return };
        let mut faithful_kept_some = false;
        for seed in 0..50 {
            let p = intended.prepare(GOLDEN, &mut sample_rng(seed, 0, 0)).unwrap();
            assert_eq!(p.descriptors, vec![5, 4, 10, 9, 16, 15]);
            for &d in &p.descriptors {
                assert_eq!(p.ids[d], 3, "intended: descriptor {d} masked (seed {seed})");
            }
            let q = faithful.prepare(GOLDEN, &mut sample_rng(seed, 0, 0)).unwrap();
            faithful_kept_some |= q.descriptors.iter().any(|&d| q.ids[d] != 3);
            // Same draws, same weights: only the forced descriptor masks differ.
            assert_eq!(p.weights, q.weights);
        }
        assert!(faithful_kept_some, "code-faithful mode must not force descriptor masks");
    }

    #[test]
    fn insert_context_python_semantics() {
        let Some(prep) = prep() else { return };
        let valid = ["[CLS] C.A. B.", "[CLS] A.C. B.", "[CLS] A. B.C.", "[CLS] A. B."];
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut rng = sample_rng(seed, 0, 0);
            // Replay the draws by hand on a copy of the generator.
            let mut replay = rng.clone();
            let got = prep.insert_context("A. B.", Some("C."), &mut rng);
            let want = if replay.random::<f64>() < 0.8 {
                // pieces = ["A", " B", ""], loc in 0..=3
                match replay.random_range(0..=3usize) {
                    0 => "[CLS] C.A. B.",
                    1 => "[CLS] A.C. B.",
                    2 => "[CLS] A. B.C.",
                    _ => "[CLS] A. B.C.", // "A. B..C." collapses to the same text
                }
            } else {
                "[CLS] A. B."
            };
            assert_eq!(got, want);
            assert!(valid.contains(&got.as_str()));
            // Exactly the same number of draws as the replay.
            assert_eq!(rng.random::<u64>(), replay.random::<u64>());
            seen.insert(got);
        }
        assert_eq!(seen.len(), valid.len(), "all outcomes occur");

        let never = prep_with(TextConfig { context_prob: 0.0, ..TextConfig::default() }).unwrap();
        let mut rng = sample_rng(0, 0, 0);
        assert_eq!(never.insert_context("A. B", Some("C."), &mut rng), "[CLS] A. B");
        // One left-to-right pass: "..." becomes "..", not ".".
        assert_eq!(never.insert_context("A... B", Some("C."), &mut rng), "[CLS] A.. B");

        // No context behaves as an empty llm_output: trailing '.' added, same draws consumed.
        let always = prep_with(TextConfig { context_prob: 1.0, ..TextConfig::default() }).unwrap();
        let mut a = sample_rng(5, 0, 0);
        let mut b = a.clone();
        assert_eq!(always.insert_context("A. B", None, &mut a), "[CLS] A. B.");
        assert_eq!(always.insert_context("A. B", Some(""), &mut b), "[CLS] A. B.");
        assert_eq!(a.random::<u64>(), b.random::<u64>());
        assert_eq!(always.insert_context("", None, &mut a), "[CLS] .");
    }

    #[test]
    fn deterministic_per_sample() {
        let Some(prep) = prep() else { return };
        let report = "Small right pleural effusion. There is no pneumothorax. Mild cardiomegaly.";
        let ctx = Some("There is pleural effusion. There is no pneumothorax.");
        let a = prep.prepare_row(report, ctx, &mut sample_rng(42, 3, 1000)).unwrap();
        let b = prep.prepare_row(report, ctx, &mut sample_rng(42, 3, 1000)).unwrap();
        assert_eq!(a, b);
        let c = prep.prepare_row(report, ctx, &mut sample_rng(42, 3, 1001)).unwrap();
        let d = prep.prepare_row(report, ctx, &mut sample_rng(42, 4, 1000)).unwrap();
        assert_ne!(a.ids, c.ids);
        assert_ne!(a.ids, d.ids);
    }

    #[test]
    fn sample_rng_separates_inputs() {
        let draw = |s, e, i| sample_rng(s, e, i).random::<u64>();
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(2, 1, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 2));
        assert_ne!(draw(0, 0, 0), draw(0, 0, 1));
    }

    #[test]
    fn missing_special_token_is_an_error() {
        use tokenizers::models::wordpiece::WordPiece;
        // No [MASK]: construction must name the missing token instead of panicking later.
        let vocab = [("[PAD]", 0u32), ("[UNK]", 1), ("[CLS]", 2), (".", 3)].map(|(s, i)| (s.to_string(), i));
        let wp = WordPiece::builder().vocab(vocab).unk_token("[UNK]".into()).build().unwrap();
        let tok = Tokenizer::new(wp);
        let err = TextPrep::new(&tok, TextConfig::default()).unwrap_err();
        assert!(matches!(err, TextError::MissingToken("[MASK]")), "{err}");
    }
}
