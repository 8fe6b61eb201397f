//! What a `pathPattern` matches, for the control plane (validation, conflicts) and the edges
//! alike, with the meaning CDN operators know from CloudFront, Cloudflare and Fastly rules.
//!
//! Semantics: `*` matches any run of characters, `/` included (also none), so `/static/*`
//! covers everything under `/static/`; `?` matches exactly one character; every other
//! character matches itself. A run of stars (`**`) is as wide as one `*`, so patterns written
//! as `/api/**` keep meaning "everything under `/api/`". There is no escaping. A request path
//! is matched whole: `/static/*` does not match `/static` (no trailing slash).
//!
//! Two patterns overlap when some request path is matched by both. That is decided exactly,
//! without recursion, as the emptiness of the intersection of the two languages: a search over
//! pairs of positions `(i, j)`, one per pattern, where each step either lets a star end, or
//! consumes one character that both sides can produce (a star stays where it is). Matching a
//! path is the same search with the path as a pattern of literals. It costs
//! `O(len(a) × len(b))` time and memory; patterns are at most 2048 characters.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: exactly one character.
    One,
    /// `*`: any run of characters, `/` included.
    Any,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            // A star next to a star adds nothing.
            '*' if out.last() == Some(&Token::Any) => {}
            '*' => out.push(Token::Any),
            '?' => out.push(Token::One),
            c => out.push(Token::Literal(c)),
        }
    }
    out
}

/// Whether some character is produced by both tokens.
fn share_a_character(a: Token, b: Token) -> bool {
    match (a, b) {
        (Token::Literal(x), Token::Literal(y)) => x == y,
        _ => true,
    }
}

/// Where a token's position goes after it produced a character: a star may produce more.
fn after_one(token: Token, position: usize) -> usize {
    if token == Token::Any {
        position
    } else {
        position + 1
    }
}

/// Whether some string is matched by both token sequences.
fn intersect(a: &[Token], b: &[Token]) -> bool {
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
        // A star may end without producing anything more.
        if left == Some(Token::Any) {
            stack.push((i + 1, j));
        }
        if right == Some(Token::Any) {
            stack.push((i, j + 1));
        }
        // Both sides produce the same next character. Two stars producing one together
        // goes nowhere new: either can produce it alone while the other ends later.
        if let (Some(x), Some(y)) = (left, right)
            && !(x == Token::Any && y == Token::Any)
            && share_a_character(x, y)
        {
            stack.push((after_one(x, i), after_one(y, j)));
        }
    }
    false
}

/// Whether some request path is matched by both patterns.
pub fn overlaps(a: &str, b: &str) -> bool {
    intersect(&tokens(a), &tokens(b))
}

/// Whether `path` (a concrete request path) is matched by `pattern`. A `*` or `?` in the
/// path is an ordinary character.
pub fn matches(pattern: &str, path: &str) -> bool {
    let path: Vec<Token> = path.chars().map(Token::Literal).collect();
    intersect(&tokens(pattern), &path)
}

