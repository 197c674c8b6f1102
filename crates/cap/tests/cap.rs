//! CAP intake end to end on fixtures: the protocol brief's example, a GB/T 35965.1
//! style message, updates and cancels by reference, refusals naming their element, and
//! property tests that no input panics.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tocsin_cap::{
    CapAction, CapError, CapPolicy, MsgType, Profile, Scope, Severity, Status, parse, parse_bytes,
    to_alert,
};
use tocsin_core::{AreaId, AreaSpec, Grade, Timestamp};

const EXAMPLE: &str = include_str!("../fixtures/protocols-example.xml");
const GB_RED: &str = include_str!("../fixtures/gb35965-red.xml");
const UPDATE: &str = include_str!("../fixtures/update.xml");
const CANCEL: &str = include_str!("../fixtures/cancel.xml");

const EXAMPLE_REF: &str =
    "huairou.gov.example,11011600000000_20240701103000_0,2024-07-01T10:30:00+08:00";

fn table() -> CapPolicy {
    let mut geocodes = BTreeMap::new();
    for (code, areas) in [
        ("110116104", &["t-llm"][..]),
        ("110116105", &["t-thk"][..]),
        ("110116106", &["t-bs-1", "t-bs-2"][..]),
        ("110116107", &["t-bs-3"][..]),
    ] {
        geocodes.insert(
            code.to_owned(),
            areas.iter().map(|a| AreaId::from(*a)).collect(),
        );
    }
    CapPolicy {
        geocodes,
        ..CapPolicy::default()
    }
}

fn issue(action: CapAction) -> tocsin_cap::AlertDraft {
    match action {
        CapAction::Issue(d) => d,
        other => panic!("expected Issue, got {other:?}"),
    }
}

fn element_of(e: &CapError) -> &str {
    e.element().unwrap_or_else(|| panic!("no element in {e:?}"))
}

#[test]
fn the_protocol_briefs_example_parses_field_by_field() {
    let m = parse(EXAMPLE).unwrap();
    assert_eq!(m.profile, Profile::Cap12);
    assert_eq!(m.identifier, "11011600000000_20240701103000_0");
    assert_eq!(m.sender, "huairou.gov.example");
    assert_eq!(m.sent.text, "2024-07-01T10:30:00+08:00");
    // 2024-07-01T02:30:00Z.
    assert_eq!(m.sent.at, Timestamp(1_719_801_000_000));
    assert_eq!(
        (m.status, m.msg_type, m.scope),
        (Status::Exercise, MsgType::Alert, Scope::Public)
    );
    assert_eq!(m.reference(), EXAMPLE_REF);
    assert_eq!(m.info.len(), 1);
    let info = &m.info[0];
    assert_eq!(info.language, "zh-CN");
    assert_eq!(info.categories, ["Met"]);
    assert_eq!(info.event, "暴雨");
    assert_eq!(info.response_types, ["Evacuate"]);
    assert_eq!(info.severity, Severity::Extreme);
    assert_eq!(info.urgency.as_deref(), Some("Immediate"));
    assert_eq!(info.headline.as_deref(), Some("暴雨红色预警"));
    assert_eq!(
        info.expires.as_ref().map(|e| e.at),
        Some(Timestamp(1_719_842_400_000))
    );
    let area = &info.areas[0];
    assert_eq!(area.desc, "某沟村");
    assert_eq!(area.polygons[0].len(), 5);
    assert_eq!(
        (area.polygons[0][1].lat, area.polygons[0][1].lon),
        (40.42, 116.60)
    );
    // CAP radii are kilometres.
    assert_eq!(area.circles[0].radius_m, 2_500.0);
    assert_eq!(area.geocodes[0].scheme, "GB/T2260");
    assert_eq!(area.geocodes[0].codes, ["110116"]);
}

