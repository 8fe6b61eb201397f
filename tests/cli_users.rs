//! `edgeplane user …` and `edgeplane token` as an operator runs them on a stopped server's
//! data dir: users added, listed, given a new password and removed; tokens minted offline that
//! the server then accepts, and that end when the password changes; the refusals and their
//! exit codes (1 for a failure, 2 for bad usage).

mod common;

use std::path::Path;
use std::process::Output;

use common::process::{client, edgeplane, get, run_to_end, serve};

const PASSWORD: &str = "a-long-password-for-alice";

/// Runs `edgeplane ARGS --data-dir DIR` to its end (bounded), `stdin` on its standard input.
fn run_in(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = edgeplane(args);
    command.args(["--data-dir", data_dir.to_str().expect("utf-8 path")]);
    run_to_end(command, stdin)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn users_are_added_listed_given_a_new_password_and_removed_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    let added = run_in(
        data,
        &[
            "user",
            "add",
            "alice",
            "--role",
            "Developer",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(stdout(&added).trim(), "added user alice");

    let listed = run_in(data, &["user", "list"], "");
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed)
            .lines()
            .any(|line| line == "alice\tDeveloper"),
        "{}",
        stdout(&listed)
    );

    // A second user of the same name, under another spelling, is refused.
    let again = run_in(
        data,
        &[
            "user",
            "add",
            "ALICE",
            "--role",
            "Viewer",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let changed = run_in(
        data,
        &["user", "passwd", "alice", "--password-stdin"],
        "another-long-password-42\n",
    );
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert_eq!(stdout(&changed).trim(), "password of alice changed");

    let removed = run_in(data, &["user", "remove", "alice"], "");
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(stdout(&removed).trim(), "removed user alice");
    let listed = run_in(data, &["user", "list"], "");
    assert!(
        !stdout(&listed)
            .lines()
            .any(|line| line.starts_with("alice\t")),
        "{}",
        stdout(&listed)
    );
    let gone = run_in(data, &["user", "remove", "alice"], "");
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("no user named 'alice'"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn bad_user_commands_are_refused_with_the_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for (args, stdin, code, says) in [
        (
            &["user", "add", "bob", "--role", "Boss", "--password-stdin"][..],
            format!("{PASSWORD}\n"),
            2,
            "unknown role 'Boss'",
        ),
        (
            &["user", "add", "bob", "--role", "Viewer", "--password-stdin"][..],
            "short\n".to_string(),
            2,
            "password must be at least",
        ),
        (
            &[
                "user",
                "add",
                "bad name!",
                "--role",
                "Viewer",
                "--password-stdin",
            ][..],
            format!("{PASSWORD}\n"),
            2,
            "username may contain only",
        ),
        (
            &["user", "passwd", "nobody", "--password-stdin"][..],
            format!("{PASSWORD}\n"),
            1,
            "no user named 'nobody'",
        ),
        (
            &["token", "--user", "nobody"][..],
            String::new(),
            1,
            "no user named 'nobody'",
        ),
        (
            &["token", "--user", "admin", "--ttl", "0s"][..],
            String::new(),
            1,
            "--ttl must be more than 0",
        ),
        (
            &["token", "--user", "admin", "--ttl", "10000d"][..],
            String::new(),
            2,
            "auth.max_token_ttl",
        ),
    ] {
        let output = run_in(data, args, &stdin);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let listed = run_in(data, &["user", "list"], "");
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        !stdout(&listed)
            .lines()
            .any(|line| line.starts_with("bob\t")),
        "{}",
        stdout(&listed)
    );
}

#[tokio::test]
async fn an_offline_token_is_accepted_until_the_password_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let added = run_in(
        data,
        &[
            "user",
            "add",
            "alice",
            "--role",
            "Operator",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let minted = run_in(data, &["token", "--user", "alice", "--ttl", "2h"], "");
    assert!(minted.status.success(), "{}", stderr(&minted));
    let token = stdout(&minted).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let http = client();
    {
        let server = serve(data, None);
        let (status, body) = get(&http, &server.base, "/api/v1/configurations", &token).await;
        assert_eq!(status, 200, "{body}");
        // The store belongs to the running server: offline commands say so.
        let busy = run_in(data, &["user", "list"], "");
        assert_eq!(busy.status.code(), Some(1));
        assert!(
            stderr(&busy).contains("is the server running?"),
            "{}",
            stderr(&busy)
        );
        server.kill_hard();
    }

    let changed = run_in(
        data,
        &["user", "passwd", "alice", "--password-stdin"],
        "another-long-password-42\n",
    );
    assert!(changed.status.success(), "{}", stderr(&changed));
    let server = serve(data, None);
    let (status, body) = get(&http, &server.base, "/api/v1/configurations", &token).await;
    assert_eq!(status, 401, "{body}");
}
