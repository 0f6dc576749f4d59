//! Vocabularies: a WordPiece tokenizer trained on a snapshot's reports and contexts, with the
//! official ECAMP tokenizer's pipeline (lower-case, NFKD, strip accents; whitespace and digit
//! pre-tokenisation; `##` continuations; `[PAD] [UNK] [CLS] [MASK] [SEP]` as ids 0–4), stored
//! under `_ecamp/vocab/<hash>.json`. A user-supplied `tokenizer.json` is checked and stored the
//! same way.

use ecamp_store::{Dataset, Snapshot, TableKind};
use object_store::{ObjectStoreExt, PutPayload};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::{Lowercase, NFKD, Sequence as NormSeq, StripAccents};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerImpl,
};

use crate::error::{IngestError, Result};

/// Dataset-relative folder of stored vocabularies.
pub const VOCAB_DIR: &str = "_ecamp/vocab";
/// The special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[MASK]", "[SEP]"];

/// A stored vocabulary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VocabInfo {
    /// Dataset-relative path of the tokenizer JSON.
    pub path: String,
    /// Content hash (the file name's stem).
    pub hash: String,
    /// Number of tokens, special tokens included.
    pub vocab_size: usize,
}

fn verr(e: impl std::fmt::Display) -> IngestError {
    IngestError::Vocab(e.to_string())
}

type Wp = TokenizerImpl<WordPiece, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// An untrained tokenizer with the official pipeline around `model`.
fn pipeline(model: WordPiece) -> Wp {
    let mut tok: Wp = TokenizerImpl::new(model);
    tok.with_normalizer(Some(NormSeq::new(vec![Lowercase.into(), NFKD.into(), StripAccents.into()])));
    tok.with_pre_tokenizer(Some(PreSeq::new(vec![Whitespace {}.into(), Digits::new(false).into()])));
    tok
}

/// The `##c` pieces the trainer will need: every character that occurs after the first
/// character of a pre-tokenised word, sorted.
fn continuation_pieces(tok: &Wp, texts: &[&str]) -> Result<Vec<String>> {
    use tokenizers::{Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let mut chars = std::collections::BTreeSet::new();
    for text in texts {
        let mut normalized = tokenizers::NormalizedString::from(*text);
        if let Some(n) = tok.get_normalizer() {
            n.normalize(&mut normalized).map_err(verr)?;
        }
        let mut words = PreTokenizedString::from(normalized);
        if let Some(p) = tok.get_pre_tokenizer() {
            p.pre_tokenize(&mut words).map_err(verr)?;
        }
        for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            chars.extend(word.chars().skip(1));
        }
    }
    Ok(chars.into_iter().map(|c| format!("##{c}")).collect())
}

/// Trains a WordPiece tokenizer of at most `vocab_size` tokens on `texts`.
///
/// The result is a pure function of the corpus, ids included. The `tokenizers` trainer numbers
/// the `##c` pieces in hash-map order (randomly seeded per process) and breaks ties between
/// equally frequent merges by those numbers, so on its own two runs give different ids and,
/// where the budget runs out among ties, different tokens. Handing it the sorted `##c` pieces
/// up front (as extra special tokens, which it numbers in the given order) fixes every id the
/// tie-break can see; they are ordinary vocabulary entries in the tokenizer returned.
pub fn train<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: usize) -> Result<Tokenizer> {
    if !(SPECIAL_TOKENS.len() < vocab_size && vocab_size <= MAX_VOCAB_SIZE) {
        return Err(IngestError::Vocab(format!(
            "a vocabulary size of {vocab_size} is outside {}..={MAX_VOCAB_SIZE} (the special tokens plus at least one)",
            SPECIAL_TOKENS.len() + 1
        )));
    }
    let texts: Vec<&str> = texts.collect();
    let model = WordPiece::builder()
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(verr)?;
    let mut tok = pipeline(model);
    let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect();
    let pinned: Vec<AddedToken> = specials
        .iter()
        .cloned()
        .chain(continuation_pieces(&tok, &texts)?.into_iter().map(|p| AddedToken::from(p, false)))
        .collect();
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(pinned)
        .continuing_subword_prefix("##".into())
        // The text pipeline needs "." even if a corpus lacks it (a corpus that has it trains the
        // same vocabulary either way: the alphabet is ordered by character).
        .initial_alphabet(std::collections::HashSet::from(['.']))
        .show_progress(false)
        .build();
    tok.train(&mut trainer, texts.into_iter()).map_err(verr)?;
    // Rebuilt around the trained model so only the real special tokens are added tokens.
    let mut out = pipeline(tok.get_model().clone());
    // Registered as added tokens so a literal "[CLS] " prefix is matched before normalisation.
    out.add_special_tokens(&specials);
    Ok(out.into())
}

