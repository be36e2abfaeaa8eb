//! The README's JSON examples as a contract on key order: a report's top-level keys come in
//! the order the README shows them (scripts that read JSON as text see them so).

use std::path::Path;

/// The top-level keys of the README's first ```json block after the first line containing
/// `after`, in order. A block that is an array of objects gives its first object's keys.
fn readme_keys(after: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let from = readme
        .find(after)
        .unwrap_or_else(|| panic!("README has no {after:?}"));
    let rest = &readme[from..];
    let start = rest.find("```json\n").expect("a json block") + "```json\n".len();
    let block = &rest[start..start + rest[start..].find("```").expect("its end")];
    let (mut keys, mut depth, mut object_depth) = (Vec::new(), 0, None);
    let mut chars = block.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '[' => {
                depth += 1;
                if c == '{' && object_depth.is_none() {
                    object_depth = Some(depth);
                }
            }
            '}' | ']' => {
                if Some(depth) == object_depth && c == '}' {
                    break; // the first object ends
                }
                depth -= 1;
            }
            '"' => {
                let end = block[i + 1..].find('"').expect("a closed string") + i + 1;
                let after_string = block[end + 1..].trim_start();
                if Some(depth) == object_depth && after_string.starts_with(':') {
                    keys.push(block[i + 1..end].to_string());
                }
                // On past the string (the README's examples have no escapes).
                for (j, _) in chars.by_ref() {
                    if j == end {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    assert!(!keys.is_empty(), "no keys in the block after {after:?}");
    keys
}

/// `report`'s top-level keys (of its first element, for an array) are among those of the
/// README's example after `after`, in the same order (keys the example shows that only some
/// reports have, such as `ls`'s `path_bytes`, may be absent).
pub fn assert_readme_order(report: &serde_json::Value, after: &str) {
    let object = match report {
        serde_json::Value::Array(items) => &items[0],
        other => other,
    };
    let keys: Vec<&str> = object
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let readme = readme_keys(after);
    let shown: Vec<&str> = readme
        .iter()
        .map(String::as_str)
        .filter(|k| keys.contains(k))
        .collect();
    assert_eq!(
        keys, shown,
        "keys of {report}, against the README's {readme:?}"
    );
}
