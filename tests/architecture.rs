//! The layout promised in `lib.rs`: imports run one way, at every level. Between the crate's
//! top-level modules they follow the layers (fronts -> façade -> engine -> the job and its seam ->
//! leaves), and inside every folder the sibling modules import each other without a cycle.
//!
//! A module uses another when its code names it: a path through `crate::`, `super::` or `self::`
//! (also inside `use …::{…}` groups), or a type re-exported at the crate root. Comments and unit
//! tests do not count, and neither does a folder's `mod.rs` using its own children or a child
//! using its parent: the folder is one module to the level above it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module's path inside the crate, e.g. `["http", "events"]`; the crate root is `[]`.
type ModPath = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path that starts at `at` in `text` (just after a `crate::`, `super::` or `self::`),
/// expanded through `{…}` groups: `a::{B, c::D}` gives `a::B` and `a::c::D`.
fn paths_at(text: &str, at: usize) -> Vec<Vec<String>> {
    let rest = &text[at..];
    let mut segments = Vec::new();
    let mut i = 0;
    loop {
        let end = rest[i..]
            .find(|c| !is_ident(c))
            .map_or(rest.len(), |n| i + n);
        if end > i {
            segments.push(rest[i..end].to_owned());
        }
        if rest[end..].starts_with("::{") {
            // A group: split at its top-level commas and expand each item.
            let inner_start = end + 3;
            let mut depth = 1;
            let mut close = inner_start;
            for (n, c) in rest[inner_start..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    close = inner_start + n;
                    break;
                }
            }
            let inner = &rest[inner_start..close];
            let mut items = Vec::new();
            let (mut depth, mut from) = (0, 0);
            for (n, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[from..n]);
                        from = n + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[from..]);
            let mut out = Vec::new();
            for item in items {
                let item = item.trim();
                let offset = inner.find(item).unwrap_or(0);
                if item.is_empty() {
                    continue;
                }
                for tail in paths_at(text, at + inner_start + offset) {
                    let mut path = segments.clone();
                    path.extend(tail);
                    out.push(path);
                }
            }
            return out;
        }
        if rest[end..].starts_with("::") && end > i {
            i = end + 2;
            continue;
        }
        return vec![segments];
    }
}

/// The crate's modules, each with the modules it uses.
struct Crate {
    modules: BTreeSet<ModPath>,
    uses: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let relative = file.strip_prefix(src).unwrap();
    let mut path: ModPath = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = path.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        file => path.push(file.trim_end_matches(".rs").to_owned()),
    }
    path
}

fn read_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_path(&src, f)).collect();
    // The longest module that a path names, from the crate root.
    let resolve = |path: &[String]| -> Option<ModPath> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains(m))
    };
    // Types re-exported at the root, by the module that defines them: `pub use engine::x::T;`.
    let lib = code(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut owner_of: BTreeMap<String, ModPath> = BTreeMap::new();
    for at in lib
        .match_indices("pub use ")
        .map(|(at, _)| at + "pub use ".len())
    {
        for path in paths_at(&lib, at) {
            if let (Some(name), Some(owner)) = (path.last(), resolve(&path)) {
                owner_of.insert(name.clone(), owner);
            }
        }
    }
    let mut uses: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for file in &files {
        let here = module_path(&src, file);
        let code = code(&fs::read_to_string(file).unwrap());
        let mut used = BTreeSet::new();
        for (prefix, base) in [
            ("crate::", Vec::new()),
            ("super::", {
                // `super` of a folder's mod.rs is the folder's parent; of a file, its folder.
                let mut up = here.clone();
                up.pop();
                up
            }),
            ("self::", here.clone()),
        ] {
            for (at, _) in code.match_indices(prefix) {
                // Only a whole `crate::`, not `mycrate::`.
                if code[..at].chars().next_back().is_some_and(is_ident) {
                    continue;
                }
                for path in paths_at(&code, at + prefix.len()) {
                    let Some(first) = path.first() else { continue };
                    if prefix == "crate::" && path.len() == 1 {
                        if let Some(owner) = owner_of.get(first) {
                            used.insert(owner.clone());
                            continue;
                        }
                    }
                    let mut full = base.clone();
                    full.extend(path.iter().cloned());
                    if let Some(target) = resolve(&full) {
                        used.insert(target);
                    } else if let Some(owner) = owner_of.get(first) {
                        used.insert(owner.clone());
                    }
                }
            }
        }
        used.remove(&here);
        used.remove(&Vec::new());
        uses.entry(here).or_default().extend(used);
    }
    Crate { modules, uses }
}