/// Largest vocabulary [`train`] builds (the model's embedding-size limit).
pub const MAX_VOCAB_SIZE: usize = 1 << 22;

/// Checks a tokenizer has the special tokens at the ids ECAMP's text pipeline relies on, and
/// ids below its vocabulary size (the model sizes its embedding by that count).
pub fn check(tok: &Tokenizer) -> Result<()> {
    // Whole-word masking reads `##` continuation pieces, which only WordPiece has.
    if !matches!(tok.get_model(), tokenizers::ModelWrapper::WordPiece(_)) {
        return Err(IngestError::Vocab(
            "the tokenizer's model is not WordPiece (ECAMP masks whole WordPiece words)".into(),
        ));
    }
    for (id, t) in SPECIAL_TOKENS.iter().enumerate() {
        match tok.token_to_id(t) {
            Some(got) if got as usize == id => {}
            got => return Err(IngestError::Vocab(format!("token {t} must have id {id}, has {got:?}"))),
        }
    }
    // The text pipeline splits reports into sentences at this token.
    if tok.token_to_id(".").is_none() {
        return Err(IngestError::Vocab(
            "the vocabulary has no \".\" token (reports are split into sentences at it)".into(),
        ));
    }
    let size = tok.get_vocab_size(true);
    if let Some((token, id)) = tok.get_vocab(true).into_iter().find(|(_, id)| *id as usize >= size) {
        return Err(IngestError::Vocab(format!(
            "token {token:?} has id {id}, but the vocabulary has {size} tokens (ids must be 0..{size})"
        )));
    }
    Ok(())
}

/// Loads and checks a `tokenizer.json`.
pub fn load(bytes: &[u8]) -> Result<Tokenizer> {
    let tok = Tokenizer::from_bytes(bytes).map_err(verr)?;
    check(&tok)?;
    Ok(tok)
}

/// Stores a tokenizer under `_ecamp/vocab/<hash>.json`.
pub async fn store(ds: &Dataset, tok: &Tokenizer) -> Result<VocabInfo> {
    let json = tok.to_string(false).map_err(verr)?;
    let hash = ecamp_store::shard::sha256_hex(json.as_bytes())[..16].to_string();
    let path = format!("{VOCAB_DIR}/{hash}.json");
    let loc = ds.location();
    loc.store()
        .put(&loc.path(&path), PutPayload::from(json.into_bytes()))
        .await
        .map_err(|e| loc.storage_error(&path, &e))?;
    Ok(VocabInfo { path, hash, vocab_size: tok.get_vocab_size(true) })
}

/// The vocabularies stored in a dataset (under [`VOCAB_DIR`]), by path.
pub async fn list_stored(ds: &Dataset) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    let loc = ds.location();
    let prefix = loc.path(VOCAB_DIR);
    let found: Vec<object_store::ObjectMeta> =
        loc.store().list(Some(&prefix)).try_collect().await.map_err(|e| loc.storage_error(VOCAB_DIR, &e))?;
    let mut paths: Vec<String> = found
        .iter()
        .filter_map(|m| m.location.filename().filter(|f| f.ends_with(".json")).map(|f| format!("{VOCAB_DIR}/{f}")))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads and checks a stored vocabulary (`path` relative to the dataset). A file named by its
/// hash, as [`store`] names them, must still hash to its name.
pub async fn fetch(ds: &Dataset, path: &str) -> Result<Tokenizer> {
    let loc = ds.location();
    let got = loc.store().get(&loc.path(path)).await.map_err(|e| loc.storage_error(path, &e))?;
    let bytes = got.bytes().await.map_err(|e| loc.storage_error(path, &e))?;
    let stem = path.rsplit('/').next().and_then(|n| n.strip_suffix(".json")).unwrap_or("");
    if stem.len() == 16 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hash = ecamp_store::shard::sha256_hex(&bytes);
        if !hash.starts_with(stem) {
            return Err(IngestError::Vocab(format!(
                "{path}: the content hashes to {}, not to its name: it changed after it was stored",
                &hash[..16]
            )));
        }
    }
    load(&bytes).map_err(|e| IngestError::Vocab(format!("{path}: {e}")))
}

