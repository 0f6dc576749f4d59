//! Parser for one IU X-ray (Open-i `ecgen-radiology/NNNN.xml`) radiology report.
//!
//! The collection is CC BY-NC-ND: this module only reads files supplied at run time and never embeds report text.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use thiserror::Error;

/// Failure to read an IU X-ray report XML.
#[derive(Debug, Error)]
pub enum IuError {
    /// The document is not well-formed XML.
    #[error("IU X-ray report is not well-formed XML at byte {position}: {message}")]
    Xml {
        /// Byte offset where the reader stopped.
        position: u64,
        /// Reader diagnostic.
        message: String,
    },
    /// The document ended while elements were still open.
    #[error("IU X-ray report XML ended with unclosed element <{0}>")]
    Truncated(String),
    /// The root element is not `<eCitation>`, so this is not an Open-i report.
    #[error("IU X-ray report has root element <{0}>, expected <eCitation>")]
    WrongRoot(String),
    /// The `<uId id="...">` element is missing or empty; without it the report cannot be keyed.
    #[error("IU X-ray report has no <uId id=\"...\"> identifier")]
    MissingUid,
}

/// One parsed IU X-ray report.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct IuReport {
    /// Report identifier from `<uId id="...">`, e.g. `CXR1`.
    pub uid: String,
    /// `FINDINGS` section text, `None` when absent or blank.
    pub findings: Option<String>,
    /// `IMPRESSION` section text, `None` when absent or blank.
    pub impression: Option<String>,
    /// `INDICATION` section text, `None` when absent or blank.
    pub indication: Option<String>,
    /// MeSH `<major>` tags in document order, e.g. `Pleural Effusion/bilateral/small`.
    pub mesh_major: Vec<String>,
    /// MeSH `<minor>` tags in document order.
    pub mesh_minor: Vec<String>,
    /// `id` attributes of the `<parentImage>` elements (image file stems).
    pub image_ids: Vec<String>,
}

impl IuReport {
    /// Findings and impression joined as `FINDINGS: … IMPRESSION: …`; `None` when both are empty.
    pub fn report_text(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(f) = &self.findings {
            parts.push(format!("FINDINGS: {}", terminated(f)));
        }
        if let Some(i) = &self.impression {
            parts.push(format!("IMPRESSION: {}", terminated(i)));
        }
        if parts.is_empty() { None } else { Some(parts.join(" ")) }
    }
}

/// Adds a final period so the two sections never merge into one sentence downstream.
fn terminated(s: &str) -> String {
    let s = s.trim();
    if s.ends_with(['.', '!', '?']) { s.to_string() } else { format!("{s}.") }
}

/// Which text-bearing element the reader is currently inside.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Findings,
    Impression,
    Indication,
    Major,
    Minor,
    Ignored,
}

