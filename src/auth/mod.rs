//! Who may do what: JWTs, password hashes, roles and request budgets (SPEC §4, §5).

pub mod password;
pub mod ratelimit;
pub mod token;

pub use password::{HashError, HashPool, hash_password, verify_password};
pub use ratelimit::{Budget, LimitClass, RateLimits};
pub use token::{Claims, TokenIssuer, session_stamp};

/// Why a request's credentials were not accepted. The messages are what the client reads:
/// they never carry a parser's or a library's words.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("{0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Smallest password length accepted for API users.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Checks a username: 1–64 of `[A-Za-z0-9._-]`.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() || username.len() > 64 {
        return Err("username must be 1 to 64 characters".into());
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("username may contain only letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

/// The one spelling of a username that uniqueness and login compare: `Alice` and `alice`
/// are the same user.
pub fn normalise_username(username: &str) -> String {
    username.to_ascii_lowercase()
}

/// Checks a new password: its length, and that it is not one of the passwords that
/// guessing tries first (zxcvbn's frequency lists of leaked passwords, common words and
/// names, keyboard walks, dates and repeats). `user_inputs` (the username) count as known.
pub fn check_password(password: &str, user_inputs: &[&str]) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > 1024 {
        return Err("password must be at most 1024 bytes".into());
    }
    if is_common_password(password, user_inputs) {
        return Err(
            "password is too common or too easy to guess (a known password, a word with digits, a keyboard pattern or the username); choose a longer, less predictable one"
                .into(),
        );
    }
    Ok(())
}

/// Estimated guesses below which a password is refused: zxcvbn's score 2 ("somewhat
/// guessable", under 10^8 guesses) and below, which is where leaked-password lists, words
/// with digits and keyboard walks land.
const MIN_GUESSES_LOG10: f64 = 8.0;

/// Longer passwords are not scored: the estimate's cost grows with the length, and no
/// list of common passwords holds one that long.
const SCORED_CHARS: usize = 64;

fn is_common_password(password: &str, user_inputs: &[&str]) -> bool {
    if password.chars().count() > SCORED_CHARS {
        return false;
    }
    zxcvbn::zxcvbn(password, user_inputs).guesses_log10() < MIN_GUESSES_LOG10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_are_refused_and_long_unusual_ones_pass() {
        for weak in [
            "password1234",
            "123456789012",
            "qwertyuiopasdf",
            "aaaaaaaaaaaa",
            "iloveyou1234",
            "Password123!",
            "alice-alice-alice",
        ] {
            assert!(check_password(weak, &["alice"]).is_err(), "{weak}");
        }
        for fine in [
            "user-password-for-tests",
            "correct horse battery staple",
            "vX9#kq2!Lm0@zR",
        ] {
            assert_eq!(check_password(fine, &["alice"]), Ok(()), "{fine}");
        }
        assert!(check_password("short", &[]).is_err());
        assert_eq!(normalise_username("Alice.B"), "alice.b");
    }
}
