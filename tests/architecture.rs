//! The layering rules of ARCHITECTURE.md, checked against the source tree.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file under `src/` with its path relative to `src/` and its text.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            // Unit tests at the bottom of a file may use anything (a webhook receiver in
            // axum, say): the rules are about what ships.
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            let relative = path
                .strip_prefix(&root)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            (relative, text)
        })
        .collect()
}

/// Lines that use `needle` as a path (`use needle`, `needle::`), comments aside.
fn uses(text: &str, needle: &str) -> bool {
    text.lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with("//"))
        .any(|line| {
            line.contains(&format!("{needle}::"))
                || line.contains(&format!("use {needle};"))
                || line.contains(&format!("use {needle} "))
        })
}

fn offenders(allowed: impl Fn(&str) -> bool, needle: &str) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(path, text)| !allowed(path) && uses(text, needle))
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn nothing_imports_the_composition_root() {
    let found = offenders(|path| path == "main.rs" || path == "app.rs", "crate::app");
    assert!(found.is_empty(), "files that import app: {found:?}");
    let found = offenders(|path| path == "main.rs", "edgeplane::app");
    assert!(found.is_empty(), "library files that import app: {found:?}");
}

#[test]
fn only_the_api_and_the_edge_router_know_axum() {
    let found = offenders(
        |path| {
            path.starts_with("api/") || path.starts_with("edge/") || path.starts_with("console/")
        },
        "axum",
    );
    assert!(
        found.is_empty(),
        "files outside api/ and edge/ that use axum: {found:?}"
    );
}

#[test]
fn only_the_store_knows_redb() {
    let found = offenders(|path| path.starts_with("store/"), "redb");
    assert!(
        found.is_empty(),
        "files outside store/ that use redb: {found:?}"
    );
}

#[test]
fn the_pure_cores_do_no_io() {
    let pure = |path: &str| {
        path.starts_with("validate/")
            || path == "rollout/plan.rs"
            || path == "rollout/machine.rs"
            || path == "monitor/analysis.rs"
            || path == "monitor/aggregate.rs"
    };
    for (path, text) in sources().into_iter().filter(|(p, _)| pure(p)) {
        // Address types (`std::net::IpAddr`) are values; sockets, files and clocks are I/O.
        for needle in [
            "tokio",
            "std::fs",
            "TcpStream",
            "TcpListener",
            "UdpSocket",
            "reqwest",
            "crate::store",
            "SystemTime::now",
            "Instant::now",
            "Timestamp::now",
        ] {
            let found = text
                .lines()
                .map(str::trim_start)
                .filter(|line| !line.starts_with("//"))
                .any(|line| line.contains(needle));
            assert!(!found, "{path} is a pure core but uses {needle}");
        }
    }
}

#[test]
fn every_file_says_what_it_is_for() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(missing.is_empty(), "files without a //! line: {missing:?}");
}

#[test]
fn the_two_sides_of_the_wire_meet_only_in_the_protocol() {
    let fleet_uses_edge: Vec<_> = sources()
        .into_iter()
        .filter(|(path, text)| path.starts_with("fleet/") && uses(text, "crate::edge"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        fleet_uses_edge.is_empty(),
        "fleet/ files that import edge/: {fleet_uses_edge:?}"
    );
    let edge_uses_fleet: Vec<_> = sources()
        .into_iter()
        .filter(|(path, text)| path.starts_with("edge/") && uses(text, "crate::fleet"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        edge_uses_fleet.is_empty(),
        "edge/ files that import fleet/: {edge_uses_fleet:?}"
    );
}