#[test]
fn the_example_becomes_an_exercise_red_alert_in_lon_lat_order() {
    let d = issue(to_alert(&parse(EXAMPLE).unwrap(), &CapPolicy::default()).unwrap());
    assert_eq!(d.grade, Grade::Red);
    assert!(d.exercise, "status Exercise is a drill");
    assert_eq!(d.kind, "暴雨");
    assert_eq!(d.headline, "暴雨红色预警");
    // No description or instruction: the headline is the text.
    assert_eq!(d.text, "暴雨红色预警");
    assert_eq!(d.reference, EXAMPLE_REF);
    assert_eq!(d.expires, Some(Timestamp(1_719_842_400_000)));
    // The polygon and circle define the area; the district-wide geocode around them is
    // not added (it would warn all of Huairou), so no table entry is needed.
    assert_eq!(
        d.area,
        vec![
            AreaSpec::Polygon {
                coordinates: vec![vec![
                    [116.60, 40.40],
                    [116.60, 40.42],
                    [116.64, 40.42],
                    [116.64, 40.40],
                    [116.60, 40.40],
                ]]
            },
            AreaSpec::Circle {
                center: [116.62, 40.41],
                radius_m: 2_500.0
            },
        ]
    );
    for a in &d.area {
        a.validate().unwrap();
    }
}

#[test]
fn a_gb_35965_message_reads_colours_metres_and_geocode_lists() {
    let m = parse(GB_RED).unwrap();
    assert_eq!(m.profile, Profile::GbT35965);
    assert_eq!(m.sent.text, "2024-07-21 06:30:00+08:00");
    assert_eq!(
        m.reference(),
        "怀柔区气象台,11011641600000_20240721063000_1,2024-07-21T06:30:00+08:00"
    );
    assert_eq!(m.info[0].severity, Severity::Red);
    assert_eq!(m.info[0].certainty.as_deref(), Some("VeryLikely"));
    assert_eq!(
        m.info[0].areas[0].circles[0].radius_m, 3_000.0,
        "GB radii are metres"
    );
    assert_eq!(
        m.info[0].areas[1].geocodes[0].codes,
        ["110116106", "110116107"]
    );

    let d = issue(to_alert(&m, &table()).unwrap());
    assert_eq!(d.grade, Grade::Red);
    assert!(!d.exercise);
    // The zh-CN block is chosen over the English one.
    assert_eq!(d.headline, "怀柔区山洪灾害红色预警");
    assert_eq!(d.kind, "山洪");
    assert_eq!(
        d.text,
        "受持续强降雨影响，琉璃河、汤河上游沟道可能发生山洪。\n沿河各村立即组织人员向高处转移，切勿涉水过河。"
    );
    assert_eq!(
        d.area,
        vec![
            AreaSpec::Circle {
                center: [116.63, 40.58],
                radius_m: 3_000.0
            },
            AreaSpec::Named {
                id: "t-bs-1".into()
            },
            AreaSpec::Named {
                id: "t-bs-2".into()
            },
            AreaSpec::Named {
                id: "t-bs-3".into()
            },
        ]
    );
}

#[test]
fn an_unknown_geocode_is_refused_by_name() {
    let m = parse(GB_RED).unwrap();
    let mut policy = table();
    policy.geocodes.remove("110116107");
    let e = to_alert(&m, &policy).unwrap_err();
    assert_eq!(element_of(&e), "alert/info[0]/area[1]/geocode[0]");
    assert!(e.to_string().contains("\"110116107\""), "{e}");
    // With no table at all the first geocode-only area is the one named.
    let e = to_alert(&m, &CapPolicy::default()).unwrap_err();
    assert!(e.to_string().contains("110116106"), "{e}");
}

#[test]
fn english_only_policy_picks_the_english_block() {
    let policy = CapPolicy {
        languages: vec!["en".into()],
        geocodes: BTreeMap::from([("110116".to_owned(), vec![AreaId::from("district")])]),
        ..CapPolicy::default()
    };
    let d = issue(to_alert(&parse(GB_RED).unwrap(), &policy).unwrap());
    assert_eq!(d.headline, "Huairou flash flood red warning");
    assert_eq!(
        d.area,
        vec![AreaSpec::Named {
            id: "district".into()
        }]
    );
}

#[test]
fn update_and_cancel_carry_the_references_they_act_on() {
    match to_alert(&parse(UPDATE).unwrap(), &CapPolicy::default()).unwrap() {
        CapAction::Update { references, draft } => {
            assert_eq!(references, [EXAMPLE_REF]);
            assert_eq!(draft.grade, Grade::Orange);
            assert_eq!(draft.headline, "暴雨橙色预警");
            assert_eq!(draft.text, "降雨减弱，预警降为橙色。");
        }
        other => panic!("expected Update, got {other:?}"),
    }
    match to_alert(&parse(CANCEL).unwrap(), &CapPolicy::default()).unwrap() {
        CapAction::Cancel {
            references,
            reference,
        } => {
            assert_eq!(references, [EXAMPLE_REF]);
            assert!(reference.contains("20240701150000"), "{reference}");
        }
        other => panic!("expected Cancel, got {other:?}"),
    }
}

