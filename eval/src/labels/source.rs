//! Label sources as named on the command line (`KIND:PATH`), and loading the file-based ones.

use super::{ChexpertClasses, ChexpertOptions, LabelSet, PHANTOM_CLASSES, Uncertain};
use crate::error::{EvalError, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the ground truth of an evaluation comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// `chestxray14:PATH` — NIH `Data_Entry_2017.csv`.
    ChestXray14(PathBuf),
    /// `chexpert:PATH` — CheXpert `train.csv` or `valid.csv`.
    Chexpert(PathBuf),
    /// `rsna:PATH` — RSNA Pneumonia `stage_2_train_labels.csv`.
    Rsna(PathBuf),
    /// `siim:PATH` — SIIM-ACR `train-rle.csv`.
    Siim(PathBuf),
    /// `phantom` or `phantom:ENTITY` — the dataset's own phantom ground truth, optionally focused on one entity
    /// for boxes and masks. The rows come from the dataset; see [`super::phantom_labels`].
    Phantom {
        /// Entity whose boxes and masks are kept (all entities when None).
        focus: Option<String>,
    },
}

/// Options that apply when loading a label source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LoadOptions {
    /// What uncertain labels become (CheXpert `-1.0`, phantom `uncertain`).
    pub uncertain: Uncertain,
    /// Which CheXpert observations become classes.
    pub chexpert_classes: ChexpertClasses,
    /// CheXpert: keep frontal views only.
    pub frontal_only: bool,
}

impl LabelSource {
    /// The label file, None for phantom labels.
    pub fn path(&self) -> Option<&Path> {
        match self {
            LabelSource::ChestXray14(p) | LabelSource::Chexpert(p) | LabelSource::Rsna(p) | LabelSource::Siim(p) => {
                Some(p)
            }
            LabelSource::Phantom { .. } => None,
        }
    }

    /// Reads a file-based source (plain or `.gz`); phantom labels are an error because they live in the dataset.
    pub fn load(&self, options: &LoadOptions) -> Result<LabelSet> {
        let name = |p: &Path| p.display().to_string();
        match self {
            LabelSource::ChestXray14(p) => super::chestxray14(super::open(p)?, &name(p)),
            LabelSource::Chexpert(p) => {
                let o = ChexpertOptions {
                    uncertain: options.uncertain,
                    classes: options.chexpert_classes,
                    frontal_only: options.frontal_only,
                };
                super::chexpert(super::open(p)?, &name(p), &o)
            }
            LabelSource::Rsna(p) => super::rsna(super::open(p)?, &name(p)),
            LabelSource::Siim(p) => super::siim(super::open(p)?, &name(p)),
            LabelSource::Phantom { .. } => Err(EvalError::Spec {
                spec: self.to_string(),
                message: "phantom labels come from the dataset's labels table, not a file (use phantom_labels)".into(),
            }),
        }
    }
}

impl FromStr for LabelSource {
    type Err = EvalError;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = |message: &str| EvalError::Spec { spec: spec.to_string(), message: message.to_string() };
        let (kind, rest) = match spec.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (spec, None),
        };
        let file = |make: fn(PathBuf) -> LabelSource| match rest {
            Some(p) if !p.is_empty() => Ok(make(PathBuf::from(p))),
            _ => Err(bad("expected KIND:PATH with a label file path")),
        };
        match kind.to_ascii_lowercase().as_str() {
            "chestxray14" => file(LabelSource::ChestXray14),
            "chexpert" => file(LabelSource::Chexpert),
            "rsna" => file(LabelSource::Rsna),
            "siim" => file(LabelSource::Siim),
            "phantom" => match rest {
                None | Some("") => Ok(LabelSource::Phantom { focus: None }),
                Some(f) if PHANTOM_CLASSES.contains(&f) => Ok(LabelSource::Phantom { focus: Some(f.to_string()) }),
                Some(_) => Err(bad(&format!("phantom focus must be one of {}", PHANTOM_CLASSES.join(", ")))),
            },
            _ => Err(bad(
                "unknown kind (expected chestxray14:PATH, chexpert:PATH, rsna:PATH, siim:PATH or phantom[:ENTITY])",
            )),
        }
    }
}

impl fmt::Display for LabelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelSource::ChestXray14(p) => write!(f, "chestxray14:{}", p.display()),
            LabelSource::Chexpert(p) => write!(f, "chexpert:{}", p.display()),
            LabelSource::Rsna(p) => write!(f, "rsna:{}", p.display()),
            LabelSource::Siim(p) => write!(f, "siim:{}", p.display()),
            LabelSource::Phantom { focus: None } => f.write_str("phantom"),
            LabelSource::Phantom { focus: Some(e) } => write!(f, "phantom:{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn specs_parse_and_round_trip() {
        for spec in [
            "chestxray14:/d/Data_Entry_2017.csv",
            "chexpert:valid.csv",
            "rsna:a:b.csv",
            "siim:x.csv.gz",
            "phantom",
            "phantom:effusion",
        ] {
            let s: LabelSource = spec.parse().unwrap();
            assert_eq!(s.to_string(), spec);
        }
        assert_eq!("rsna:a:b.csv".parse::<LabelSource>().unwrap().path(), Some(Path::new("a:b.csv")));
        for bad in ["chexpert", "chexpert:", "mimic:x", "phantom:fracture", ""] {
            assert!(matches!(bad.parse::<LabelSource>(), Err(EvalError::Spec { .. })), "{bad}");
        }
    }

    #[test]
    fn loads_plain_and_gzipped_files_and_names_them_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let text = "patientId,x,y,width,height,Target\na,,,,,0\nb,1,2,3,4,1\n";
        let plain = dir.path().join("stage_2_train_labels.csv");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("stage_2_train_labels.csv.gz");
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let o = LoadOptions::default();
        let a = LabelSource::Rsna(plain.clone()).load(&o).unwrap();
        let b = LabelSource::Rsna(gz).load(&o).unwrap();
        assert_eq!(a.items, b.items);
        assert_eq!(a.len(), 2);

        let cx = dir.path().join("valid.csv");
        std::fs::write(
            &cx,
            "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices\n\
             v/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,1.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0\n",
        )
        .unwrap();
        let all = LoadOptions { chexpert_classes: ChexpertClasses::All, ..o };
        assert_eq!(LabelSource::Chexpert(cx.clone()).load(&all).unwrap().classes.len(), 14);
        assert_eq!(LabelSource::Chexpert(cx).load(&o).unwrap().items[0].targets, vec![0.0, 1.0, 0.0, 1.0, 1.0]);

        std::fs::write(&plain, "patientId,x,y,width,height,Target\na,,,,,2\n").unwrap();
        let err = LabelSource::Rsna(plain.clone()).load(&o).unwrap_err().to_string();
        assert!(err.contains(&plain.display().to_string()) && err.contains("line 2"), "{err}");
        let missing = LabelSource::Siim(dir.path().join("nope.csv")).load(&o).unwrap_err();
        assert!(matches!(missing, EvalError::Io { .. }));
        assert!(LabelSource::Phantom { focus: None }.load(&o).is_err());
    }
}