/// Reads the vocabulary a snapshot pins, checking its size and sha256 against the pin.
pub async fn fetch_pinned(ds: &Dataset, pin: &ecamp_store::DataFile) -> Result<Tokenizer> {
    let bytes = ds.fetch_pinned(pin).await?;
    load(&bytes).map_err(|e| IngestError::Vocab(format!("{}: {e}", pin.path)))
}

/// The tokenizer restricted to ids `< size` (spec-tiny's trick: the official vocabulary cut to
/// 5,000 ids keeps every id the text pipeline hard-wires and every single-character piece, so
/// WordPiece still tokenises any word, rare words into more pieces).
pub fn truncate(tok: &Tokenizer, size: usize) -> Result<Tokenizer> {
    let json = tok.to_string(false).map_err(verr)?;
    let mut value: serde_json::Value = serde_json::from_str(&json).map_err(verr)?;
    let keep = |id: &serde_json::Value| id.as_u64().is_some_and(|i| (i as usize) < size);
    match value.pointer_mut("/model/vocab").and_then(|v| v.as_object_mut()) {
        Some(vocab) => vocab.retain(|_, id| keep(id)),
        None => return Err(IngestError::Vocab("the tokenizer has no model.vocab table to truncate".into())),
    }
    if let Some(added) = value.pointer_mut("/added_tokens").and_then(|v| v.as_array_mut()) {
        added.retain(|t| t.get("id").is_some_and(keep));
    }
    let cut: Tokenizer = value.to_string().parse().map_err(verr)?;
    check(&cut)?;
    Ok(cut)
}

