//! Entity lexicon for the offline `rules` distiller: the 44 ECAMP entities (spec §2.5), their surface forms in
//! radiology reports, and the descriptor vocabulary.
//!
//! Patterns are regex fragments matched against lower-cased report text (IU reports anonymise words as `xxxx`).

/// How a surface form relates to the entity's polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assertion {
    /// Polarity comes from negation/uncertainty cues around the match (NegEx style).
    Cue,
    /// The phrase itself states that the entity is absent ("heart size is normal").
    Normal,
}

/// One surface form of an entity.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    /// ECAMP entity string (lower-case), or `""` for a blocker that consumes text without producing an entity.
    pub entity: &'static str,
    /// Regex fragment, matched with word boundaries on both sides.
    pub pattern: &'static str,
    /// Whether the phrase carries its own polarity.
    pub assertion: Assertion,
    /// Overlay terms (an anatomical structure plus its abnormal qualifier) neither consume nor are consumed by
    /// other matches, so "tortuous calcified aorta" still yields calcification.
    pub overlay: bool,
}

/// An ECAMP entity and the readable phrase used for it in the context sentences.
#[derive(Debug, Clone, Copy)]
pub struct Entity {
    /// ECAMP entity string, lower-case (`copd`, not `COPD`).
    pub name: &'static str,
    /// Phrase used in "There is <phrase>."; contains the entity word so ECAMP's entity matching still finds it.
    pub phrase: &'static str,
}

/// The 44 ECAMP entities in spec order.
pub const ENTITIES: &[Entity] = &[
    Entity { name: "abnormality", phrase: "abnormality" },
    Entity { name: "abscess", phrase: "abscess" },
    Entity { name: "aerate", phrase: "poor aeration" },
    Entity { name: "aorta", phrase: "abnormal aorta" },
    Entity { name: "atelectasis", phrase: "atelectasis" },
    Entity { name: "bronchiectasis", phrase: "bronchiectasis" },
    Entity { name: "calcification", phrase: "calcification" },
    Entity { name: "cardiomediastinal", phrase: "cardiomediastinal enlargement" },
    Entity { name: "cardiomegaly", phrase: "cardiomegaly" },
    Entity { name: "catheter", phrase: "catheter" },
    Entity { name: "chf", phrase: "chf" },
    Entity { name: "collapse", phrase: "collapse" },
    Entity { name: "congestion", phrase: "vascular congestion" },
    Entity { name: "consolidation", phrase: "consolidation" },
    Entity { name: "contour", phrase: "abnormal contour" },
    Entity { name: "copd", phrase: "copd" },
    Entity { name: "deformity", phrase: "deformity" },
    Entity { name: "dilation", phrase: "dilation" },
    Entity { name: "distention", phrase: "distention" },
    Entity { name: "edema", phrase: "pulmonary edema" },
    Entity { name: "effusion", phrase: "pleural effusion" },
    Entity { name: "embolism", phrase: "pulmonary embolism" },
    Entity { name: "emphysema", phrase: "emphysema" },
    Entity { name: "engorgement", phrase: "vascular engorgement" },
    Entity { name: "fibrosis", phrase: "fibrosis" },
    Entity { name: "fracture", phrase: "fracture" },
    Entity { name: "granuloma", phrase: "granuloma" },
    Entity { name: "hernia", phrase: "hiatal hernia" },
    Entity { name: "hilar", phrase: "hilar enlargement" },
    Entity { name: "hyperinflate", phrase: "hyperinflation" },
    Entity { name: "hemidiaphragm", phrase: "elevated hemidiaphragm" },
    Entity { name: "infiltrate", phrase: "infiltrate" },
    Entity { name: "mass", phrase: "mass" },
    Entity { name: "nodule", phrase: "nodule" },
    Entity { name: "obscure", phrase: "obscure margin" },
    Entity { name: "opacity", phrase: "opacity" },
    Entity { name: "perihilar", phrase: "perihilar fullness" },
    Entity { name: "pneumonia", phrase: "pneumonia" },
    Entity { name: "pneumothorax", phrase: "pneumothorax" },
    Entity { name: "sarcoidosis", phrase: "sarcoidosis" },
    Entity { name: "silhouette", phrase: "silhouette sign" },
    Entity { name: "thickening", phrase: "thickening" },
    Entity { name: "tuberculosis", phrase: "tuberculosis" },
    Entity { name: "vasculature", phrase: "abnormal vasculature" },
];

/// Looks up an entity by its ECAMP name.
pub fn entity(name: &str) -> Option<&'static Entity> {
    ENTITIES.iter().find(|e| e.name == name)
}

