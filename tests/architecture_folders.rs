//! The layout inside each folder of `src/` (a concept made of several files, e.g. `http/`,
//! `postgres/`): its files import each other one way, with no cycle, as the crate's top-level
//! modules do (`architecture.rs`); and no file of the fronts is over 600 lines. A file uses a
//! sibling when it names `super::that` (a path, or a name the folder's `mod.rs` re-exports from
//! it); comments and unit tests do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|name| !name.is_empty())
}

/// What follows `at` up to the end of its path: the next `,` or `;` outside braces.
fn path_after(text: &str) -> &str {
    let mut depth = 0_i32;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return &text[..i],
            '}' => depth -= 1,
            ',' | ';' if depth == 0 => return &text[..i],
            _ => {}
        }
    }
    text
}

/// The folders of `src/` that are modules of several files.
fn folders() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.join("mod.rs").exists() {
                    out.push(path.clone());
                }
                walk(&path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// Each file of `folder` (by module name; `mod` for `mod.rs`) and the siblings it uses.
fn file_graph(folder: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let name = if path.is_dir() && path.join("mod.rs").exists() {
            path.file_name().unwrap().to_string_lossy().into_owned()
        } else if path.extension().is_some_and(|e| e == "rs") {
            path.file_stem().unwrap().to_string_lossy().into_owned()
        } else {
            continue;
        };
        let source = if path.is_dir() {
            path.join("mod.rs")
        } else {
            path
        };
        files.insert(name, code(&fs::read_to_string(source).unwrap()));
    }
    // Names `mod.rs` re-exports, by the file that defines them: `pub use store::{A, B};`.
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    let root = files.get("mod").cloned().unwrap_or_default();
    for module in files.keys().filter(|m| *m != "mod") {
        for (at, _) in root.match_indices(&format!("{module}::")) {
            let before = root[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let path = path_after(&root[at + module.len() + 2..]);
            for name in identifiers(path) {
                owner_of.insert(name.to_owned(), module.clone());
            }
        }
    }
    let owner = |name: &str| -> Option<String> {
        if files.contains_key(name) && name != "mod" {
            Some(name.to_owned())
        } else {
            owner_of.get(name).cloned()
        }
    };
    let mut graph = BTreeMap::new();
    for (module, code) in files.iter().filter(|(m, _)| *m != "mod") {
        let mut uses = BTreeSet::new();
        for (at, _) in code.match_indices("super::") {
            let rest = &code[at + "super::".len()..];
            let path = path_after(rest);
            // `super::{A, b::C}`: each name at the top of the group; `super::x::…`: `x`.
            let names: Vec<&str> = match path.strip_prefix('{') {
                Some(group) => group
                    .split(',')
                    .filter_map(|item| identifiers(item).next())
                    .collect(),
                None => identifiers(path).take(1).collect(),
            };
            uses.extend(names.into_iter().filter_map(owner));
        }
        uses.remove(module);
        graph.insert(module.clone(), uses);
    }
    graph
}

fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(module) = stack.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    graph
        .iter()
        .flat_map(|(from, uses)| uses.iter().map(move |to| (from, to)))
        .filter(|(from, to)| reaches(to, from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect()
}

fn src(folder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(folder)
}

/// Asserts that the files of `folder` import each other one way.
fn assert_one_way(folder: &Path) {
    let graph = file_graph(folder);
    assert!(
        graph.values().any(|uses| !uses.is_empty()),
        "{}: no import between its files was found: {graph:?}",
        folder.display()
    );
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "{}: imports that close a cycle: {cycles:?}",
        folder.display()
    );
}

#[test]
fn the_http_front_s_files_import_one_way() {
    assert_one_way(&src("http"));
}

#[test]
fn the_store_s_files_import_one_way() {
    assert_one_way(&src("postgres"));
}

#[test]
fn files_within_every_folder_import_one_way() {
    let folders = folders();
    assert!(folders.len() >= 3, "the folders were found: {folders:?}");
    for folder in &folders {
        assert_one_way(folder);
    }
}

#[test]
fn no_file_of_the_fronts_is_over_600_lines() {
    for folder in ["http", "postgres"] {
        for entry in fs::read_dir(src(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let lines = fs::read_to_string(&path).unwrap().lines().count();
                assert!(lines <= 600, "{} has {lines} lines", path.display());
            }
        }
    }
}

#[test]
fn the_checker_sees_re_exports_groups_and_paths() {
    let graph = file_graph(&src("http"));
    // `use super::rejection::Rejection;` and `super::response::{json, …}`.
    assert!(graph["handlers"].contains("rejection"), "{graph:?}");
    assert!(graph["handlers"].contains("response"), "{graph:?}");
    let graph = file_graph(&src("postgres"));
    // `use super::{Db, StoreError};`: names `mod.rs` re-exports from `db` and `error`.
    assert!(graph["reads"].contains("db"), "{graph:?}");
    assert!(graph["reads"].contains("error"), "{graph:?}");
}
