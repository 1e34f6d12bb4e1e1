//! The layout promised in `lib.rs` and the README's "Architecture": imports between the crate's
//! top-level modules run one way. A module uses another when it names `crate::that` (a path, or a
//! type re-exported from it at the crate root); comments and unit tests do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

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

fn identifiers_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Each top-level module and the modules it uses.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    // Types re-exported at the root, by the module that defines them: `pub use engine::x::T;`.
    let mut owner_of = BTreeMap::new();
    for line in lib.lines().filter(|l| l.starts_with("pub use ")) {
        let path = &line["pub use ".len()..];
        let module = path.split("::").next().unwrap().to_owned();
        let names = path.rsplit("::").next().unwrap();
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if name.starts_with(char::is_uppercase) {
                owner_of.insert(name.to_owned(), module.clone());
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
        let code = code(&fs::read_to_string(&file).unwrap());
        let mut uses: BTreeSet<String> = identifiers_after(&code, "crate::")
            .into_iter()
            .map(|name| {
                owner_of
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| name.to_owned())
            })
            .collect();
        // `use crate::{A, b, C};`
        for group in code.split("use crate::{").skip(1) {
            let inside = group.split('}').next().unwrap_or("");
            for name in inside.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if let Some(owner) = owner_of.get(name) {
                    uses.insert(owner.clone());
                } else if !name.is_empty() {
                    uses.insert(name.to_owned());
                }
            }
        }
        uses.remove(&module);
        graph.entry(module).or_default().extend(uses);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m) && m != "lib");
    }
    graph
}

#[test]
fn imports_between_modules_have_no_cycle() {
    let graph = module_graph();
    assert!(graph.len() > 20, "the modules were found: {graph:?}");
    assert!(
        graph["registry"].contains("engine"),
        "the façade uses the engine"
    );
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(module) = stack.pop() {
            for next in &graph[&module] {
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
    let cycles: Vec<String> = graph
        .iter()
        .flat_map(|(from, uses)| uses.iter().map(move |to| (from, to)))
        .filter(|(from, to)| reaches(to, from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(cycles.is_empty(), "imports that close a cycle: {cycles:?}");
}

#[test]
fn the_engine_knows_nothing_of_its_fronts() {
    let graph = module_graph();
    for below in ["engine", "job", "seam", "store", "observer"] {
        for front in ["http", "postgres", "registry", "user_view", "feed"] {
            assert!(
                !graph[below].contains(front),
                "{below} uses {front}, a layer above it"
            );
        }
    }
}