macro_rules! t {
    ($e:expr, $p:expr) => {
        Term { entity: $e, pattern: $p, assertion: Assertion::Cue, overlay: false }
    };
    ($e:expr, $p:expr, normal) => {
        Term { entity: $e, pattern: $p, assertion: Assertion::Normal, overlay: false }
    };
    ($e:expr, $p:expr, overlay) => {
        Term { entity: $e, pattern: $p, assertion: Assertion::Cue, overlay: true }
    };
}

/// Fixed-text surface forms. Longer phrases win over shorter overlapping ones at match time, so blockers and
/// specific phrases ("calcified granuloma") pre-empt generic ones ("calcified").
pub const TERMS: &[Term] = &[
    // Blockers: phrases containing a lexicon word that do not report that finding.
    t!("", r"pericardial effusions?"),
    t!("", r"subcutaneous emphysema"),
    t!("", r"(?:pulmonary|lung)\s+nodules?\s+or\s+mass(?:es)?\s+is\s+not\s+excluded"),
    t!("", r"(?:no|without)\s+(?:interval|significant|substantial)?\s*change"),
    t!("", r"mass effect"),
    t!("", r"soft tissue density"),
    t!("", r"bone density|bony density|osseous density"),
    // abnormality
    t!("abnormality", r"abnormalit(?:y|ies)"),
    t!(
        "abnormality",
        r"acute\s+(?:cardiopulmonary|cardiac|pulmonary|intrathoracic|thoracic|chest)?\s*(?:disease|process|findings?)"
    ),
    t!("abscess", r"abscess(?:es)?"),
    // aerate: lungs poorly aerated / hypoaeration; "well aerated" states normality.
    t!("aerate", r"(?:poorly|under|hypo|low)[- ]?aerat(?:ed|ion)|hypoaerat(?:ed|ion)|low lung volumes?"),
    t!("aerate", r"(?:well|normally)[- ]aerated", normal),
    // aorta: abnormal qualifier within a few words of the vessel, either order
    t!(
        "aorta",
        r"(?:tortuous|torturous|tortuosity|ectatic|ectasia|unfolded|unfolding|dilated|dilatation|dilation|enlarged|enlargement|widened|aneurysm(?:al)?|prominent)(?:[\s,/]+[\w-]+){0,4}?[\s,/]+aort(?:a|ic)",
        overlay
    ),
    t!(
        "aorta",
        r"aort(?:a|ic)(?:[\s,/]+[\w-]+){0,4}?[\s,/]+(?:tortuous|torturous|tortuosity|ectatic|ectasia|unfolded|unfolding|dilated|dilatation|dilation|enlarged|enlargement|widened|aneurysm(?:al)?|prominent)",
        overlay
    ),
    t!("aorta", r"aorta(?:\s+(?:is|appears))?\s+(?:normal|unremarkable)", normal),
    // atelectasis
    t!(
        "atelectasis",
        r"atelectas[ie]s|atelectatic|volume loss|subsegmental collapse|plate[- ]?like\s+(?:opacit(?:y|ies)|densit(?:y|ies))"
    ),
    t!("bronchiectasis", r"bronchiectasis|bronchiectatic"),
    // calcification (calcified granulomas are handled by the granuloma terms below)
    t!("calcification", r"calcifications?|calcified|calcific|calcium"),
    // cardiomediastinal
    t!(
        "cardiomediastinal",
        r"(?:enlarged|widened|prominent)\s+cardiomediastinal\s+(?:silhouette|contours?|shadow)|cardiomediastinal\s+(?:silhouette|contours?|shadow)(?:\s+(?:is|are|appears?|remains?|mildly|moderately|again|xxxx))*\s+(?:enlarged|widened|prominent)"
    ),
    t!(
        "cardiomediastinal",
        r"cardiomediastinal\s+(?:silhouette|contours?|shadow)(?:\s+(?:and\s+\w+\s+\w+|is|are|appears?|remains?|stable|xxxx))*\s+(?:normal|unremarkable|within\s+normal\s+limits)|normal\s+cardiomediastinal\s+(?:silhouette|contours?|shadow)",
        normal
    ),
    // cardiomegaly
    t!(
        "cardiomegaly",
        r"cardiomegaly|cardiac\s+(?:enlargement|hypertrophy)|cardiomyopathy|enlarged\s+(?:heart|cardiac\s+(?:silhouette|shadow|size)|cardiomediastinal\s+silhouette)|(?:heart|cardiac)\s+(?:silhouette\s+|shadow\s+)?(?:size\s+)?(?:is\s+|are\s+|appears?\s+|remains?\s+|again\s+|xxxx\s+|stable\s+)*(?:mildly\s+|moderately\s+|markedly\s+|severely\s+|slightly\s+|minimally\s+|borderline\s+|top\s+normal\s+to\s+)?(?:enlarged|increased|large)|enlargement\s+of\s+the\s+(?:cardiac\s+silhouette|heart|cardiac\s+shadow)"
    ),
    t!(
        "cardiomegaly",
        r"(?:heart|cardiac)\s+(?:silhouette\s+|shadow\s+)?(?:size\s+|sizes\s+)?(?:and\s+\w+\s+(?:size\s+|contours?\s+)?)?(?:is\s+|are\s+|appears?\s+|remains?\s+|within\s+)*(?:normal|unremarkable|within\s+normal\s+limits|normal\s+in\s+size|stable\s+and\s+normal)|normal\s+(?:heart|cardiac)\s+(?:size|silhouette)|(?:heart|cardiac\s+silhouette)\s+(?:is\s+)?not\s+enlarged|(?:heart|cardiac)(?:\s+(?:size|silhouette|is|at|the))*\s+upper\s+limits?\s+of\s+normal|upper\s+limits?\s+of\s+normal\s+(?:in\s+size\s+)?heart",
        normal
    ),
    // catheter (lines and tubes)
    t!(
        "catheter",
        r"catheters?|picc(?:\s+lines?)?s?|(?:central|venous|subclavian|jugular|ij|dialysis|swan[- ]ganz)\s+(?:venous\s+)?lines?|lines?\s+(?:and|or)\s+tubes|tubes?\s+(?:and|or)\s+lines|(?:line|catheter|tube)\s+tips?|port[- ]?a[- ]?cath|portacath|xxxx-a-xxxx|(?:chest|subclavian|jugular|ij)\s+xxxx|tubing|shunt|tracheostomy|(?:endotracheal|et|ng|nasogastric|orogastric|og|feeding|dobhoff|enteric|chest|gastrostomy)\s+tubes?"
    ),
    t!("chf", r"chf|congestive\s+heart\s+failure|(?:cardiac|heart)\s+failure|cardiac\s+decompensation"),
    t!("collapse", r"collapsed?"),
    t!(
        "congestion",
        r"congestion|congested|congestive\s+changes?|cephalization|pulmonary\s+venous\s+hypertension|(?:central\s+)?(?:pulmonary\s+|lung\s+)?vascular\s+(?:prominence|congestive\s+changes?|redistribution|engorgement|fullness)|indistinct\s+(?:central\s+)?(?:pulmonary\s+)?vascular(?:\s+margination|ity|ature)?|(?:prominen(?:t|ce)|increased|engorged)\s+(?:of\s+the\s+)?(?:central\s+)?(?:pulmonary\s+|lung\s+)?(?:vasculature|vascularity)|(?:pulmonary\s+|lung\s+)?(?:vasculature|vascularity)(?:\s+(?:is|are|appears?|remains?|mildly|moderately|slightly|persistently|again|xxxx))*\s+(?:prominent|increased|enlarged|indistinct|engorged)"
    ),
    t!(
        "consolidation",
        r"consolidations?|consolidative|consolidated|air[- ]?space\s+(?:disease|process|consolidation)"
    ),
    t!("contour", r"contour\s+abnormalit(?:y|ies)|abnormal\s+contours?"),
    t!("copd", r"copd|chronic\s+obstructive|obstructive\s+(?:pulmonary|lung|airways?)\s+disease"),
    t!(
        "deformity",
        r"deformit(?:y|ies)|deformed|(?:anterior\s+)?wedg(?:e|ed|ing)|pectus(?:\s+(?:excavatum|carinatum))?"
    ),
    t!("dilation", r"dilat(?:ion|ation|ed)"),
    t!("distention", r"disten(?:tion|sion|ded)"),
    t!("edema", r"o?edema(?:tous)?"),
    t!("effusion", r"effusions?|pleural\s+fluid|hydrothorax|fluid\s+in\s+the\s+(?:major|minor)?\s*fissure"),
    t!("embolism", r"embol(?:ism|us|i)"),
    t!("emphysema", r"emphysema(?:tous)?"),
    t!("engorgement", r"engorge(?:ment|d)"),
    t!("fibrosis", r"fibrosis|fibrotic|scar(?:s|ring|red)?|cicatri(?:x|ces)"),
    t!("fracture", r"fractures?|fractured|fx"),
    t!(
        "granuloma",
        r"calci(?:fied|fic)(?:[\s,]+[\w-]+){0,4}?\s+granulom(?:as?|ata|atous(?:\s+(?:disease|infection|process|calcifications?|nodes?))?)|granulomas?|granulomata|granulomatous(?:\s+(?:disease|infection|process|calcifications?|nodes?))?|(?:calcified|calcific)\s+nodules?"
    ),
    t!("hernia", r"hernia(?:tion|s)?"),
    t!(
        "hilar",
        r"(?:enlarged|prominent|full)\s+(?:hil(?:a|um|ar)|hilar\s+(?:lymph\s+nodes?|shadows?|contours?))|hil(?:a|um|ar\s+(?:contours?|shadows?|structures?|regions?))(?:\s+(?:is|are|appears?|remains?|mildly|moderately|again|xxxx|bilaterally))*\s+(?:enlarged|prominent|full)|hilar\s+(?:adenopathy|lymphadenopathy|enlargement|fullness|prominence|mass)"
    ),
    t!(
        "hilar",
        r"hil(?:a|um|ar\s+(?:contours?|shadows?|structures?|regions?))(?:\s+(?:is|are|appears?))?\s+(?:normal|unremarkable)",
        normal
    ),
    t!(
        "hyperinflate",
        r"hyper[- ]?(?:inflat|expan|aerat|lucen)(?:ed|ion|sion|ded|t|cy)?|over[- ]?(?:inflat|expan)(?:ed|ion|sion|ded)|increased\s+lung\s+volumes?"
    ),
    t!(
        "hemidiaphragm",
        r"(?:elevat(?:ed|ion)|flatten(?:ed|ing)|eventration|tenting|paralysis)\s+(?:of\s+)?(?:the\s+|both\s+)?(?:(?:right|left|bilateral|posterior|lateral|anterior|mildly|mild)\s+)*(?:hemi)?diaphragms?|(?:hemi)?diaphragms?(?:\s+(?:is|are|appears?|remains?|mildly|moderately|markedly|again|xxxx|relatively|slightly))*\s+(?:elevated|flattened)|(?:hemi)?diaphragm(?:atic)?\s+(?:elevation|eventration|flattening|paralysis)",
        overlay
    ),
    t!("infiltrate", r"infiltrates?|infiltration|infiltrative"),
    t!("mass", r"mass(?:es)?|tumou?rs?|neoplasms?|malignan(?:cy|t)"),
    t!("nodule", r"nodules?|nodular(?:ity)?"),
    t!("obscure", r"obscur(?:ed|es|ing|ation)"),
    t!(
        "opacity",
        r"nodular(?:[\s-]+like)?\s+(?:opacit(?:y|ies)|densit(?:y|ies))|opacit(?:y|ies)|opacifi(?:cation|ed)|densit(?:y|ies)|haziness|hazy"
    ),
    t!("perihilar", r"perihilar"),
    t!("pneumonia", r"pneumonias?|pneumonitis|bronchopneumonia|infectious\s+(?:process|etiology|infiltrate)|infection"),
    t!("pneumothorax", r"pneumothora(?:x|ces)|ptx"),
    t!("sarcoidosis", r"sarcoid(?:osis)?"),
    t!(
        "silhouette",
        r"silhouette\s+sign|silhouett(?:es|ing)\s+(?:of\s+)?the\s+(?:heart|cardiac|right|left|hemidiaphragm|diaphragm)"
    ),
    t!("thickening", r"thickening|thickened"),
    t!(
        "tuberculosis",
        r"(?:tuberculosis|tuberculous)\s+(?:infection|pneumonia)|tuberculosis|tuberculous|tb|mycobacterial"
    ),
    t!(
        "vasculature",
        r"(?:attenuated|diminished|decreased|pruned|pruning\s+of\s+the)\s+(?:pulmonary\s+|peripheral\s+)?(?:vasculature|vascularity|vascular\s+markings)"
    ),
    t!(
        "vasculature",
        r"(?:pulmonary\s+)?(?:vasculature|vascularity)(?:\s+(?:is|are|appears?))?\s+(?:normal|unremarkable|within\s+normal\s+limits)|normal\s+(?:pulmonary\s+)?(?:vasculature|vascularity)",
        normal
    ),
];

