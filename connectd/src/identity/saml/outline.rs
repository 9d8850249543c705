//! A first look at a SAMLResponse before any signature is checked: its
//! shape, and the IdP's status when it reports a failure (failures are
//! rarely signed, and the viewer deserves to hear what the IdP said).
//!
//! Nothing read here is trusted: it can only refuse. A response must be
//! one `Response` holding at most one assertion, with no DOCTYPE; a second
//! `Assertion` anywhere is how signature-wrapping attacks smuggle an
//! unsigned one beside (or around) the signed one, and no IdP sends two.

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

pub fn outline(xml: &str) -> Result<Outline, String> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut outline = Outline::default();
    let mut roots = 0;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("the SAMLResponse is not well-formed XML: {e}"))?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            Event::DocType(_) => {
                return Err("the SAMLResponse holds a DOCTYPE, which SAML forbids".into())
            }
            Event::End(_) => {
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
        if name == b"Assertion" || name == b"EncryptedAssertion" {
            outline.assertions += 1;
        }
        let attribute = |wanted: &[u8]| {
            element
                .attributes()
                .flatten()
                .find(|a| a.key.as_ref() == wanted)
                .and_then(|a| {
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .ok()
                        .map(|v| v.into_owned())
                })
        };
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
    if roots != 1 {
        return Err("the SAMLResponse is not one XML element".into());
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
    }
}