/// A concrete path matched by `pattern`, used as a probe: a star becomes two segments' worth
/// of characters, so that a probe shows what `*` spans.
pub fn sample_path(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for token in tokens(pattern) {
        match token {
            Token::Literal(c) => out.push(c),
            Token::One => out.push('x'),
            Token::Any => out.push_str("x/y"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check_overlap(a: &str, b: &str, expected: bool) {
        assert_eq!(overlaps(a, b), expected, "overlaps({a:?}, {b:?})");
        assert_eq!(overlaps(b, a), expected, "overlaps({b:?}, {a:?})");
    }

    fn check_match(pattern: &str, path: &str, expected: bool) {
        assert_eq!(
            matches(pattern, path),
            expected,
            "matches({pattern:?}, {path:?})"
        );
    }

    #[test]
    fn a_star_covers_everything_under_a_prefix() {
        check_match("/static/*", "/static/js/app.js", true);
        check_match("/static/*", "/static/app.js", true);
        check_match("/static/*", "/static/", true);
        check_match("/static/*", "/static", false);
        check_match("/static/*", "/assets/app.js", false);
        check_match("/*.js", "/static/js/app.js", true);
        check_match("/*.js", "/static/js/app.css", false);
        check_match("/api/*/users", "/api/v1/internal/users", true);
        check_match("/api/*/users", "/api/v1/users/42", false);
        check_match("/*", "/", true);
        check_match("/plain", "/plain", true);
        check_match("/plain", "/plain/", false);
        // Patterns written with `**` keep their meaning.
        check_match("/api/**", "/api/v1/users", true);
        check_match("/a/**/z", "/a/b/c/z", true);
        check_match("/a/**/z", "/a/z", false);
    }

    #[test]
    fn a_question_mark_is_exactly_one_character() {
        check_match("/v?/users", "/v1/users", true);
        check_match("/v?/users", "/v/users", false);
        check_match("/v?/users", "/v10/users", false);
        check_match("/a?b", "/a/b", true);
        check_match("/img/????.png", "/img/logo.png", true);
        check_match("/img/????.png", "/img/log.png", false);
    }

    #[test]
    fn wildcards_in_a_path_are_ordinary_characters() {
        check_match("/a*", "/a*", true);
        check_match("/a", "/*", false);
        check_match("/?", "/?", true);
    }

    #[test]
    fn overlap_cases() {
        check_overlap("/assets/*", "/assets/images/*", true);
        check_overlap("/static/*", "/static/js/app.js", true);
        check_overlap("/static/*", "/static/*", true);
        check_overlap("/a/*.js", "/a/*.css", false);
        check_overlap("/a/*.js", "/a/b/*", true);
        check_overlap("/api/*", "/images/*", false);
        check_overlap("/*", "/anything", true);
        check_overlap("/*.js", "/app.*", true);
        check_overlap("/*.js", "/static/*", true);
        check_overlap("/a*b", "/*c", false);
        check_overlap("/a/*/c", "/a/b/*", true);
        check_overlap("/a/*", "/a/**", true);
        check_overlap("/api", "/api/*", false);
        check_overlap("/x", "/y", false);
        check_overlap("/v?", "/v1", true);
        check_overlap("/v?", "/v10", false);
        check_overlap("/v?/*", "/*/users", true);
        check_overlap("/??", "/a*b", true);
        check_overlap("/???", "/a", false);
    }

    #[test]
    fn samples_match_their_pattern() {
        for pattern in [
            "/api/**",
            "/static/*.js",
            "/a/*/b/*",
            "/v?/x",
            "/plain",
            "/*",
        ] {
            let sample = sample_path(pattern);
            assert!(matches(pattern, &sample), "{pattern} → {sample}");
        }
    }

    #[test]
    fn long_patterns_do_not_recurse() {
        let a = format!("/{}", "*a".repeat(1000));
        let b = format!("/{}", "a*".repeat(1000));
        assert!(overlaps(&a, &b));
        assert!(matches(&"*".repeat(2000), &"a".repeat(2000)));
        assert!(!matches(
            &format!("{}b", "*a".repeat(1000)),
            &"a".repeat(2000)
        ));
    }

    /// The definition, by backtracking: slow, obviously right.
    fn brute_matches(pattern: &[char], path: &[char]) -> bool {
        match pattern.split_first() {
            None => path.is_empty(),
            Some(('*', rest)) => (0..=path.len()).any(|skip| brute_matches(rest, &path[skip..])),
            Some(('?', rest)) => !path.is_empty() && brute_matches(rest, &path[1..]),
            Some((c, rest)) => path.first() == Some(c) && brute_matches(rest, &path[1..]),
        }
    }

    /// Every string over `alphabet` of at most `max_len` characters.
    fn all_paths(alphabet: &[char], max_len: usize) -> Vec<Vec<char>> {
        let mut out = vec![Vec::new()];
        let mut frontier = vec![Vec::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for path in &frontier {
                for c in alphabet {
                    let mut longer: Vec<char> = path.clone();
                    longer.push(*c);
                    next.push(longer);
                }
            }
            out.extend(next.iter().cloned());
            frontier = next;
        }
        out
    }

    /// Characters of a pattern that is not a star.
    fn fixed_width(pattern: &str) -> usize {
        pattern.chars().filter(|c| *c != '*').count()
    }

    fn small_pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop::sample::select(vec!['a', 'b', '/', '*', '?']), 0..=5)
            .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_definition(
            pattern in small_pattern(),
            path in proptest::collection::vec(prop::sample::select(vec!['a', 'b', '/', '*']), 0..=7),
        ) {
            let pattern_chars: Vec<char> = pattern.chars().collect();
            let text: String = path.iter().collect();
            prop_assert_eq!(matches(&pattern, &text), brute_matches(&pattern_chars, &path));
        }

        /// A shortest path matched by both patterns has no character that a star produces on
        /// both sides (dropping it leaves a path both still match), so each of its characters
        /// is produced by a literal or a `?` of one side: enumerating paths up to the two
        /// patterns' fixed widths together, over the letters they use, decides overlap.
        #[test]
        fn overlap_is_exact(a in small_pattern(), b in small_pattern()) {
            let a_chars: Vec<char> = a.chars().collect();
            let b_chars: Vec<char> = b.chars().collect();
            let witness = all_paths(&['a', 'b', '/'], fixed_width(&a) + fixed_width(&b))
                .into_iter()
                .find(|path| brute_matches(&a_chars, path) && brute_matches(&b_chars, path));
            prop_assert_eq!(
                overlaps(&a, &b),
                witness.is_some(),
                "{:?} and {:?}: witness {:?}", a, b, witness
            );
        }
    }
}
