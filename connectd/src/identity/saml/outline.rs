//! A first look at a SAMLResponse before any signature is checked: its
//! shape, and the IdP's status when it reports a failure (failures are
//! rarely signed, and the viewer deserves to hear what the IdP said).
//!
//! Nothing read here is trusted: it can only refuse. A response must be
//! one `Response` holding at most one assertion, with no DOCTYPE; a second
//! `Assertion` anywhere is how signature-wrapping attacks smuggle an
//! unsigned one beside (or around) the signed one, and no IdP sends two.
//!
//! The signatures' shape is checked here too, because libxmlsec1 (through
//! samael, with its defaults) dereferences every `Reference` and applies
//! every transform *before* it checks the signature value: an unsigned
//! response naming `file:///dev/zero` or an internal URL would have
//! connectd fetch it. So every `URI` must point into the document itself
//! (`#id`), transforms and canonicalizations must be the few SAML uses,
//! and `Object`, `Manifest`, `RetrievalMethod`, XPath and XSLT are refused.
//! The document must be UTF-8 (an encoding declaration such as UTF-7 would
//! make libxml2 read other elements than this check saw).

use quick_xml::events::Event;
use quick_xml::Reader;

pub const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// The most of a response connectd reads.
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outline {
    /// The top-level StatusCode's Value, and the one nested in it.
    pub status: Option<String>,
    pub sub_status: Option<String>,
    pub status_message: Option<String>,
    /// The Response's InResponseTo (unverified: used only to refuse).
    pub in_response_to: Option<String>,
    pub assertions: usize,
}

