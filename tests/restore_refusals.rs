//! `edgeplane backup` and `edgeplane restore` refusing files and directories they cannot use:
//! a file that is not a snapshot, a snapshot of a format this binary does not read, a data dir
//! that holds no store. Each exits 1 with the reason and leaves no half-made file or data dir.

mod common;

use std::path::Path;
use std::process::Output;

use common::process::{edgeplane, run_to_end};

/// Runs `edgeplane ARGS` to its end (bounded), `stdin` on its standard input.
fn run(args: &[&str], stdin: &str) -> Output {
    run_to_end(edgeplane(args), stdin)
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Restores `file` into `target`, expecting exit 1 with `says` and no data dir left.
fn refused_restore(file: &Path, target: &Path, says: &str) {
    let output = run(&["restore", "--data-dir", path(target), path(file)], "");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains(says), "{}", stderr(&output));
    assert!(
        !target.exists(),
        "a refused restore left {}",
        target.display()
    );
}

#[test]
fn restore_refuses_a_file_that_is_not_a_snapshot_or_of_another_format() {
    let root = tempfile::tempdir().unwrap();

    let text = root.path().join("notes.txt");
    std::fs::write(&text, "these are not the bytes of a store\n").unwrap();
    refused_restore(
        &text,
        &root.path().join("from-text"),
        "not an edgeplane snapshot",
    );

    // A real snapshot of a small store, its format number then raised past this binary's.
    let source = root.path().join("source");
    let added = run(
        &[
            "user",
            "add",
            "ops",
            "--role",
            "Operator",
            "--password-stdin",
            "--data-dir",
            path(&source),
        ],
        "a-long-password-123\n",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let snapshot = root.path().join("store.snapshot");
    let backup = run(
        &[
            "backup",
            "--data-dir",
            path(&source),
            "--out",
            path(&snapshot),
        ],
        "",
    );
    assert!(backup.status.success(), "{}", stderr(&backup));
    let mut bytes = std::fs::read(&snapshot).unwrap();
    bytes[8] = 0xff;
    bytes[9] = 0xff;
    let future = root.path().join("future.snapshot");
    std::fs::write(&future, &bytes).unwrap();
    refused_restore(
        &future,
        &root.path().join("from-future"),
        "snapshot format 65535 is not supported",
    );

    // The untouched snapshot restores, so the refusals above were the changes' doing.
    let restored = root.path().join("restored");
    let output = run(
        &["restore", "--data-dir", path(&restored), path(&snapshot)],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn an_offline_backup_of_a_dir_without_a_store_is_refused_and_writes_no_file() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = root.path().join("nothing.snapshot");
    let output = run(
        &["backup", "--data-dir", path(&empty), "--out", path(&out)],
        "",
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("empty")], "{left:?}");
}
