//! A small, bounded element tree read with quick-xml's namespace-aware pull reader.
//!
//! CAP is a handful of flat elements, so a tree of owned elements is the simplest thing
//! to validate with precise element paths. The reader is the only place that sees raw
//! XML: it refuses DTDs (so no entity can ever be defined, let alone expanded), resolves
//! only the five predefined entities and character references, and bounds depth and
//! element count so a hostile document costs little before it is refused.

use crate::CapError;
use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// Deepest nesting accepted. CAP needs 5 (`alert/info/area/geocode/value`); the GB
/// profile's `code/method/methodName` needs 4; extensions get some room.
pub(crate) const MAX_DEPTH: usize = 16;

/// Most elements in one message: far more than any real warning (a 256 KiB message of
/// minimal elements would have tens of thousands) while keeping the tree small.
pub(crate) const MAX_ELEMENTS: usize = 10_000;

/// One element: its local name, namespace, direct text and children.
#[derive(Debug, Default)]
pub(crate) struct Element {
    /// Local name (without prefix).
    pub name: String,
    /// The namespace it is bound to, if any.
    pub ns: Option<String>,
    /// Its own text and CDATA, in document order (children's text is theirs).
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

/// Reads `xml` into a tree. The caller has already checked its size.
pub(crate) fn read_tree(xml: &str) -> Result<Element, CapError> {
    let mut reader = NsReader::from_str(xml);
    // quick-xml checks end names by default; keep it explicit, a mismatched tag is fatal.
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let position = reader.buffer_position();
        let (ns, event) = reader.read_resolved_event().map_err(|e| CapError::Xml {
            position,
            message: e.to_string(),
        })?;
        match event {
            Event::Start(_) | Event::Empty(_) => {
                let (name, empty) = match &event {
                    Event::Start(e) => (e.local_name(), false),
                    Event::Empty(e) => (e.local_name(), true),
                    _ => continue,
                };
                let name = name.as_ref().to_owned();
                let ns = match ns {
                    ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(prefix) => {
                        return Err(CapError::Xml {
                            position,
                            message: format!("element <{name}> uses undeclared prefix {prefix:?}"),
                        });
                    }
                };
                if root.is_some() {
                    return Err(CapError::Xml {
                        position,
                        message: format!("element <{name}> after the end of the root element"),
                    });
                }
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(CapError::TooComplex {
                        message: format!("more than {MAX_ELEMENTS} elements"),
                    });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(CapError::TooComplex {
                        message: format!("elements nested deeper than {MAX_DEPTH}"),
                    });
                }
                let element = Element {
                    name,
                    ns,
                    ..Element::default()
                };
                if empty {
                    close(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                // quick-xml has matched the name against the open element already.
                let Some(element) = stack.pop() else {
                    return Err(CapError::Xml {
                        position,
                        message: "closing tag without an open element".into(),
                    });
                };
                close(&mut stack, &mut root, element);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content(), position)?,
            Event::CData(t) => push_text(&mut stack, &t, position)?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match predefined(&r) {
                        Some(s) => s.to_owned(),
                        None => {
                            return Err(CapError::Xml {
                                position,
                                message: format!(
                                    "unknown entity &{};: only the five predefined XML entities and character references are allowed",
                                    &*r
                                ),
                            });
                        }
                    },
                    Err(e) => {
                        return Err(CapError::Xml {
                            position,
                            message: e.to_string(),
                        });
                    }
                };
                push_text(&mut stack, &resolved, position)?;
            }
            Event::DocType(_) => return Err(CapError::Dtd),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(CapError::Xml {
            position: reader.buffer_position(),
            message: format!("element <{}> is not closed", open.name),
        });
    }
    root.ok_or(CapError::Xml {
        position: 0,
        message: "no root element".into(),
    })
}

/// Attaches a finished element to its parent, or makes it the root.
fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Text inside an element belongs to it; outside the root only whitespace is allowed.
fn push_text(stack: &mut [Element], text: &str, position: u64) -> Result<(), CapError> {
    match stack.last_mut() {
        Some(open) => {
            open.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(CapError::Xml {
            position,
            message: "text outside the root element".into(),
        }),
    }
}

/// The five entities XML predefines; nothing else is ever expanded.
fn predefined(name: &str) -> Option<&'static str> {
    match name {
        "lt" => Some("<"),
        "gt" => Some(">"),
        "amp" => Some("&"),
        "apos" => Some("'"),
        "quot" => Some("\""),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_namespaces_text_and_entities() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<cap:alert xmlns:cap="urn:x" xmlns="urn:y"><cap:a>1 &lt; 2 &amp;&#x4E2D;<![CDATA[<raw>]]></cap:a><b/></cap:alert>"#;
        let root = read_tree(xml).unwrap();
        assert_eq!(root.name, "alert");
        assert_eq!(root.ns.as_deref(), Some("urn:x"));
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.children[0].text, "1 < 2 &中<raw>");
        assert_eq!(root.children[1].name, "b");
        assert_eq!(root.children[1].ns.as_deref(), Some("urn:y"));
    }

    #[test]
    fn refuses_dtds_and_unknown_entities() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><alert>&lol2;</alert>"#;
        assert_eq!(read_tree(bomb).unwrap_err(), CapError::Dtd);
        let err = read_tree("<alert>&nbsp;</alert>").unwrap_err();
        assert!(
            matches!(&err, CapError::Xml { message, .. } if message.contains("&nbsp;")),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_malformed_documents() {
        for bad in [
            "",
            "   ",
            "<alert>",
            "<alert></info>",
            "<alert/><alert/>",
            "text<alert/>",
            "<p:alert/>",
            "<alert><a></alert>",
        ] {
            assert!(
                matches!(read_tree(bad), Err(CapError::Xml { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn bounds_depth_and_element_count() {
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(read_tree(&deep), Err(CapError::TooComplex { .. })));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(read_tree(&ok).is_ok());
        let wide = format!("<alert>{}</alert>", "<x/>".repeat(MAX_ELEMENTS));
        assert!(matches!(read_tree(&wide), Err(CapError::TooComplex { .. })));
    }
}