fn local(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Transforms a SAML signature may use: enveloped signature and the
/// canonicalizations.
const TRANSFORMS: &[&str] = &[
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/2006/12/xml-c14n11#WithComments",
];

/// Elements that make libxmlsec1 read something outside the document or
/// run a program over it; SAML responses use none of them.
const FORBIDDEN: &[&[u8]] = &[
    b"Object",
    b"Manifest",
    b"RetrievalMethod",
    b"XPath",
    b"XPointer",
    b"XSLT",
    b"CipherReference",
    b"KeyInfoReference",
    b"Include",
];

/// `#` and an XML name: a reference to an element of this document.
fn same_document(uri: &str) -> bool {
    let Some(id) = uri.strip_prefix('#') else {
        return false;
    };
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub fn outline(xml: &str) -> Result<Outline, String> {
    if xml.contains('\0') {
        return Err("the SAMLResponse holds a NUL character".into());
    }
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_comments = true;
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut outline = Outline::default();
    let mut roots = 0;
    let mut signatures = 0;
    let mut references_in_signed_info = 0;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("the SAMLResponse is not well-formed XML: {e}"))?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(|e| format!("the XML declaration: {e}"))?;
                    if !encoding.eq_ignore_ascii_case(b"utf-8") {
                        return Err(format!(
                            "the SAMLResponse declares the encoding {:?}; only UTF-8 is accepted",
                            String::from_utf8_lossy(&encoding)
                        ));
                    }
                }
                continue;
            }
            Event::DocType(_) => {
                return Err("the SAMLResponse holds a DOCTYPE, which SAML forbids".into())
            }
            Event::GeneralRef(r) => {
                let predefined = matches!(&r[..], b"lt" | b"gt" | b"amp" | b"apos" | b"quot");
                if !predefined && !r.is_char_ref() {
                    return Err("the SAMLResponse refers to an undeclared entity".into());
                }
                continue;
            }
            Event::End(_) => {
                if path.last().is_some_and(|name| name == b"SignedInfo") {
                    references_in_signed_info = 0;
                }
                path.pop();
                continue;
            }
            Event::Text(t) => {
                if path.len() == 3
                    && path[1] == b"Status"
                    && path[2] == b"StatusMessage"
                    && outline.status_message.is_none()
                {
                    outline.status_message = t.decode().ok().map(|s| s.trim().to_owned());
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let Some(element) = start else { continue };
        let name = local(element.name().as_ref()).to_vec();
        if path.is_empty() {
            roots += 1;
            if name != b"Response" {
                return Err(format!(
                    "the SAMLResponse is a {}, not a Response",
                    String::from_utf8_lossy(&name)
                ));
            }
        }
        if FORBIDDEN.contains(&name.as_slice()) {
            return Err(format!(
                "the SAMLResponse holds a {} element, which a SAML signature never needs and \
                 which would make the verifier read outside the document",
                String::from_utf8_lossy(&name)
            ));
        }
        let mut attributes = Vec::new();
        for attribute in element.attributes() {
            let attribute = attribute
                .map_err(|e| format!("the SAMLResponse has a malformed attribute: {e}"))?;
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| format!("the SAMLResponse has a malformed attribute: {e}"))?
                .into_owned();
            let key = local(attribute.key.as_ref()).to_vec();
            if key == b"URI" && !same_document(&value) {
                return Err(format!(
                    "the SAMLResponse's signature refers to {:?}; only elements of the \
                     response itself (#id) may be signed",
                    value.escape_debug().to_string()
                ));
            }
            attributes.push((key, value));
        }
        let attribute = |wanted: &[u8]| {
            attributes
                .iter()
                .find(|(key, _)| key == wanted)
                .map(|(_, value)| value.clone())
        };
        match name.as_slice() {
            b"Assertion" | b"EncryptedAssertion" => outline.assertions += 1,
            b"Signature" => signatures += 1,
            b"Reference" if path.last().is_some_and(|p| p == b"SignedInfo") => {
                references_in_signed_info += 1;
                if references_in_signed_info > 1 || attribute(b"URI").is_none() {
                    return Err(
                        "a signature of the SAMLResponse must sign exactly one element (#id)"
                            .into(),
                    );
                }
            }
            b"Transform" | b"CanonicalizationMethod" => {
                let algorithm = attribute(b"Algorithm").unwrap_or_default();
                if !TRANSFORMS.contains(&algorithm.as_str()) {
                    return Err(format!(
                        "the SAMLResponse's signature uses the transform {:?}, which SAML \
                         signatures do not need",
                        algorithm.escape_debug().to_string()
                    ));
                }
            }
            _ => {}
        }
        if path.is_empty() {
            outline.in_response_to = attribute(b"InResponseTo");
        }
        if name == b"StatusCode" && path.len() >= 2 && path[1] == b"Status" {
            match path.len() {
                2 if outline.status.is_none() => outline.status = attribute(b"Value"),
                3 if outline.sub_status.is_none() => outline.sub_status = attribute(b"Value"),
                _ => {}
            }
        }
        if !empty {
            path.push(name);
        }
    }
    if roots != 1 || !path.is_empty() {
        return Err("the SAMLResponse is not one complete XML element".into());
    }
    if signatures > 2 {
        return Err(format!(
            "the SAMLResponse holds {signatures} signatures; one on the response and one on \
             the assertion are the most there can be"
        ));
    }
    if outline.assertions > 1 {
        return Err(format!(
            "the SAMLResponse holds {} assertions; an IdP sends one, and a second is how a \
             forged assertion is wrapped around a signed one",
            outline.assertions
        ));
    }
    Ok(outline)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" InResponseTo="id-1"><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="_a"/></samlp:Response>"#;

    #[test]
    fn reads_status_and_request() {
        let o = outline(OK).expect("outline");
        assert_eq!(o.status.as_deref(), Some(SUCCESS));
        assert_eq!(o.in_response_to.as_deref(), Some("id-1"));
        assert_eq!(o.assertions, 1);
    }

    #[test]
    fn reads_a_failure() {
        let xml = r#"<ns0:Response xmlns:ns0="urn:oasis:names:tc:SAML:2.0:protocol"><ns0:Status><ns0:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><ns0:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"/></ns0:StatusCode><ns0:StatusMessage>no &amp; no</ns0:StatusMessage></ns0:Status></ns0:Response>"#;
        let o = outline(xml).expect("outline");
        assert_eq!(
            o.status.as_deref(),
            Some("urn:oasis:names:tc:SAML:2.0:status:Responder")
        );
        assert_eq!(
            o.sub_status.as_deref(),
            Some("urn:oasis:names:tc:SAML:2.0:status:AuthnFailed")
        );
        assert!(o.status_message.is_some());
        assert_eq!(o.assertions, 0);
    }

    #[test]
    fn refuses_wrapping_doctypes_and_other_roots() {
        let wrapped = OK.replace(
            "<saml:Assertion ID=\"_a\"/>",
            "<saml:Assertion ID=\"_evil\"><saml:Advice><saml:Assertion ID=\"_a\"/></saml:Advice></saml:Assertion>",
        );
        assert!(outline(&wrapped).unwrap_err().contains("2 assertions"));
        let doctype = format!("<!DOCTYPE r [<!ENTITY x \"y\">]>{OK}");
        assert!(outline(&doctype).unwrap_err().contains("DOCTYPE"));
        assert!(outline("<saml:Assertion xmlns:saml=\"x\"/>")
            .unwrap_err()
            .contains("not a Response"));
        assert!(outline("<a/>").unwrap_err().contains("not a Response"));
        assert!(outline("not xml at all").is_err());
        assert!(
            outline("<samlp:Response xmlns:samlp=\"p\"><a>").is_err(),
            "unclosed"
        );
    }

    fn signed(reference: &str, transform: &str, extra: &str) -> String {
        OK.replace(
            "<saml:Assertion ID=\"_a\"/>",
            &format!(
                "<saml:Assertion ID=\"_a\"><ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/><ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/><ds:Reference URI=\"{reference}\"><ds:Transforms><ds:Transform Algorithm=\"{transform}\"/></ds:Transforms><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue>AA==</ds:DigestValue></ds:Reference>{extra}</ds:SignedInfo><ds:SignatureValue>AA==</ds:SignatureValue></ds:Signature></saml:Assertion>"
            ),
        )
    }

    const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

    #[test]
    fn signatures_may_only_point_into_the_document() {
        assert!(outline(&signed("#_a", ENVELOPED, "")).is_ok());
        for uri in [
            "file:///dev/zero",
            "http://169.254.169.254/x",
            "",
            "#",
            "#a b",
            "_a",
        ] {
            let e = outline(&signed(uri, ENVELOPED, "")).unwrap_err();
            assert!(e.contains("only elements of"), "{uri}: {e}");
        }
        let e = outline(&signed(
            "#_a",
            "http://www.w3.org/TR/1999/REC-xslt-19991116",
            "",
        ))
        .unwrap_err();
        assert!(e.contains("transform"), "{e}");
        let second = "<ds:Reference URI=\"#_b\"/>";
        assert!(outline(&signed("#_a", ENVELOPED, second))
            .unwrap_err()
            .contains("exactly one"));
        for element in ["ds:Object", "ds:Manifest", "ds:RetrievalMethod", "ds:XPath"] {
            let extra = format!("<{element} xmlns:ds=\"x\"/>");
            assert!(
                outline(&signed("#_a", ENVELOPED, &extra)).is_err(),
                "{element}"
            );
        }
    }

    #[test]
    fn only_utf8_is_read() {
        let utf7 = format!("<?xml version=\"1.0\" encoding=\"UTF-7\"?>{OK}");
        assert!(outline(&utf7).unwrap_err().contains("UTF-7"));
        let utf8 = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{OK}");
        assert!(outline(&utf8).is_ok());
        assert!(outline(&format!("{OK}\0")).unwrap_err().contains("NUL"));
        assert!(outline(&OK.replace("id-1", "&ext;"))
            .unwrap_err()
            .contains("entity"));
    }
}
