//! The crate's modules import one way: a module of `src/` (a file, or a folder with its
//! `mod.rs`) that names `crate::X` outside its `#[cfg(test)]` code depends on `X`, and
//! this graph must have no cycle (README "Layout" gives the layers). A cycle is a design
//! smell to fix, not to live with: the test names it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly by design"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name -> the non-test source text of its file or folder.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("read src/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut text = String::new();
        if path.is_dir() {
            for f in std::fs::read_dir(&path).expect("read module folder") {
                let f = f.expect("entry").path();
                if f.extension().is_some_and(|e| e == "rs") {
                    text += &without_tests(&std::fs::read_to_string(&f).expect("read"));
                }
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            text = without_tests(&std::fs::read_to_string(&path).expect("read"));
        } else {
            continue;
        }
        out.insert(name, text);
    }
    out
}

/// The text up to the first `#[cfg(test)]` (test modules come last in every file) and
/// without comments.
fn without_tests(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (name, text) in mods {
        let mut deps = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let dep: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if dep != *name && mods.contains_key(&dep) {
                deps.insert(dep);
            }
        }
        // `use crate::{a, b::c}` groups.
        for (i, _) in text.match_indices("crate::{") {
            let group = &text[i + "crate::{".len()..];
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let dep: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if dep != *name && mods.contains_key(&dep) {
                    deps.insert(dep);
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// A cycle through `start`, if any (depth-first search).
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for dep in graph.get(node).into_iter().flatten() {
        if let Some(c) = cycle_from(graph, dep, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn modules_import_one_way_with_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = edges(&modules(&src));
    assert!(graph.len() > 10, "found the modules of src/: {graph:?}");
    let mut done = BTreeSet::new();
    for name in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, name, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    // The layers at the bottom import nothing of the crate, and the transport never sees
    // the shared state.
    let bottom: BTreeSet<String> = ["clock", "sync", "error", "reply", "secret", "config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for name in &bottom {
        let deps = &graph[name];
        assert!(deps.is_subset(&bottom), "{name} imports {deps:?}");
    }
    assert!(graph["clock"].is_empty() && graph["sync"].is_empty());
    for (lower, upper) in [
        ("proxy", "app"),
        ("guard", "app"),
        ("app", "router"),
        ("session", "jar"),
    ] {
        assert!(
            !graph[lower].contains(upper),
            "{lower} must not import {upper}"
        );
    }
}

#[test]
fn finds_a_cycle_when_there_is_one() {
    let mut mods = BTreeMap::new();
    mods.insert("a".to_owned(), "use crate::b::X;".to_owned());
    mods.insert("b".to_owned(), "use crate::{c, d::Y};".to_owned());
    mods.insert("c".to_owned(), "fn f() { crate::a::g() }".to_owned());
    mods.insert("d".to_owned(), String::new());
    let graph = edges(&mods);
    let cycle = cycle_from(&graph, "a", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(cycle.unwrap(), ["a", "b", "c", "a"]);
    mods.insert("c".to_owned(), String::new());
    let graph = edges(&mods);
    assert!(cycle_from(&graph, "a", &mut Vec::new(), &mut BTreeSet::new()).is_none());
}
