//! What a `pathPattern` matches, for the control plane (validation, conflicts) and the edges
//! alike: matching and overlap of path patterns as operators write them (`/static/*`,
//! `/api/**`).
//!
//! Semantics: `**` matches any run of characters including `/` (also none); `*` matches any
//! run of characters without `/` (also none); every other character matches itself. There is
//! no escaping and no `?`, which is how the edges interpret `pathPattern` too.
//!
//! Two patterns overlap when some request path is matched by both. That is decided exactly,
//! without recursion, as the emptiness of the intersection of the two languages: a search over
//! pairs of positions `(i, j)`, one per pattern, where each step either consumes a literal on
//! both sides, lets a wildcard end, or lets a wildcard swallow the other side's next token.
//! It costs `O(len(a) × len(b))` time and memory; patterns are at most 2048 characters.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: anything but `/`.
    Star,
    /// `**`: anything.
    DoubleStar,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' {
            if chars.peek() == Some(&'*') {
                // Any run of three or more stars is as wide as `**`.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push(Token::DoubleStar);
            } else {
                out.push(Token::Star);
            }
        } else {
            out.push(Token::Literal(c));
        }
    }
    out
}

/// Whether a wildcard token can produce everything the other token can (`other` is swallowed
/// whole) — a `*` cannot produce `/`, so it cannot swallow a `/` or a `**` that emits one,
/// but a `**` that emits no `/` is still a legal production, so a `*` may swallow it.
fn swallows(wildcard: Token, other: Token) -> bool {
    match (wildcard, other) {
        (Token::DoubleStar, _) => true,
        (Token::Star, Token::Literal(c)) => c != '/',
        (Token::Star, Token::Star | Token::DoubleStar) => true,
        (Token::Literal(_), _) => false,
    }
}

/// Whether some path is matched by both patterns.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let a = tokens(a);
    let b = tokens(b);
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        let slot = i * width + j;
        if seen[slot] {
            continue;
        }
        seen[slot] = true;
        if i == a.len() && j == b.len() {
            return true;
        }
        let left = a.get(i).copied();
        let right = b.get(j).copied();
        if let (Some(Token::Literal(x)), Some(Token::Literal(y))) = (left, right) {
            if x == y {
                stack.push((i + 1, j + 1));
            }
        }
        if let Some(wildcard @ (Token::Star | Token::DoubleStar)) = left {
            // The wildcard ends here.
            stack.push((i + 1, j));
            if let Some(other) = right {
                if swallows(wildcard, other) {
                    stack.push((i, j + 1));
                }
            }
        }
        if let Some(wildcard @ (Token::Star | Token::DoubleStar)) = right {
            stack.push((i, j + 1));
            if let Some(other) = left {
                if swallows(wildcard, other) {
                    stack.push((i + 1, j));
                }
            }
        }
    }
    false
}

/// Whether `path` (a concrete request path, no wildcards of its own) is matched by `pattern`.
pub(crate) fn matches(pattern: &str, path: &str) -> bool {
    // The path is not tokenized: a `*` in a request path is an ordinary character.
    let pattern = tokens(pattern);
    let path: Vec<char> = path.chars().collect();
    let width = path.len() + 1;
    let mut seen = vec![false; (pattern.len() + 1) * width];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        let slot = i * width + j;
        if seen[slot] {
            continue;
        }
        seen[slot] = true;
        if i == pattern.len() && j == path.len() {
            return true;
        }
        match pattern.get(i) {
            Some(Token::Literal(c)) if path.get(j) == Some(c) => {
                stack.push((i + 1, j + 1));
            }
            Some(Token::Star) => {
                stack.push((i + 1, j));
                if path.get(j).is_some_and(|c| *c != '/') {
                    stack.push((i, j + 1));
                }
            }
            Some(Token::DoubleStar) => {
                stack.push((i + 1, j));
                if j < path.len() {
                    stack.push((i, j + 1));
                }
            }
            Some(Token::Literal(_)) | None => {}
        }
    }
    false
}

/// A concrete path matched by `pattern`, used as a probe (wildcards become short segments).
pub(crate) fn sample_path(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for token in tokens(pattern) {
        match token {
            Token::Literal(c) => out.push(c),
            Token::Star => out.push('x'),
            Token::DoubleStar => out.push_str("x/y"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, expected: bool) {
        assert_eq!(overlaps(a, b), expected, "overlaps({a:?}, {b:?})");
        assert_eq!(overlaps(b, a), expected, "overlaps({b:?}, {a:?})");
    }

    #[test]
    fn overlap_cases() {
        check("/static/*", "/static/*", true);
        check("/static/*", "/static/app.js", true);
        check("/static/*", "/static/js/app.js", false);
        check("/static/**", "/static/js/app.js", true);
        check("/api/**", "/api/v1/*", true);
        check("/api/**", "/images/*", false);
        check("/**", "/anything", true);
        check("/*.js", "/static/*", false);
        check("/*.js", "/app.*", true);
        check("/a*b", "/*", true);
        check("/a*b", "/*c", false);
        check("/a/*/c", "/a/b/*", true);
        check("/a/*", "/a/**", true);
        check("/a/*/z", "/a/**/z", true);
        // `**` is characters, not path segments: `/a/**/z` needs a `/` before the `z`.
        check("/a/*", "/a/**/z", false);
        check("/x", "/y", false);
        check("/api", "/api/**", false);
    }

    #[test]
    fn matching_and_samples() {
        assert!(matches("/api/**", "/api/v1/users"));
        assert!(matches("/api/*", "/api/users"));
        assert!(!matches("/api/*", "/api/v1/users"));
        assert!(matches("/**", "/"));
        assert!(!matches("/img/*.png", "/img/a.jpg"));
        for pattern in ["/api/**", "/static/*.js", "/a/*/b/**", "/plain"] {
            assert!(matches(pattern, &sample_path(pattern)), "{pattern}");
        }
    }

    #[test]
    fn long_patterns_do_not_recurse() {
        let a = format!("/{}", "*a".repeat(1000));
        let b = format!("/{}", "a*".repeat(1000));
        assert!(overlaps(&a, &b));
        assert!(matches(&"*".repeat(2000), &"a".repeat(2000)));
    }
}
