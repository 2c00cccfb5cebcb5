//! The layers of `src/` stay layers: every `crate::` reference between top-level modules is
//! one ARCHITECTURE.md's layer table allows, the graph has no cycle, and the pure core refers to
//! nothing outside itself. Read from the source text (comments left out), so a new `use` that
//! breaks a layer fails here, naming the edge or the cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/api/mod.rs` → `api`), `None` for the crate
/// roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// The top-level modules named as `crate::<module>` in `text`, and those of a
/// `use crate::{a, b::c}` group.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let Some(from) = module_of(&src, file) else { continue };
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        // Doc links and comments are not dependencies.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for to in references(&code) {
            // Macros exported at the crate root (`crate::operations!`) are not modules.
            if to != from && modules.contains(&to) {
                graph.get_mut(&from).expect("known module").insert(to);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in &g[node] {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(graph, start, &mut vec![], &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    assert!(g.len() > 5, "found only {:?}", g.keys());
    if let Some(c) = cycle(&g) {
        panic!("import cycle among src/ modules: {}", c.join(" -> "));
    }
}

/// ARCHITECTURE.md's layer table: what each top-level module may refer to.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cli", &["auth", "core", "clock"]),
    ("demo", &["api", "control", "config", "auth"]),
    (
        "api",
        &[
            "control",
            "error",
            "core",
            "telemetry",
            "builtin",
            "auth",
            "audit",
            "logs",
            "console",
            "notify",
        ],
    ),
    ("console", &["error"]),
    (
        "control",
        &[
            "dataplane",
            "provider",
            "store",
            "core",
            "telemetry",
            "config",
            "clock",
            "auth",
            "audit",
            "logs",
            "notify",
            "queue",
            "objects",
        ],
    ),
    (
        "dataplane",
        &[
            "error",
            "telemetry",
            "config",
            "core",
            "clock",
            "auth",
            "audit",
            "queue",
        ],
    ),
    ("auth", &["core", "config", "clock", "error", "audit"]),
    ("audit", &["core", "config", "clock", "store"]),
    ("queue", &["core", "clock", "store"]),
    ("notify", &["core", "config", "clock", "store"]),
    ("objects", &["core", "config", "clock", "auth", "audit"]),
    ("provider", &["telemetry", "config", "core", "logs"]),
    ("logs", &["core"]),
    ("error", &["store", "core"]),
    ("store", &["core"]),
    ("telemetry", &["core"]),
    ("config", &["core"]),
    ("clock", &["core"]),
    ("builtin", &["core"]),
    ("core", &[]),
];

#[test]
fn every_reference_is_one_the_layer_table_allows() {
    let g = graph();
    let mut wrong = vec![];
    for (from, tos) in &g {
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| m == from) else {
            wrong.push(format!("{from}: a module the layer table does not list"));
            continue;
        };
        for to in tos {
            if !allowed.contains(&to.as_str()) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "references ARCHITECTURE.md's layer table does not allow (change the code, or the table and this list together): {wrong:?}"
    );
}

#[test]
fn core_refers_to_nothing_outside_itself() {
    let g = graph();
    assert!(g["core"].is_empty(), "core refers to {:?}", g["core"]);
}

#[test]
fn the_reader_sees_groups_and_paths() {
    let r = references("use crate::{api::x, store};\nlet a = crate::core::b();");
    assert_eq!(r, ["api", "core", "store"].into_iter().map(String::from).collect());
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["a".to_string()].into());
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "a".into()]));
    g.get_mut("b").unwrap().clear();
    assert_eq!(cycle(&g), None);
}