/// The edges between the children of `parent`: `a -> b` when something inside child `a` uses
/// something inside child `b`.
fn edges_under(krate: &Crate, parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let child = |m: &ModPath| -> Option<String> {
        (m.len() > parent.len() && m.starts_with(parent)).then(|| m[parent.len()].clone())
    };
    for module in &krate.modules {
        if let Some(name) = child(module) {
            edges.entry(name).or_default();
        }
    }
    for (from, used) in &krate.uses {
        let Some(a) = child(from) else { continue };
        for to in used {
            if let Some(b) = child(to) {
                if a != b {
                    edges.entry(a.clone()).or_default().insert(b);
                }
            }
        }
    }
    edges
}

/// The edges that close a cycle.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(module) = stack.pop() {
            for next in edges.get(&module).into_iter().flatten() {
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
    edges
        .iter()
        .flat_map(|(from, uses)| uses.iter().map(move |to| (from, to)))
        .filter(|(from, to)| reaches(to, from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect()
}

#[test]
fn no_import_cycle_at_any_level() {
    let krate = read_crate();
    assert!(
        krate.modules.len() > 40,
        "the modules were found: {:?}",
        krate.modules
    );
    // Every folder is a level: the crate root, and each module that has children.
    let levels: BTreeSet<ModPath> = krate
        .modules
        .iter()
        .filter(|m| {
            krate
                .modules
                .iter()
                .any(|c| c.len() > m.len() && c.starts_with(m))
        })
        .cloned()
        .collect();
    assert!(
        levels.contains(&vec!["http".to_owned()]) && levels.contains(&vec!["engine".to_owned()])
    );
    let mut found = Vec::new();
    for level in &levels {
        for cycle in cycles(&edges_under(&krate, level)) {
            found.push(format!("in `{}`: {cycle}", level.join("::")));
        }
    }
    assert!(found.is_empty(), "imports that close a cycle: {found:#?}");
}

/// The layers of `lib.rs`, top first. Every top-level module is in one.
const LAYERS: &[(&str, &[&str])] = &[
    ("fronts", &["http", "postgres"]),
    (
        "façade",
        &[
            "registry", "scope", "local", "job_fn", "builder", "feed", "watch", "handle",
        ],
    ),
    ("engine", &["engine"]),
    (
        "the job and its seams",
        &["job", "seam", "store", "observer", "metrics", "trace"],
    ),
    (
        "leaves",
        &[
            "cause",
            "change",
            "counts",
            "error",
            "etag",
            "event",
            "exception",
            "failure",
            "filter",
            "id",
            "request",
            "status",
            "text",
        ],
    ),
];

#[test]
fn top_level_modules_use_only_their_own_layer_and_those_below() {
    let krate = read_crate();
    let top = edges_under(&krate, &[]);
    let layer_of = |module: &str| LAYERS.iter().position(|(_, mods)| mods.contains(&module));
    let unplaced: Vec<_> = top.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS and to lib.rs): {unplaced:?}"
    );
    assert!(
        top["registry"].contains("engine"),
        "the façade uses the engine: {top:?}"
    );
    let mut upward = Vec::new();
    for (from, used) in &top {
        for to in used {
            if layer_of(to) < layer_of(from) {
                upward.push(format!(
                    "{from} ({}) -> {to} ({})",
                    LAYERS[layer_of(from).unwrap()].0,
                    LAYERS[layer_of(to).unwrap()].0
                ));
            }
        }
    }
    assert!(upward.is_empty(), "imports that go up a layer: {upward:#?}");
}

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<_> = files
        .iter()
        .map(|f| (f, fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, lines)| *lines > 600)
        .map(|(f, lines)| format!("{} ({lines})", f.strip_prefix(&src).unwrap().display()))
        .collect();
    assert!(long.is_empty(), "files over 600 lines: {long:?}");
}
