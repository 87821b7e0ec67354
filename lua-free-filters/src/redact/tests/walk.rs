use serde_json::Value;

use super::*;

/// Every string of `value` with personal data added, so that each text has values to find.
fn salted(value: &mut Value) {
    match value {
        Value::String(s) => s.push_str(" mail jane.doe@example.com, card 4111 1111 1111 1111"),
        Value::Array(items) => items.iter_mut().for_each(salted),
        Value::Object(fields) => fields.values_mut().for_each(salted),
        _ => {}
    }
}

#[test]
fn the_walk_over_bytes_rewrites_what_the_tree_rewrites() {
    // Every built-in (one needs nothing, so every text is searched), and built-ins whose
    // counts rule texts out before any search; the documents as recorded (most texts
    // hold nothing) and with values in every string.
    for spec in [
        "mode: mask",
        "{patterns: [email, credit-card, phone, ipv4], mode: mask}",
    ] {
        walk_and_tree_agree(&build(spec));
    }
}

fn walk_and_tree_agree(filter: &Redact) {
    let detector = filter.inner.request.as_ref().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut files = vec![root];
    let mut compared = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let original = std::fs::read(&path).unwrap();
        let Ok(mut doc) = serde_json::from_slice::<Value>(&original) else {
            continue;
        };
        let pretty = serde_json::to_vec_pretty(&doc).unwrap();
        salted(&mut doc);
        let salted_compact = serde_json::to_vec(&doc).unwrap();
        let salted_pretty = serde_json::to_vec_pretty(&doc).unwrap();
        for body in [original, pretty, salted_compact, salted_pretty] {
            let fresh = || std::borrow::Cow::Owned(Memo::default());
            let rewriter = &filter.inner;
            let walked = rewriter
                .rewrite_json(detector, &body, &mut fresh())
                .unwrap();
            let tree = rewriter
                .rewrite_tree(detector, &body, &mut fresh())
                .unwrap();
            let parse =
                |b: Option<Vec<u8>>| b.map(|b| serde_json::from_slice::<Value>(&b).unwrap());
            assert_eq!(parse(walked), parse(tree), "{}", path.display());
            compared += 1;
        }
    }
    assert!(compared > 1000, "{compared}");
}

#[test]
fn the_walk_keeps_key_order_and_numbers_placeholders_in_reading_order() {
    let filter = build("mode: placeholder");
    let body = br#"{"z": "b@example.com", "model": "m", "a": "a@example.com", "n": 1.50}"#;
    let out = filter
        .on_request_body(body, &mut Memo::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"z": "[EMAIL_1]", "model": "m", "a": "[EMAIL_2]", "n": 1.50}"#
    );
}
