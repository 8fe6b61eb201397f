//! Opening a data dir with secrets that cannot work: a JWT secret or encryption key that is
//! not base64 or too short, a damaged `secret.key`, a bootstrap password too weak. Each is
//! refused with the setting or file named, before the server could start with it; and a key
//! that does open is the one kept in `secret.key`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use edgeplane::config::Settings;
use edgeplane::service::open::{OpenError, SECRET_KEY_FILE, bootstrap_admin, open};

fn settings_in(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.data_dir = dir.to_path_buf();
    settings
}

/// The message of an `Invalid` refusal; any other outcome fails the test.
fn refusal(result: Result<edgeplane::service::open::Opened, OpenError>) -> String {
    match result {
        Err(OpenError::Invalid(message)) => message,
        Err(other) => panic!("refused, but not as invalid: {other}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn secrets_that_cannot_work_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();

    let mut settings = settings_in(dir.path());
    settings.auth.jwt_secret = "not base64 at all!".into();
    assert!(refusal(open(&settings)).starts_with("auth.jwt_secret: must be base64"));

    let mut settings = settings_in(dir.path());
    settings.auth.jwt_secret = BASE64.encode([7u8; 8]);
    assert!(refusal(open(&settings)).starts_with("auth.jwt_secret: "));

    let mut settings = settings_in(dir.path());
    settings.secrets.encryption_key = "short".into();
    assert!(refusal(open(&settings)).starts_with("secrets.encryption_key: "));

    // A valid key in the settings is used as it is: no key file is made for it.
    let fresh = tempfile::tempdir().unwrap();
    let mut settings = settings_in(fresh.path());
    settings.secrets.encryption_key = BASE64.encode([9u8; 32]);
    settings.auth.jwt_secret = BASE64.encode([7u8; 32]);
    drop(open(&settings).expect("opens"));
    assert!(!fresh.path().join(SECRET_KEY_FILE).exists());
}

#[test]
fn a_damaged_secret_key_file_is_named_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path());
    let key_file = dir.path().join(SECRET_KEY_FILE);

    // First use makes the key, readable by the owner only; the next open reads the same one.
    drop(open(&settings).expect("first open"));
    let made = std::fs::read_to_string(&key_file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(open(&settings).expect("second open"));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), made);

    std::fs::write(&key_file, "damaged\n").unwrap();
    let message = refusal(open(&settings));
    assert!(
        message.starts_with(&key_file.display().to_string()),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), "damaged\n");
}

#[test]
fn a_weak_bootstrap_password_is_refused_and_no_admin_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(&settings_in(dir.path())).expect("opens");
    match bootstrap_admin(&opened.store, dir.path(), Some("admin".into())) {
        Err(OpenError::Invalid(message)) => {
            assert!(
                message.starts_with("EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD: "),
                "{message}"
            );
        }
        other => panic!("not refused as invalid: {:?}", other.err()),
    }
    assert_eq!(opened.store.reader().unwrap().user_count().unwrap(), 0);

    bootstrap_admin(
        &opened.store,
        dir.path(),
        Some("a-strong-bootstrap-password-7".into()),
    )
    .expect("a strong password is taken");
    assert_eq!(opened.store.reader().unwrap().user_count().unwrap(), 1);
}