#[test]
fn gb_references_with_a_space_in_the_time_match_the_message_they_name() {
    let xml = GB_RED
        .replace("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>")
        .replace(
            "<scope>Public</scope>",
            "<scope>Public</scope><references>怀柔区气象台,11011641600000_20240721063000_1,2024-07-21 06:30:00+08:00 x,y,2024-07-21T07:00:00+08:00</references>",
        );
    let original = parse(GB_RED).unwrap().reference();
    match to_alert(&parse(&xml).unwrap(), &table()).unwrap() {
        CapAction::Cancel { references, .. } => {
            assert_eq!(references[0], original);
            assert_eq!(references[1], "x,y,2024-07-21T07:00:00+08:00");
        }
        other => panic!("expected Cancel, got {other:?}"),
    }
}

#[test]
fn messages_not_meant_for_people_are_refused_saying_why() {
    for status in ["Test", "System", "Draft"] {
        let xml = EXAMPLE.replace(
            "<status>Exercise</status>",
            &format!("<status>{status}</status>"),
        );
        let e = to_alert(&parse(&xml).unwrap(), &CapPolicy::default()).unwrap_err();
        assert_eq!(element_of(&e), "alert/status");
        assert!(e.to_string().contains(status), "{e}");
        assert!(e.to_string().contains("delivers nothing"), "{e}");
    }
    let ack = EXAMPLE
        .replace("<msgType>Alert</msgType>", "<msgType>Ack</msgType>")
        .replace(
            "<scope>Public</scope>",
            &format!("<scope>Public</scope><references>{EXAMPLE_REF}</references>"),
        );
    let e = to_alert(&parse(&ack).unwrap(), &CapPolicy::default()).unwrap_err();
    assert_eq!(element_of(&e), "alert/msgType");
}

#[test]
fn unknown_severity_needs_a_configured_grade() {
    let xml = EXAMPLE.replace(
        "<severity>Extreme</severity>",
        "<severity>Unknown</severity>",
    );
    let m = parse(&xml).unwrap();
    let e = to_alert(&m, &CapPolicy::default()).unwrap_err();
    assert_eq!(element_of(&e), "alert/info[0]/severity");
    let policy = CapPolicy {
        unknown_severity: Some(Grade::Yellow),
        ..CapPolicy::default()
    };
    assert_eq!(issue(to_alert(&m, &policy).unwrap()).grade, Grade::Yellow);
}

#[test]
fn severities_map_to_grades() {
    for (severity, grade) in [
        ("Extreme", Grade::Red),
        ("Severe", Grade::Orange),
        ("Moderate", Grade::Yellow),
        ("Minor", Grade::Blue),
        ("Red", Grade::Red),
        ("Orange", Grade::Orange),
        ("Yellow", Grade::Yellow),
        ("Blue", Grade::Blue),
    ] {
        let xml = EXAMPLE.replace(
            "<severity>Extreme</severity>",
            &format!("<severity>{severity}</severity>"),
        );
        let d = issue(to_alert(&parse(&xml).unwrap(), &CapPolicy::default()).unwrap());
        assert_eq!(d.grade, grade, "{severity}");
    }
}