/// Descriptor vocabulary (size, side, location, severity, character); multi-word entries are matched first.
pub const DESCRIPTORS: &[&str] = &[
    "upper lobe",
    "middle lobe",
    "lower lobe",
    "small",
    "moderate",
    "large",
    "tiny",
    "mild",
    "severe",
    "minimal",
    "trace",
    "marked",
    "extensive",
    "slight",
    "borderline",
    "left",
    "right",
    "bilateral",
    "bibasilar",
    "base",
    "bases",
    "basilar",
    "basal",
    "apical",
    "apex",
    "perihilar",
    "retrocardiac",
    "lingula",
    "lingular",
    "hilar",
    "midlung",
    "subsegmental",
    "focal",
    "diffuse",
    "patchy",
    "linear",
    "streaky",
    "interstitial",
    "calcified",
    "chronic",
    "acute",
    "healed",
    "old",
    "new",
    "multiple",
    "nodular",
    "scattered",
];

/// Adverb forms folded onto their adjective so descriptors stay a small closed set.
pub fn fold_descriptor(word: &str) -> &str {
    match word {
        "mildly" => "mild",
        "moderately" => "moderate",
        "severely" => "severe",
        "minimally" => "minimal",
        "markedly" => "marked",
        "slightly" => "slight",
        "bilaterally" => "bilateral",
        "both" => "bilateral",
        other => other,
    }
}