/// Parses one report XML document.
pub fn parse_iu_report(xml: &str) -> Result<IuReport, IuError> {
    let mut reader = Reader::from_str(xml);
    let mut report = IuReport::default();
    let mut stack: Vec<String> = Vec::new();
    // The slot being collected and the stack depth of its element, so nested markup inside it is kept as text.
    let mut slot: Option<(Slot, usize)> = None;
    let mut buf = String::new();
    let mut saw_root = false;

    loop {
        let pos = reader.buffer_position();
        let event = reader.read_event().map_err(|e| IuError::Xml { position: pos, message: e.to_string() })?;
        match event {
            Event::Start(e) => {
                let name = tag_name(&e);
                check_root(&mut saw_root, &stack, &name)?;
                handle_attributes(&mut report, &e, &name, pos)?;
                if slot.is_none()
                    && let Some(s) = text_slot(&e, &name, pos)?
                {
                    buf.clear();
                    slot = Some((s, stack.len()));
                }
                stack.push(name);
            }
            Event::Empty(e) => {
                let name = tag_name(&e);
                check_root(&mut saw_root, &stack, &name)?;
                handle_attributes(&mut report, &e, &name, pos)?;
            }
            Event::End(_) => {
                // quick-xml already verified the end name matches the open element.
                stack.pop();
                if let Some((s, depth)) = slot
                    && stack.len() == depth
                {
                    store(&mut report, s, &buf);
                    slot = None;
                }
            }
            Event::Text(t) => {
                if slot.is_some() {
                    let text = t.decode().map_err(|e| IuError::Xml { position: pos, message: e.to_string() })?;
                    buf.push_str(&text);
                }
            }
            Event::CData(t) => {
                if slot.is_some() {
                    let text = t.decode().map_err(|e| IuError::Xml { position: pos, message: e.to_string() })?;
                    buf.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                if slot.is_some() {
                    let resolved = resolve_ref(&r, pos)?;
                    buf.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.pop() {
        return Err(IuError::Truncated(open));
    }
    if !saw_root || report.uid.is_empty() {
        return Err(IuError::MissingUid);
    }
    Ok(report)
}

fn tag_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

fn check_root(saw_root: &mut bool, stack: &[String], name: &str) -> Result<(), IuError> {
    if stack.is_empty() {
        if *saw_root || name != "eCitation" {
            return Err(IuError::WrongRoot(name.to_string()));
        }
        *saw_root = true;
    }
    Ok(())
}

fn attr(e: &BytesStart<'_>, key: &str, pos: u64) -> Result<Option<String>, IuError> {
    for a in e.attributes() {
        let a = a.map_err(|err| IuError::Xml { position: pos, message: err.to_string() })?;
        if a.key.local_name().as_ref() == key.as_bytes() {
            let v = a.unescape_value().map_err(|err| IuError::Xml { position: pos, message: err.to_string() })?;
            return Ok(Some(v.trim().to_string()));
        }
    }
    Ok(None)
}

fn handle_attributes(report: &mut IuReport, e: &BytesStart<'_>, name: &str, pos: u64) -> Result<(), IuError> {
    match name {
        "uId" => {
            if let Some(id) = attr(e, "id", pos)? {
                report.uid = id;
            }
        }
        "parentImage" => {
            if let Some(id) = attr(e, "id", pos)?
                && !id.is_empty()
            {
                report.image_ids.push(id);
            }
        }
        _ => {}
    }
    Ok(())
}

fn text_slot(e: &BytesStart<'_>, name: &str, pos: u64) -> Result<Option<Slot>, IuError> {
    Ok(match name {
        "major" => Some(Slot::Major),
        "minor" => Some(Slot::Minor),
        "AbstractText" => match attr(e, "Label", pos)?.map(|l| l.to_ascii_uppercase()).as_deref() {
            Some("FINDINGS") => Some(Slot::Findings),
            Some("IMPRESSION") => Some(Slot::Impression),
            Some("INDICATION") => Some(Slot::Indication),
            _ => Some(Slot::Ignored),
        },
        _ => None,
    })
}

fn resolve_ref(r: &quick_xml::events::BytesRef<'_>, pos: u64) -> Result<String, IuError> {
    let bad = |message: String| IuError::Xml { position: pos, message };
    if let Some(c) = r.resolve_char_ref().map_err(|e| bad(e.to_string()))? {
        return Ok(c.to_string());
    }
    let name = r.decode().map_err(|e| bad(e.to_string()))?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(str::to_string)
        .ok_or_else(|| bad(format!("unknown entity &{name};")))
}

/// Collapses whitespace so multi-line sections become single-line text.
fn clean(text: &str) -> Option<String> {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() { None } else { Some(joined) }
}

fn store(report: &mut IuReport, slot: Slot, text: &str) {
    let Some(text) = clean(text) else { return };
    match slot {
        Slot::Findings => report.findings = Some(text),
        Slot::Impression => report.impression = Some(text),
        Slot::Indication => report.indication = Some(text),
        Slot::Major => report.mesh_major.push(text),
        Slot::Minor => report.mesh_minor.push(text),
        Slot::Ignored => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic report in the Open-i layout (invented text; no IU report content).
    const SAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR9999"/>
   <MedlineCitation Owner="Test">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Cough &amp; fever</AbstractText>
            <AbstractText Label="FINDINGS">Small left
               effusion. Heart size &lt; normal &#8212; stable.</AbstractText>
            <AbstractText Label="IMPRESSION"><![CDATA[Left effusion]]></AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>Pleural Effusion/left/small</major>
      <major>Cardiomegaly</major>
      <minor>Lung/base</minor>
   </MeSH>
   <parentImage id="CXR9999_1_IM-0001-1001"><figureId>F1</figureId></parentImage>
   <parentImage id="CXR9999_1_IM-0001-2001"><figureId>F2</figureId></parentImage>
</eCitation>"#;

    #[test]
    fn parses_synthetic_report() {
        let r = parse_iu_report(SAMPLE).unwrap();
        assert_eq!(r.uid, "CXR9999");
        assert_eq!(r.indication.as_deref(), Some("Cough & fever"));
        assert_eq!(r.findings.as_deref(), Some("Small left effusion. Heart size < normal \u{2014} stable."));
        assert_eq!(r.impression.as_deref(), Some("Left effusion"));
        assert_eq!(r.mesh_major, vec!["Pleural Effusion/left/small", "Cardiomegaly"]);
        assert_eq!(r.mesh_minor, vec!["Lung/base"]);
        assert_eq!(r.image_ids, vec!["CXR9999_1_IM-0001-1001", "CXR9999_1_IM-0001-2001"]);
        assert_eq!(
            r.report_text().as_deref(),
            Some("FINDINGS: Small left effusion. Heart size < normal \u{2014} stable. IMPRESSION: Left effusion.")
        );
    }

    #[test]
    fn empty_sections_are_none() {
        let xml = r#"<eCitation><uId id="CXR1"/><Abstract><AbstractText Label="FINDINGS">  </AbstractText>
            <AbstractText Label="IMPRESSION"/></Abstract><MeSH><major>normal</major></MeSH></eCitation>"#;
        let r = parse_iu_report(xml).unwrap();
        assert_eq!(r.findings, None);
        assert_eq!(r.impression, None);
        assert_eq!(r.report_text(), None);
        assert_eq!(r.mesh_major, vec!["normal"]);
        assert!(r.image_ids.is_empty());
    }

    #[test]
    fn malformed_xml_is_an_error() {
        let cases = [
            ("", "no root"),
            ("not xml at all", "text only"),
            (r#"<eCitation><uId id="CXR1"/><MeSH><major>x</MeSH></eCitation>"#, "mismatched end"),
            (r#"<eCitation><uId id="CXR1"/><MeSH><major>x</major>"#, "truncated"),
            (r#"<eCitation><uId id="CXR1/></eCitation>"#, "broken attribute"),
            (
                r#"<eCitation><uId id="CXR1"/><AbstractText Label="FINDINGS">a &bogus; b</AbstractText></eCitation>"#,
                "entity",
            ),
            (r#"<other><uId id="CXR1"/></other>"#, "wrong root"),
            (r#"<eCitation><meta/></eCitation>"#, "no uid"),
            (r#"<eCitation><uId id="CXR1"/></eCitation><eCitation/>"#, "two roots"),
        ];
        for (xml, why) in cases {
            let err = parse_iu_report(xml);
            assert!(err.is_err(), "{why}: {err:?}");
            assert!(!err.unwrap_err().to_string().is_empty());
        }
    }

    #[test]
    fn every_prefix_of_a_report_fails_cleanly_or_parses() {
        for cut in (0..SAMPLE.len()).filter(|&i| SAMPLE.is_char_boundary(i)) {
            let _ = parse_iu_report(&SAMPLE[..cut]);
        }
    }
}