#[test]
fn malformed_values_name_their_element() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "<status>Exercise</status>",
            "<status>Live</status>",
            "alert/status",
        ),
        (
            "<msgType>Alert</msgType>",
            "<msgType>Notice</msgType>",
            "alert/msgType",
        ),
        (
            "<scope>Public</scope>",
            "<scope>World</scope>",
            "alert/scope",
        ),
        ("<scope>Public</scope>", "", "alert/scope"),
        (
            "<sent>2024-07-01T10:30:00+08:00</sent>",
            "<sent>yesterday</sent>",
            "alert/sent",
        ),
        ("<sent>2024-07-01T10:30:00+08:00</sent>", "", "alert/sent"),
        (
            "<sender>huairou.gov.example</sender>",
            "<sender>huairou gov</sender>",
            "alert/sender",
        ),
        (
            "<sender>huairou.gov.example</sender>",
            "<sender>a,b</sender>",
            "alert/sender",
        ),
        (
            "<identifier>11011600000000_20240701103000_0</identifier>",
            "<identifier> </identifier>",
            "alert/identifier",
        ),
        (
            "<severity>Extreme</severity>",
            "<severity>Catastrophic</severity>",
            "alert/info[0]/severity",
        ),
        ("<event>暴雨</event>", "", "alert/info[0]/event"),
        (
            "<expires>2024-07-01T22:00:00+08:00</expires>",
            "<expires>2024-07-01</expires>",
            "alert/info[0]/expires",
        ),
        (
            "<headline>暴雨红色预警</headline>",
            "<headline>a</headline><headline>b</headline>",
            "alert/info[0]/headline",
        ),
        (
            "40.40,116.60 40.42,116.60 40.42,116.64 40.40,116.64 40.40,116.60",
            "40.40,116.60 40.42,116.60 40.40,116.60",
            "alert/info[0]/area[0]/polygon[0]",
        ),
        (
            "40.40,116.60 40.42,116.60 40.42,116.64 40.40,116.64 40.40,116.60",
            "40.40,116.60 40.42,116.60 40.42,116.64 40.40,116.64 40.41,116.60",
            "alert/info[0]/area[0]/polygon[0]",
        ),
        (
            // Written lon,lat by mistake: 116 is no latitude.
            "40.40,116.60 40.42,116.60 40.42,116.64 40.40,116.64 40.40,116.60",
            "116.60,40.40 116.60,40.42 116.64,40.42 116.64,40.40 116.60,40.40",
            "alert/info[0]/area[0]/polygon[0]",
        ),
        (
            "<circle>40.41,116.62 2.5</circle>",
            "<circle>40.41,116.62 -1</circle>",
            "alert/info[0]/area[0]/circle[0]",
        ),
        (
            "<circle>40.41,116.62 2.5</circle>",
            "<circle>40.41,116.62</circle>",
            "alert/info[0]/area[0]/circle[0]",
        ),
        (
            "<circle>40.41,116.62 2.5</circle>",
            "<circle>40.41;116.62 2.5</circle>",
            "alert/info[0]/area[0]/circle[0]",
        ),
        (
            "<value>110116</value>",
            "<value> , </value>",
            "alert/info[0]/area[0]/geocode[0]/value",
        ),
    ];
    for (from, to, element) in cases {
        assert!(EXAMPLE.contains(from), "fixture lacks {from}");
        let xml = EXAMPLE.replacen(from, to, 1);
        let e = parse(&xml).expect_err(to);
        assert_eq!(element_of(&e), *element, "{to}: {e}");
    }
}

#[test]
fn update_without_references_is_refused() {
    let xml = UPDATE.replace(
        "<references>huairou.gov.example,11011600000000_20240701103000_0,2024-07-01T10:30:00+08:00</references>",
        "",
    );
    assert_eq!(
        parse(&xml).unwrap_err(),
        CapError::Missing {
            element: "alert/references".into()
        }
    );
    let xml = UPDATE.replace(
        "11011600000000_20240701103000_0,2024-07-01T10:30:00+08:00",
        "only-two-parts",
    );
    assert_eq!(element_of(&parse(&xml).unwrap_err()), "alert/references");
}

#[test]
fn wrong_roots_and_namespaces_are_refused() {
    let e = parse(&EXAMPLE.replace(":cap:1.2", ":cap:1.1")).unwrap_err();
    assert_eq!(element_of(&e), "alert");
    assert!(e.to_string().contains("not CAP 1.2"), "{e}");
    let e = parse("<feed xmlns=\"http://www.w3.org/2005/Atom\"/>").unwrap_err();
    assert_eq!(element_of(&e), "feed");
    // A prefixed CAP document reads like the default-namespace one.
    let prefixed = EXAMPLE
        .replace(
            "<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">",
            "<cap:alert xmlns:cap=\"urn:oasis:names:tc:emergency:cap:1.2\">",
        )
        .replace("</alert>", "</cap:alert>")
        .replace('<', "<cap:")
        .replace("<cap:/", "</cap:")
        .replace("<cap:cap:", "<cap:")
        .replace("</cap:cap:", "</cap:");
    let m = parse(&prefixed).unwrap_or_else(|e| panic!("{e}\n{prefixed}"));
    assert_eq!(m, parse(EXAMPLE).unwrap());
}