/// Trains on the reports (samples) and contexts (annotations) of a snapshot and stores the result.
pub async fn build(ds: &Dataset, snap: &Snapshot, vocab_size: usize) -> Result<VocabInfo> {
    let mut texts: Vec<String> = Vec::new();
    for (kind, column) in [(TableKind::Samples, "report"), (TableKind::Annotations, "context")] {
        let Some(pin) = snap.table(kind) else { continue };
        for f in &pin.files {
            for b in ds.read_columns(kind, f, &[column]).await? {
                if let Some(col) = b.column(0).as_any().downcast_ref::<arrow_array::StringArray>() {
                    texts.extend(col.iter().flatten().filter(|t| !t.is_empty()).map(str::to_string));
                }
            }
        }
    }
    if texts.is_empty() {
        return Err(IngestError::Vocab(format!("snapshot {} has no report text to train on", snap.id)));
    }
    let tok = tokio::task::block_in_place(|| train(texts.iter().map(String::as_str), vocab_size))?;
    store(ds, &tok).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn official() -> Option<Vec<u8>> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/mimic_wordpiece.json");
        match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but {p} is unreadable: {e}");
                eprintln!("note: {p} missing, official tokenizer test skipped");
                None
            }
        }
    }

    #[test]
    fn official_tokenizer_gives_official_ids() {
        let Some(bytes) = official() else { return };
        let tok = load(&bytes).expect("official tokenizer loads and passes the checks");
        let ids = |s: &str| tok.encode(s, false).expect("encode").get_ids().to_vec();
        assert_eq!(ids("there is no evidence of"), vec![219, 149, 152, 422, 158]);
        assert_eq!(ids("there is no"), vec![219, 149, 152]);
        assert_eq!(ids("[CLS] Small right pleural effusion."), vec![2, 418, 207, 221, 203, 16]);
        assert_eq!(tok.token_to_id("[MASK]"), Some(3));
        assert_eq!(tok.token_to_id("."), Some(16));
    }

    #[test]
    fn truncated_official_vocabulary_keeps_the_wired_ids() {
        let Some(bytes) = official() else { return };
        let full = load(&bytes).expect("official tokenizer");
        let cut = truncate(&full, 5000).expect("truncate");
        assert_eq!(cut.get_vocab_size(true), 5000);
        let ids = |t: &Tokenizer, s: &str| t.encode(s, false).expect("encode").get_ids().to_vec();
        let common = "[CLS] There is no evidence of pneumothorax. Small right pleural effusion.";
        assert_eq!(ids(&cut, common), ids(&full, common));
        // A rare word splits into more pieces instead of leaving the table.
        let rare = "pneumomediastinum lymphangioleiomyomatosis";
        let got = ids(&cut, rare);
        assert!(got.iter().all(|&i| i < 5000), "{got:?}");
        assert!(got.len() >= ids(&full, rare).len());
        assert!(truncate(&full, 3).is_err(), "cutting away [MASK] is refused");
    }

    #[test]
    fn sizes_that_leave_no_room_or_cannot_be_allocated_are_refused() {
        for size in [0, SPECIAL_TOKENS.len(), usize::MAX] {
            let err = train(["a b c"].into_iter(), size).expect_err("refused").to_string();
            assert!(err.contains(&size.to_string()), "{err}");
        }
    }

    #[test]
    fn a_vocabulary_the_text_pipeline_cannot_use_is_refused() {
        let Some(bytes) = official() else { return };
        let mut value: serde_json::Value = std::str::from_utf8(&bytes).expect("utf-8").parse().expect("json");
        let vocab = value["model"]["vocab"].as_object_mut().expect("a WordPiece vocab");
        vocab.remove(".");
        let err = load(value.to_string().as_bytes()).expect_err("no '.'").to_string();
        assert!(err.contains("\".\""), "{err}");
        let bpe = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":null,"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[PAD]":0,"[UNK]":1,"[CLS]":2,"[MASK]":3,"[SEP]":4,".":5},"unk_token":"[UNK]"}}"#;
        let err = load(bpe.as_bytes()).expect_err("not WordPiece").to_string();
        assert!(err.contains("WordPiece"), "{err}");
    }

    #[test]
    fn an_id_beyond_the_vocabulary_size_is_refused() {
        let corpus: Vec<&str> = ["There is a small right pleural effusion."; 20].to_vec();
        let tok = train(corpus.into_iter(), 100).expect("train");
        let mut value: serde_json::Value = tok.to_string(false).expect("json").parse().expect("value");
        let vocab = value["model"]["vocab"].as_object_mut().expect("a WordPiece vocab");
        let word = vocab.keys().find(|k| !k.starts_with('[')).cloned().expect("a word");
        vocab.insert(word, 99_999.into());
        let err = load(value.to_string().as_bytes()).expect_err("id 99999 in a small vocabulary").to_string();
        assert!(err.contains("99999"), "{err}");
    }

    /// A corpus where the merge budget runs out among many equal-count pairs, so any
    /// hash-order tie-break would show up as a different vocabulary.
    fn tie_heavy_corpus() -> Vec<String> {
        use rand::Rng;
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().collect();
        (0..400)
            .map(|_| {
                (0..8)
                    .map(|_| (0..rng.random_range(3..9)).map(|_| letters[rng.random_range(0..letters.len())]).collect())
                    .collect::<Vec<String>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn training_is_deterministic_ids_included() {
        let corpus = tie_heavy_corpus();
        let json = || {
            let tok = train(corpus.iter().map(String::as_str), 600).expect("train");
            check(&tok).expect("special ids");
            tok.to_string(false).expect("json")
        };
        let first = json();
        for _ in 0..3 {
            assert!(json() == first, "two trainings on the same corpus gave different vocabularies");
        }
    }

    #[test]
    fn trained_vocabulary_has_the_special_ids_and_tokenizes() {
        let texts = [
            "There is a small right pleural effusion.",
            "No pneumothorax. There is no evidence of consolidation.",
            "Heart size is normal. The lungs are clear.",
        ];
        let corpus: Vec<&str> = texts.iter().cycle().take(60).copied().collect();
        let tok = train(corpus.into_iter(), 200).expect("train");
        check(&tok).expect("special ids");
        let enc = tok.encode("[CLS] There is no pneumothorax.", false).expect("encode");
        assert_eq!(enc.get_ids()[0], 2);
        assert!(!enc.get_ids().contains(&1), "known words must not be [UNK]: {:?}", enc.get_tokens());
        // The pinned `##c` pieces are ordinary vocabulary, not added tokens matched in raw text.
        assert_eq!(tok.get_added_tokens_decoder().len(), SPECIAL_TOKENS.len());
        let split = tok.encode("the ##e", false).expect("encode");
        assert_ne!(split.get_tokens().last().map(String::as_str), Some("##e"), "{:?}", split.get_tokens());
    }
}
