//! `edgeplane login` refusing what it cannot use before it reaches the network: a URL that is
//! not a control plane's, no username without a terminal to ask on, an empty password, an
//! unreadable CA file, nowhere to keep the credentials. Each exits 2 with the reason and
//! writes no credentials file.

mod common;

use std::path::Path;
use std::process::Output;

use common::process::{edgeplane, run_to_end};

/// Runs `edgeplane login ARGS` with `home` as HOME and XDG_CONFIG_HOME's parent (or neither),
/// and `stdin` piped in.
fn login(args: &[&str], home: Option<&Path>, stdin: &str) -> Output {
    let mut command = edgeplane(&["login"]);
    command
        .args(args)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("HOME")
        .env("NO_COLOR", "1");
    if let Some(home) = home {
        command
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"));
    }
    run_to_end(command, stdin)
}

#[test]
fn login_refuses_what_it_cannot_use_with_exit_2_and_keeps_nothing() {
    let home = tempfile::tempdir().unwrap();
    let missing_ca = home.path().join("no-such-ca.pem");
    let missing_ca = missing_ca.to_str().unwrap();
    // Nothing listens on port 9 of the loopback: none of these may get as far as asking it.
    let url = "http://127.0.0.1:9";
    for (args, stdin, says) in [
        (
            vec!["--url", "ftp://127.0.0.1:9", "--username", "admin"],
            "password\n",
            "is not an http:// or https:// URL",
        ),
        (
            vec!["--url", "http://127.0.0.1:9/?x=1", "--username", "admin"],
            "password\n",
            "takes no query or fragment",
        ),
        (
            vec!["--url", url, "--password-stdin"],
            "password\n",
            "--username is needed when standard input is not a terminal",
        ),
        (
            vec!["--url", url, "--username", "  ", "--password-stdin"],
            "password\n",
            "--username is needed",
        ),
        (
            vec!["--url", url, "--username", "admin", "--password-stdin"],
            "\n",
            "the password is empty",
        ),
        (
            vec![
                "--url",
                url,
                "--username",
                "admin",
                "--password-stdin",
                "--ca-file",
                missing_ca,
            ],
            "password\n",
            "cannot read the CA file",
        ),
    ] {
        let output = login(&args, Some(home.path()), stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    let output = login(
        &["--url", url, "--username", "admin", "--password-stdin"],
        None,
        "password\n",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot tell where to keep the credentials"),
        "{stderr}"
    );

    assert!(
        !home.path().join("config").exists(),
        "a refused login wrote credentials"
    );
}