#[test]
fn elements_of_other_namespaces_are_ignored() {
    let xml = EXAMPLE.replace(
        "<scope>Public</scope>",
        "<scope>Public</scope><x:scope xmlns:x=\"urn:vendor\">Private</x:scope>",
    );
    assert_eq!(parse(&xml).unwrap().scope, Scope::Public);
}

#[test]
fn long_texts_are_cut_with_an_ellipsis() {
    let long = "很".repeat(700);
    let xml = EXAMPLE.replace(
        "<headline>暴雨红色预警</headline>",
        &format!(
            "<headline>{}</headline><description>{long}</description>",
            "长".repeat(80)
        ),
    );
    let d = issue(to_alert(&parse(&xml).unwrap(), &CapPolicy::default()).unwrap());
    assert_eq!(d.headline.chars().count(), 60);
    assert!(d.headline.ends_with('…'));
    assert_eq!(d.text.chars().count(), 500);
    assert!(d.text.ends_with('…'));
}

#[test]
fn a_gb18030_message_is_decoded_as_declared() {
    let xml = GB_RED.replace("encoding=\"UTF-8\"", "encoding=\"GB2312\"");
    let (bytes, _, bad) = encoding_rs::GB18030.encode(&xml);
    assert!(!bad);
    let m = parse_bytes(&bytes).unwrap();
    assert_eq!(
        m.info[0].headline.as_deref(),
        Some("怀柔区山洪灾害红色预警")
    );
    // With a byte-order mark, UTF-8 reads too.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(EXAMPLE.as_bytes());
    assert_eq!(parse_bytes(&bom).unwrap(), parse(EXAMPLE).unwrap());
}

#[test]
fn an_xml_bomb_is_refused_before_any_expansion() {
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE alert [{}]>{}",
        (1..10)
            .map(|i| format!(
                "<!ENTITY e{i} \"&e{};&e{};&e{};&e{};\">",
                i - 1,
                i - 1,
                i - 1,
                i - 1
            ))
            .collect::<String>(),
        EXAMPLE.replace(
            "<headline>暴雨红色预警</headline>",
            "<headline>&e9;</headline>"
        )
    );
    assert_eq!(parse(&bomb).unwrap_err(), CapError::Dtd);
    let external = EXAMPLE.replace("暴雨红色预警", "&xxe;");
    assert!(matches!(parse(&external), Err(CapError::Xml { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(m) = parse_bytes(&bytes) {
            let _ = to_alert(&m, &table());
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        if let Ok(m) = parse(&text) {
            let _ = to_alert(&m, &table());
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8),
    ) {
        let base = [EXAMPLE, GB_RED, UPDATE, CANCEL][which];
        let mut bytes = base.as_bytes().to_vec();
        for (at, op, b) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = b,
                1 => { bytes.remove(i); }
                2 => bytes.insert(i, b),
                _ => bytes.truncate(i),
            }
        }
        if let Ok(m) = parse_bytes(&bytes)
            && let Ok(CapAction::Issue(d) | CapAction::Update { draft: d, .. }) = to_alert(&m, &table())
        {
            // Whatever survives has sane texts and valid geometry.
            prop_assert!(d.headline.chars().count() <= 60);
            prop_assert!(d.text.chars().count() <= 500);
            prop_assert!(!d.area.is_empty());
            for a in &d.area {
                prop_assert!(a.validate().is_ok(), "{a:?}");
            }
        }
    }

    #[test]
    fn element_swaps_in_a_valid_message_never_panic(
        value in "[A-Za-z0-9 ,.:+\\-]{0,40}",
        slot in 0usize..8,
    ) {
        let targets = [
            "Exercise", "Alert", "Extreme", "2024-07-01T10:30:00+08:00",
            "40.41,116.62 2.5", "110116", "Public", "zh-CN",
        ];
        let xml = EXAMPLE.replacen(targets[slot], &value, 1);
        if let Ok(m) = parse(&xml) {
            let _ = to_alert(&m, &CapPolicy::default());
        }
    }
}
