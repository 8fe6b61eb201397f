//! The nginx adapter's renderer: the active configurations in, the text of `edgeplane.conf`
//! and the TLS files it names out (SPEC §6.1). Pure — no I/O, no clock — so every mapping is
//! a table test.
//!
//! Nothing from a configuration reaches the file as nginx syntax. Every value is either held
//! to a grammar that cannot carry any (header names, variable names, addresses, numbers,
//! country codes, host names) or written as a double-quoted nginx string with `\` and `"`
//! escaped and `$` spelled as the `$edgeplane_dollar` variable, so a `;`, `{`, `}`, quote or
//! `$` in content stays text. Control characters are refused. What nginx cannot do (a WAF
//! rule set, brotli alone, an origin with a path) is refused with the reason, never dropped.
//!
//! Locations: one per path pattern. A pattern without wildcards is an exact location
//! (`location = "/a"`); any other is a regex location (`*` → `.*`, `?` → `.`, every other
//! character escaped). Regex locations are tried most specific first (most literal
//! characters). A location takes, per type, the rule whose pattern covers it most narrowly:
//! its own pattern, else one made of a literal prefix and a trailing `*` that the location's
//! pattern starts with (`/*` covers every location). A request goes to one location only, so
//! where two patterns overlap without one covering the other, the more specific one decides.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::super::settings::NginxSettings;
use super::rules::{
    CACHE_ZONE, CacheRule, Response, Routing, Security, Tls, parse_cache, parse_certificate,
    parse_response, parse_routing, parse_security,
};
use crate::model::ConfigType;
use crate::validate::{literal_prefix, same_pattern};

/// The rendered file's name under `render_dir`.
pub(crate) const FILE_NAME: &str = "edgeplane.conf";

/// One active configuration, as the renderer sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActiveRule<'a> {
    pub(crate) configuration_id: &'a str,
    pub(crate) version: &'a str,
    pub(crate) config_type: ConfigType,
    pub(crate) content: &'a Value,
}

/// The file's text, the TLS files it names, and what nginx will not enforce.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Rendered {
    pub(crate) text: String,
    pub(crate) files: Vec<RenderedFile>,
    pub(crate) warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RenderedFile {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
    pub(crate) mode: u32,
}

/// Renders `edgeplane.conf` for `rules`. Err is the reason for a NACK, naming the
/// configuration and the field.
pub(crate) fn render(
    rules: &[ActiveRule<'_>],
    settings: &NginxSettings,
) -> Result<Rendered, String> {
    let mut rules: Vec<ActiveRule<'_>> = rules.to_vec();
    rules.sort_by(|a, b| a.configuration_id.cmp(b.configuration_id));
    let mut plan = Plan::default();
    let mut warnings = Vec::new();
    for rule in &rules {
        let named =
            |reason: String| format!("{} {}: {reason}", rule.configuration_id, rule.version);
        let content = rule.content;
        let id = rule.configuration_id;
        match rule.config_type {
            ConfigType::CacheRule => plan.cache.push(parse_cache(content).map_err(named)?),
            ConfigType::RoutingRule => plan
                .routing
                .push(parse_routing(id, content).map_err(named)?),
            ConfigType::SecurityRule => {
                let (security, warning) =
                    parse_security(id, content, settings.geoip_variable.as_deref())
                        .map_err(named)?;
                if let Some(warning) = warning {
                    warnings.push(named(warning));
                }
                plan.security.push(security);
            }
            ConfigType::ResponseModification => {
                plan.response
                    .push(parse_response(id, content).map_err(named)?);
            }
            ConfigType::SslCertificate => plan.tls.push(
                parse_certificate(id, rule.version, content, &settings.render_dir.join("tls"))
                    .map_err(named)?,
            ),
        }
    }
    let versions: Vec<String> = rules
        .iter()
        .map(|r| format!("{}={}", r.configuration_id, r.version))
        .collect();
    let mut out = Conf::default();
    out.line(
        "# Written by the edgeplane agent from the active configurations; edits are overwritten.",
    );
    out.line("log_format edgeplane_json escape=json '{\"time\":\"$time_iso8601\",\"status\":$status,\"request_time\":$request_time,\"upstream_cache_status\":\"$upstream_cache_status\",\"bytes_sent\":$bytes_sent,\"request_length\":$request_length,\"upstream_addr\":\"$upstream_addr\"}';");
    out.line(&format!(
        "proxy_cache_path {} levels=1:2 keys_zone={CACHE_ZONE}:10m max_size={} inactive=7d use_temp_path=off;",
        path_string(&settings.cache_dir)?,
        settings.cache_size
    ));
    // nginx has no escape for `$` in values that take variables; this one holds a dollar.
    out.line("geo $edgeplane_dollar { default \"$\"; }");
    for security in &plan.security {
        security.http_level(&mut out, settings.geoip_variable.as_deref());
    }
    for response in &plan.response {
        response.http_level(&mut out);
    }
    for routing in &plan.routing {
        routing.upstream(&mut out);
    }
    let locations = plan.locations(&literal(&versions.join(", "))?)?;
    let access_log = path_string(&settings.access_log)?;
    out.open("server");
    out.line(&format!("listen {};", settings.listen));
    out.line(&format!("access_log {access_log} edgeplane_json;"));
    out.raw(&locations);
    out.close();
    let mut files = Vec::new();
    for tls in &plan.tls {
        out.open("server");
        out.line(&format!("listen {} ssl;", settings.tls_listen));
        out.line(&format!("server_name {};", tls.domains.join(" ")));
        out.line(&format!(
            "ssl_certificate {};",
            path_string(&tls.cert_path)?
        ));
        out.line(&format!(
            "ssl_certificate_key {};",
            path_string(&tls.key_path)?
        ));
        out.line(&format!("access_log {access_log} edgeplane_json;"));
        out.raw(&locations);
        out.close();
        files.push(RenderedFile {
            path: tls.cert_path.clone(),
            bytes: tls.cert_pem.clone().into_bytes(),
            mode: 0o644,
        });
        files.push(RenderedFile {
            path: tls.key_path.clone(),
            bytes: tls.key_pem.clone().into_bytes(),
            mode: 0o600,
        });
    }
    Ok(Rendered {
        text: out.text,
        files,
        warnings,
    })
}

/// Text with indentation by block depth.
#[derive(Default)]
pub(super) struct Conf {
    text: String,
    depth: usize,
}

impl Conf {
    pub(super) fn line(&mut self, line: &str) {
        for _ in 0..self.depth {
            self.text.push_str("    ");
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    pub(super) fn open(&mut self, head: &str) {
        self.line(&format!("{head} {{"));
        self.depth += 1;
    }

    pub(super) fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.line("}");
    }

    /// Lines rendered at depth 0, indented to this depth.
    pub(super) fn raw(&mut self, block: &str) {
        for line in block.lines() {
            self.line(line);
        }
    }
}

pub(super) fn refuse_control(text: &str, what: &str) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// A double-quoted nginx string that nginx reads back as `text` and does not expand: `\`
/// and `"` escaped, `$` spelled as `${edgeplane_dollar}`. For values that take variables.
pub(super) fn literal(text: &str) -> Result<String, String> {
    refuse_control(text, "a value")?;
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("${edgeplane_dollar}"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// A double-quoted nginx string for a parameter nginx takes as it is (a regex): `\` and `"`
/// escaped, `$` left alone.
pub(super) fn quoted(text: &str) -> Result<String, String> {
    refuse_control(text, "a value")?;
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// A file path as a quoted string. Some path parameters take variables, so a `$` is refused.
fn path_string(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", path.display()))?;
    if text.contains('$') {
        return Err(format!("path {text} contains '$'"));
    }
    quoted(text)
}

/// `configuration_id` as part of an nginx name (zones, upstreams, variables).
pub(super) fn ident(configuration_id: &str) -> String {
    configuration_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The regex of a location for `pattern`: `*` any run, `?` one character, the rest literal.
fn location_regex(pattern: &str) -> String {
    let mut regex = String::from("^");
    let mut previous_star = false;
    for c in pattern.chars() {
        match c {
            '*' if previous_star => {}
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            c if c.is_ascii_alphanumeric() || c == '/' || !c.is_ascii() => regex.push(c),
            // A backslash before any other ASCII character makes it literal in PCRE.
            c => {
                regex.push('\\');
                regex.push(c);
            }
        }
        previous_star = c == '*';
    }
    regex.push('$');
    regex
}

fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Whether every path `pattern` matches is matched by `covering`: the same pattern, or a
/// literal prefix and stars that `pattern` starts with.
fn covers(covering: &str, pattern: &str) -> bool {
    if same_pattern(covering, pattern) {
        return true;
    }
    let prefix = literal_prefix(covering);
    let rest = &covering[prefix.len()..];
    !rest.is_empty() && rest.chars().all(|c| c == '*') && pattern.starts_with(prefix)
}

/// How narrowly `covering` covers: its own pattern first, then the longest literal prefix.
fn narrowness(covering: &str, pattern: &str) -> (bool, usize) {
    (
        same_pattern(covering, pattern),
        literal_prefix(covering).len(),
    )
}

#[derive(Default)]
struct Plan {
    cache: Vec<CacheRule>,
    routing: Vec<Routing>,
    security: Vec<Security>,
    response: Vec<Response>,
    tls: Vec<Tls>,
}

/// The rule of one type that applies to the location of `pattern`, if any.
fn pick<'a, T>(rules: &'a [T], pattern: &str, rule_pattern: impl Fn(&T) -> &str) -> Option<&'a T> {
    rules
        .iter()
        .filter(|r| covers(rule_pattern(r), pattern))
        .max_by_key(|r| narrowness(rule_pattern(r), pattern))
}

impl Plan {
    /// Every location block, at depth 0; `versions` is the quoted X-Edgeplane-Version value.
    fn locations(&self, versions: &str) -> Result<String, String> {
        let mut patterns: Vec<&str> = self
            .cache
            .iter()
            .map(|r| r.pattern.as_str())
            .chain(self.routing.iter().map(|r| r.pattern.as_str()))
            .chain(self.security.iter().map(|r| r.pattern.as_str()))
            .chain(self.response.iter().map(|r| r.pattern.as_str()))
            .collect();
        let literal_count = |p: &str| p.chars().filter(|c| *c != '*' && *c != '?').count();
        patterns.sort_by(|a, b| {
            literal_count(b)
                .cmp(&literal_count(a))
                .then(b.len().cmp(&a.len()))
                .then(a.cmp(b))
        });
        patterns.dedup_by(|a, b| same_pattern(a, b));
        let mut out = Conf::default();
        for pattern in patterns {
            if has_wildcard(pattern) {
                out.open(&format!("location ~ {}", quoted(&location_regex(pattern))?));
            } else {
                out.open(&format!("location = {}", quoted(pattern)?));
            }
            self.location_body(&mut out, pattern, versions)?;
            out.close();
        }
        // Paths no rule names: nothing routes them.
        out.open("location /");
        common_headers(&mut out, versions);
        out.line("return 404;");
        out.close();
        Ok(out.text)
    }

    fn location_body(&self, out: &mut Conf, pattern: &str, versions: &str) -> Result<(), String> {
        common_headers(out, versions);
        if let Some(security) = pick(&self.security, pattern, |r| &r.pattern) {
            security.location(out);
        }
        if let Some(response) = pick(&self.response, pattern, |r| &r.pattern) {
            response.location(out)?;
        }
        if let Some(cache) = pick(&self.cache, pattern, |r| &r.pattern) {
            cache.location(out)?;
        }
        match pick(&self.routing, pattern, |r| &r.pattern) {
            Some(routing) => routing.location(out),
            None => out.line("return 404;"),
        }
        Ok(())
    }
}

/// Headers on every response. `add_header` in a location replaces the server's, so each
/// location carries them itself.
fn common_headers(out: &mut Conf, versions: &str) {
    out.line("add_header X-Cache-Status $upstream_cache_status always;");
    out.line(&format!(
        "add_header X-Edgeplane-Version {versions} always;"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> NginxSettings {
        NginxSettings {
            render_dir: PathBuf::from("/srv/edge/render"),
            listen: "127.0.0.1:8080".into(),
            tls_listen: "127.0.0.1:8443".into(),
            cache_dir: PathBuf::from("/srv/edge/cache"),
            cache_size: "1g".into(),
            access_log: PathBuf::from("/srv/edge/access.log"),
            geoip_variable: None,
            binary: "nginx".into(),
            conf: PathBuf::from("/etc/nginx/nginx.conf"),
        }
    }

    fn rule(config_type: ConfigType, content: &Value) -> ActiveRule<'_> {
        ActiveRule {
            configuration_id: "config-1",
            version: "1.0.0",
            config_type,
            content,
        }
    }

    fn render_one(config_type: ConfigType, content: Value) -> Result<Rendered, String> {
        render(&[rule(config_type, &content)], &settings())
    }

    /// One directive of a parsed file: its words (quotes removed, escapes resolved) and
    /// its block, if it opens one.
    #[derive(Debug, Clone)]
    struct Directive {
        words: Vec<String>,
        block: Vec<Directive>,
    }

    /// Reads nginx configuration text the way nginx tokenises it: words separated by
    /// spaces, `"…"` and `'…'` with `\` escapes, `;` ends a directive, `{ … }` a block, `#`
    /// a comment. Panics on text nginx would refuse (unbalanced braces or quotes).
    fn parse(text: &str) -> Vec<Directive> {
        fn block(chars: &[char], at: &mut usize) -> Vec<Directive> {
            let mut directives = Vec::new();
            let mut words: Vec<String> = Vec::new();
            while *at < chars.len() {
                let c = chars[*at];
                match c {
                    c if c.is_whitespace() => *at += 1,
                    '#' => {
                        while *at < chars.len() && chars[*at] != '\n' {
                            *at += 1;
                        }
                    }
                    ';' => {
                        *at += 1;
                        directives.push(Directive {
                            words: std::mem::take(&mut words),
                            block: Vec::new(),
                        });
                    }
                    '{' => {
                        *at += 1;
                        let inner = block(chars, at);
                        directives.push(Directive {
                            words: std::mem::take(&mut words),
                            block: inner,
                        });
                    }
                    '}' => {
                        *at += 1;
                        assert!(
                            words.is_empty(),
                            "directive without ';' before '}}': {words:?}"
                        );
                        return directives;
                    }
                    '"' | '\'' => {
                        let quote = c;
                        *at += 1;
                        let mut word = String::new();
                        loop {
                            assert!(*at < chars.len(), "unterminated quote");
                            let c = chars[*at];
                            if c == '\\'
                                && *at + 1 < chars.len()
                                && matches!(chars[*at + 1], '"' | '\'' | '\\')
                            {
                                word.push(chars[*at + 1]);
                                *at += 2;
                            } else if c == quote {
                                *at += 1;
                                break;
                            } else {
                                word.push(c);
                                *at += 1;
                            }
                        }
                        words.push(word);
                    }
                    _ => {
                        let mut word = String::new();
                        while *at < chars.len() {
                            let c = chars[*at];
                            if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                                break;
                            }
                            word.push(c);
                            *at += 1;
                        }
                        words.push(word);
                    }
                }
            }
            assert!(words.is_empty(), "unterminated directive: {words:?}");
            directives
        }
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        let directives = block(&chars, &mut at);
        assert_eq!(at, chars.len(), "unbalanced '}}'");
        directives
    }

    /// Every directive at any depth, in order.
    fn flatten(directives: &[Directive]) -> Vec<Directive> {
        let mut out = Vec::new();
        for d in directives {
            out.push(d.clone());
            out.extend(flatten(&d.block));
        }
        out
    }

    fn named<'a>(directives: &'a [Directive], name: &str) -> Vec<&'a Directive> {
        directives.iter().filter(|d| d.words[0] == name).collect()
    }

    /// The block of the location whose matcher is `matcher` (e.g. `["~", "^/a/.*$"]`).
    fn location(text: &str, matcher: &[&str]) -> Vec<Vec<String>> {
        let all = flatten(&parse(text));
        let found = all
            .iter()
            .find(|d| d.words[0] == "location" && d.words[1..] == *matcher)
            .unwrap_or_else(|| panic!("no location {matcher:?} in\n{text}"));
        found.block.iter().map(|d| d.words.clone()).collect()
    }

    fn has(lines: &[Vec<String>], expected: &[&str]) -> bool {
        lines.iter().any(|l| l == expected)
    }

    fn check(config_type: ConfigType, content: Value, matcher: &[&str], expected: &[&[&str]]) {
        let rendered = render_one(config_type, content.clone()).unwrap();
        let lines = location(&rendered.text, matcher);
        for line in expected {
            assert!(has(&lines, line), "{content}: no {line:?} in {lines:?}");
        }
    }

    fn refused(config_type: ConfigType, content: Value, expected: &str) {
        let error = render_one(config_type, content.clone()).unwrap_err();
        assert!(error.contains(expected), "{content}: {error}");
        assert!(error.starts_with("config-1 1.0.0: "), "{error}");
    }

    fn routing(pattern: &str) -> Value {
        json!({
            "pathPattern": pattern,
            "origins": [{"name": "a", "endpoint": "http://127.0.0.1:9001"}],
            "failoverPolicy": {},
        })
    }

    #[test]
    fn an_empty_fleet_renders_a_server_that_routes_nothing() {
        let rendered = render(&[], &settings()).unwrap();
        let all = flatten(&parse(&rendered.text));
        assert_eq!(named(&all, "listen")[0].words, ["listen", "127.0.0.1:8080"]);
        assert_eq!(
            named(&all, "access_log")[0].words,
            ["access_log", "/srv/edge/access.log", "edgeplane_json"]
        );
        assert_eq!(
            named(&all, "proxy_cache_path")[0].words,
            [
                "proxy_cache_path",
                "/srv/edge/cache",
                "levels=1:2",
                "keys_zone=edgeplane_cache:10m",
                "max_size=1g",
                "inactive=7d",
                "use_temp_path=off"
            ]
        );
        let log_format = &named(&all, "log_format")[0].words;
        for variable in [
            "$status",
            "$request_time",
            "$upstream_cache_status",
            "$bytes_sent",
            "$upstream_addr",
            "$time_iso8601",
        ] {
            assert!(log_format[3].contains(variable), "{log_format:?}");
        }
        let fallback = location(&rendered.text, &["/"]);
        assert!(has(&fallback, &["return", "404"]));
        assert!(has(
            &fallback,
            &[
                "add_header",
                "X-Cache-Status",
                "$upstream_cache_status",
                "always"
            ]
        ));
        assert!(rendered.files.is_empty());
    }

    #[test]
    fn path_patterns_become_escaped_locations() {
        for (pattern, matcher) in [
            ("/exact/path.html", vec!["=", "/exact/path.html"]),
            ("/static/*", vec!["~", "^/static/.*$"]),
            ("/static/**", vec!["~", "^/static/.*$"]),
            ("/img/?.png", vec!["~", "^/img/.\\.png$"]),
            ("/a+b/(x)/*", vec!["~", "^/a\\+b/\\(x\\)/.*$"]),
            ("/q\"uote/*", vec!["~", "^/q\\\"uote/.*$"]),
            ("/br{ace}/*", vec!["~", "^/br\\{ace\\}/.*$"]),
            ("/semi;colon/*", vec!["~", "^/semi\\;colon/.*$"]),
            ("/dollar$x/*", vec!["~", "^/dollar\\$x/.*$"]),
            ("/sp ace/*", vec!["~", "^/sp\\ ace/.*$"]),
            ("/exact\"quote", vec!["=", "/exact\"quote"]),
        ] {
            check(
                ConfigType::RoutingRule,
                routing(pattern),
                &matcher,
                &[&["proxy_pass", "http://edgeplane_config_1"]],
            );
        }
        refused(
            ConfigType::RoutingRule,
            routing("/new\nline/*"),
            "control character",
        );
        refused(
            ConfigType::RoutingRule,
            routing("relative/*"),
            "must start with '/'",
        );
    }

    #[test]
    fn regex_locations_are_tried_most_specific_first_and_take_covering_rules() {
        let wide = routing("/*");
        let cache = json!({"pathPattern": "/static/*.js", "ttl": 60, "cacheControl": "public"});
        let narrow = json!({"pathPattern": "/static/*", "addHeaders": {"X-Static": "1"}});
        let rules = [
            ActiveRule {
                configuration_id: "config-r",
                version: "1.0.0",
                config_type: ConfigType::RoutingRule,
                content: &wide,
            },
            ActiveRule {
                configuration_id: "config-c",
                version: "2.0.0",
                config_type: ConfigType::CacheRule,
                content: &cache,
            },
            ActiveRule {
                configuration_id: "config-m",
                version: "3.0.0",
                config_type: ConfigType::ResponseModification,
                content: &narrow,
            },
        ];
        let rendered = render(&rules, &settings()).unwrap();
        let order: Vec<String> = flatten(&parse(&rendered.text))
            .into_iter()
            .filter(|d| d.words[0] == "location")
            .map(|d| d.words[1..].join(" "))
            .collect();
        assert_eq!(
            order,
            ["~ ^/static/.*\\.js$", "~ ^/static/.*$", "~ ^/.*$", "/"]
        );
        // The .js location is covered by the routing of /* and the headers of /static/*.
        let js = location(&rendered.text, &["~", "^/static/.*\\.js$"]);
        assert!(has(&js, &["proxy_pass", "http://edgeplane_config_r"]));
        assert!(has(&js, &["add_header", "X-Static", "1", "always"]));
        assert!(has(&js, &["proxy_cache", "edgeplane_cache"]));
        // /static/* is not covered by the .js cache rule.
        let statics = location(&rendered.text, &["~", "^/static/.*$"]);
        assert!(
            !statics.iter().any(|l| l[0] == "proxy_cache"),
            "{statics:?}"
        );
        assert!(has(
            &statics,
            &[
                "add_header",
                "X-Edgeplane-Version",
                "config-c=2.0.0, config-m=3.0.0, config-r=1.0.0",
                "always"
            ]
        ));
        // A location no routing rule covers answers 404 rather than serving files.
        let alone = render_one(ConfigType::CacheRule, cache.clone()).unwrap();
        assert!(has(
            &location(&alone.text, &["~", "^/static/.*\\.js$"]),
            &["return", "404"]
        ));
    }

    #[test]
    fn cache_rules_map_every_field() {
        let base =
            || json!({"pathPattern": "/c/*", "ttl": 300, "cacheControl": "public, max-age=300"});
        let at = ["~", "^/c/.*$"];
        check(
            ConfigType::CacheRule,
            base(),
            &at,
            &[
                &["proxy_cache", "edgeplane_cache"],
                &["proxy_cache_valid", "200", "301", "302", "300s"],
                &["proxy_cache_key", "$scheme$host$request_uri"],
                &["proxy_ignore_headers", "Cache-Control", "Expires"],
                &["proxy_hide_header", "Cache-Control"],
                &[
                    "add_header",
                    "Cache-Control",
                    "public, max-age=300",
                    "always",
                ],
            ],
        );
        let mut keyed = base();
        keyed["cacheKey"] = json!(["$uri", "$args", "$http_X-Device"]);
        keyed["varyHeaders"] = json!(["Accept-Encoding"]);
        check(
            ConfigType::CacheRule,
            keyed,
            &at,
            &[&[
                "proxy_cache_key",
                "$uri|$args|$http_x_device|$http_accept_encoding",
            ]],
        );
        let mut bypass = base();
        bypass["bypassConditions"] = json!({"cookies": ["session"], "queryParams": ["nocache"]});
        check(
            ConfigType::CacheRule,
            bypass,
            &at,
            &[
                &["proxy_cache_bypass", "$cookie_session", "$arg_nocache"],
                &["proxy_no_cache", "$cookie_session", "$arg_nocache"],
            ],
        );
        let mut never = base();
        never["ttl"] = json!(0);
        check(
            ConfigType::CacheRule,
            never,
            &at,
            &[&["proxy_cache", "off"]],
        );
        // Purging is an action on the cache, not a serving setting: nothing is rendered.
        let mut purge = base();
        purge["purgePatterns"] = json!(["/c/old/*"]);
        assert_eq!(
            render_one(ConfigType::CacheRule, purge).unwrap(),
            render_one(ConfigType::CacheRule, base()).unwrap()
        );
        let mut dollar = base();
        dollar["cacheControl"] = json!("public; $remote_addr");
        check(
            ConfigType::CacheRule,
            dollar,
            &at,
            &[&[
                "add_header",
                "Cache-Control",
                "public; ${edgeplane_dollar}remote_addr",
                "always",
            ]],
        );

        let mut bad = base();
        bad["cacheKey"] = json!(["$remote_addr"]);
        refused(ConfigType::CacheRule, bad, "cacheKey item '$remote_addr'");
        let mut bad = base();
        bad["cacheKey"] = json!(["$http_x;y"]);
        refused(
            ConfigType::CacheRule,
            bad,
            "cannot be read as an nginx variable",
        );
        let mut bad = base();
        bad["bypassConditions"] = json!({"cookies": ["a-b"]});
        refused(ConfigType::CacheRule, bad, "cookie 'a-b'");
        let mut bad = base();
        bad["bypassConditions"] = json!({"queryParams": ["x y"]});
        refused(ConfigType::CacheRule, bad, "parameter 'x y'");
        let mut bad = base();
        bad["ttl"] = json!(31_536_001);
        refused(ConfigType::CacheRule, bad, "ttl must be between");
        refused(
            ConfigType::CacheRule,
            json!({"pathPattern": "/c/*", "ttl": 1}),
            "cacheControl is required",
        );
    }

    #[test]
    fn routing_rules_map_every_field() {
        let content = json!({
            "pathPattern": "/api/*",
            "origins": [
                {"name": "a", "endpoint": "http://origin-a.example:8080", "weight": 80, "priority": 1},
                {"name": "b", "endpoint": "http://10.0.0.2/", "weight": 20, "priority": 1},
                {"name": "c", "endpoint": "http://[2001:db8::1]:81", "priority": 2},
                {"name": "d", "endpoint": "http://10.0.0.4", "weight": 0, "priority": 1},
            ],
            "failoverPolicy": {"retryAttempts": 2, "retryDelay": "500ms", "failoverThreshold": 5, "circuitBreakerTimeout": "30s"},
            "pathRewrite": {"from": "^/api/(.*)$", "to": "/v2/$1"},
            "hostHeader": "www.example.com",
        });
        let rendered = render_one(ConfigType::RoutingRule, content.clone()).unwrap();
        let all = flatten(&parse(&rendered.text));
        let upstream = named(&all, "upstream")[0];
        assert_eq!(upstream.words, ["upstream", "edgeplane_config_1"]);
        let servers: Vec<Vec<String>> = upstream.block.iter().map(|d| d.words.clone()).collect();
        assert_eq!(
            servers,
            [
                vec![
                    "server",
                    "origin-a.example:8080",
                    "weight=80",
                    "max_fails=5",
                    "fail_timeout=30s"
                ],
                vec![
                    "server",
                    "10.0.0.2:80",
                    "weight=20",
                    "max_fails=5",
                    "fail_timeout=30s"
                ],
                vec![
                    "server",
                    "[2001:db8::1]:81",
                    "max_fails=5",
                    "fail_timeout=30s",
                    "backup"
                ],
                vec![
                    "server",
                    "10.0.0.4:80",
                    "down",
                    "max_fails=5",
                    "fail_timeout=30s"
                ],
                vec!["keepalive", "16"],
            ]
        );
        check(
            ConfigType::RoutingRule,
            content.clone(),
            &["~", "^/api/.*$"],
            &[
                &["rewrite", "^/api/(.*)$", "/v2/$1", "break"],
                &["proxy_set_header", "Host", "www.example.com"],
                &["proxy_next_upstream_tries", "3"],
                &[
                    "proxy_next_upstream",
                    "error",
                    "timeout",
                    "http_502",
                    "http_503",
                    "http_504",
                ],
                &["proxy_pass", "http://edgeplane_config_1"],
            ],
        );
        // Without a host header the client's is passed on; https origins get SNI.
        let tls = json!({"pathPattern": "/s/*", "origins": [{"name": "a", "endpoint": "https://origin.example"}], "failoverPolicy": {}});
        check(
            ConfigType::RoutingRule,
            tls,
            &["~", "^/s/.*$"],
            &[
                &["proxy_set_header", "Host", "$host"],
                &["proxy_ssl_server_name", "on"],
                &["proxy_pass", "https://edgeplane_config_1"],
                &["proxy_next_upstream_tries", "1"],
            ],
        );
        // A rewrite target keeps its captures; any other `$` is a dollar; quotes stay text.
        let mut sneaky = routing("/r/*");
        sneaky["pathRewrite"] = json!({"from": "^/r/\"(.*)", "to": "/x/$1/$host\"; return 200 x"});
        sneaky["hostHeader"] = json!("h$host");
        check(
            ConfigType::RoutingRule,
            sneaky,
            &["~", "^/r/.*$"],
            &[
                &[
                    "rewrite",
                    "^/r/\"(.*)",
                    "/x/$1/${edgeplane_dollar}host\"; return 200 x",
                    "break",
                ],
                &["proxy_set_header", "Host", "h${edgeplane_dollar}host"],
            ],
        );

        let with_origin = |endpoint: &str| json!({"pathPattern": "/o/*", "origins": [{"name": "a", "endpoint": endpoint}], "failoverPolicy": {}});
        refused(
            ConfigType::RoutingRule,
            with_origin("http://origin.example/base"),
            "has a path",
        );
        refused(
            ConfigType::RoutingRule,
            with_origin("ftp://origin.example"),
            "http:// or https://",
        );
        refused(
            ConfigType::RoutingRule,
            with_origin("http://origin.example;x"),
            "invalid host",
        );
        refused(
            ConfigType::RoutingRule,
            with_origin("http://origin.example:0"),
            "invalid port",
        );
        refused(
            ConfigType::RoutingRule,
            json!({"pathPattern": "/o/*", "origins": [], "failoverPolicy": {}}),
            "at least one origin",
        );
        refused(
            ConfigType::RoutingRule,
            json!({"pathPattern": "/o/*", "origins": [{"name": "a", "endpoint": "http://a"}, {"name": "b", "endpoint": "https://b"}], "failoverPolicy": {}}),
            "mix http and https",
        );
        let mut retries = routing("/o/*");
        retries["failoverPolicy"]["retryAttempts"] = json!(11);
        refused(ConfigType::RoutingRule, retries, "retryAttempts");
    }

    #[test]
    fn security_rules_map_every_field() {
        let content = json!({
            "pathPattern": "/admin/*",
            "waf": {"enabled": false, "rules": ["OWASP-CRS-3.3"]},
            "rateLimit": {"enabled": true, "limit": 100, "window": "60s", "key": "ip"},
            "geoBlocking": {"enabled": true, "mode": "blocklist", "countries": ["KP", "IR"]},
            "ipFiltering": {"allowlist": ["10.0.0.0/8", "2001:db8::/32"], "denylist": ["10.1.2.3", "10.9.0.0/16"]},
        });
        let rendered = render_one(ConfigType::SecurityRule, content.clone()).unwrap();
        assert_eq!(
            rendered.warnings,
            ["config-1 1.0.0: geo blocking is not enforced: this edge has no nginx_geoip_variable"]
        );
        let all = flatten(&parse(&rendered.text));
        assert_eq!(
            named(&all, "limit_req_zone")[0].words,
            [
                "limit_req_zone",
                "$binary_remote_addr",
                "zone=edgeplane_rate_config_1:10m",
                "rate=100r/m"
            ]
        );
        assert!(named(&all, "map").is_empty());
        let lines = location(&rendered.text, &["~", "^/admin/.*$"]);
        let access: Vec<&Vec<String>> = lines
            .iter()
            .filter(|l| l[0] == "allow" || l[0] == "deny")
            .collect();
        assert_eq!(
            access,
            [
                &vec!["deny", "10.1.2.3"],
                &vec!["deny", "10.9.0.0/16"],
                &vec!["allow", "10.0.0.0/8"],
                &vec!["allow", "2001:db8::/32"],
                &vec!["deny", "all"],
            ]
        );
        assert!(has(
            &lines,
            &[
                "limit_req",
                "zone=edgeplane_rate_config_1",
                "burst=100",
                "nodelay"
            ]
        ));
        assert!(has(&lines, &["limit_req_status", "429"]));

        // With a GeoIP variable the countries become a map and a 403.
        let mut geo_settings = settings();
        geo_settings.geoip_variable = Some("geoip2_country_code".into());
        let rendered = render(&[rule(ConfigType::SecurityRule, &content)], &geo_settings).unwrap();
        assert!(rendered.warnings.is_empty());
        let all = flatten(&parse(&rendered.text));
        let map = named(&all, "map")[0];
        assert_eq!(
            map.words,
            ["map", "$geoip2_country_code", "$edgeplane_geo_config_1"]
        );
        let entries: Vec<Vec<String>> = map.block.iter().map(|d| d.words.clone()).collect();
        assert_eq!(
            entries,
            [vec!["default", "0"], vec!["KP", "1"], vec!["IR", "1"]]
        );
        let ifs: Vec<&Directive> = all.iter().filter(|d| d.words[0] == "if").collect();
        assert_eq!(ifs[0].words, ["if", "($edgeplane_geo_config_1)"]);
        assert_eq!(ifs[0].block[0].words, ["return", "403"]);
        let mut allowlist = content.clone();
        allowlist["geoBlocking"]["mode"] = json!("allowlist");
        let rendered =
            render(&[rule(ConfigType::SecurityRule, &allowlist)], &geo_settings).unwrap();
        let all = flatten(&parse(&rendered.text));
        let entries: Vec<Vec<String>> = named(&all, "map")[0]
            .block
            .iter()
            .map(|d| d.words.clone())
            .collect();
        assert_eq!(
            entries,
            [vec!["default", "1"], vec!["KP", "0"], vec!["IR", "0"]]
        );

        // Rates nginx can only state per second or per minute.
        for (limit, window, rate) in [
            (10, json!(1), "rate=10r/s"),
            (7, json!("7s"), "rate=1r/s"),
            (100, json!("7s"), "rate=858r/m"),
            (5, json!("1h"), "rate=1r/m"),
        ] {
            let content =
                json!({"rateLimit": {"limit": limit, "window": window, "key": "header:X-Api-Key"}});
            let rendered = render_one(ConfigType::SecurityRule, content).unwrap();
            let all = flatten(&parse(&rendered.text));
            let zone = &named(&all, "limit_req_zone")[0].words;
            assert_eq!(zone[1], "$http_x_api_key");
            assert_eq!(zone[3], rate, "{limit} per {window}");
        }
        // No pathPattern: every path.
        check(
            ConfigType::SecurityRule,
            json!({"ipFiltering": {"denylist": ["127.0.0.1"]}}),
            &["~", "^/.*$"],
            &[&["deny", "127.0.0.1"]],
        );

        refused(
            ConfigType::SecurityRule,
            json!({"waf": {"rules": ["OWASP-CRS-3.3"], "mode": "detect"}}),
            "cannot enforce the WAF rule sets [OWASP-CRS-3.3]",
        );
        refused(
            ConfigType::SecurityRule,
            json!({"ipFiltering": {"denylist": ["10.0.0.1; allow all"]}}),
            "is not an address",
        );
        refused(
            ConfigType::SecurityRule,
            json!({"rateLimit": {"limit": 0}}),
            "rateLimit.limit",
        );
        refused(
            ConfigType::SecurityRule,
            json!({"rateLimit": {"limit": 1, "window": "2h"}}),
            "rateLimit.window",
        );
        refused(
            ConfigType::SecurityRule,
            json!({"rateLimit": {"limit": 1, "key": "cookie"}}),
            "rateLimit.key 'cookie'",
        );
        refused(
            ConfigType::SecurityRule,
            json!({"geoBlocking": {"countries": ["XX"]}}),
            "'XX' is not an ISO",
        );
    }

    #[test]
    fn response_modifications_map_every_field() {
        let content = json!({
            "pathPattern": "/web/*",
            "addHeaders": {"X-Frame-Options": "DENY", "X-Test": "a; return 200 x"},
            "removeHeaders": ["Server", "X-Powered-By"],
            "compression": {"enabled": true, "algorithms": ["gzip", "br"], "minSize": 1024},
            "cors": {"enabled": true, "allowOrigins": ["https://app.example", "http://localhost:3000"], "allowMethods": ["GET", "POST"], "allowHeaders": ["Content-Type"], "exposeHeaders": ["X-Request-Id"], "allowCredentials": true, "maxAge": 600},
        });
        let at = ["~", "^/web/.*$"];
        check(
            ConfigType::ResponseModification,
            content.clone(),
            &at,
            &[
                &["add_header", "X-Frame-Options", "DENY", "always"],
                &["add_header", "X-Test", "a; return 200 x", "always"],
                &["proxy_hide_header", "Server"],
                &["proxy_hide_header", "X-Powered-By"],
                &["gzip", "on"],
                &["gzip_proxied", "any"],
                &["gzip_min_length", "1024"],
                &[
                    "add_header",
                    "Access-Control-Allow-Origin",
                    "$edgeplane_cors_config_1",
                    "always",
                ],
                &["add_header", "Vary", "Origin", "always"],
                &[
                    "add_header",
                    "Access-Control-Allow-Methods",
                    "GET, POST",
                    "always",
                ],
                &[
                    "add_header",
                    "Access-Control-Allow-Headers",
                    "Content-Type",
                    "always",
                ],
                &[
                    "add_header",
                    "Access-Control-Expose-Headers",
                    "X-Request-Id",
                    "always",
                ],
                &[
                    "add_header",
                    "Access-Control-Allow-Credentials",
                    "true",
                    "always",
                ],
                &["add_header", "Access-Control-Max-Age", "600", "always"],
            ],
        );
        let rendered = render_one(ConfigType::ResponseModification, content).unwrap();
        let all = flatten(&parse(&rendered.text));
        let map = named(&all, "map")[0];
        assert_eq!(
            map.words,
            ["map", "$http_origin", "$edgeplane_cors_config_1"]
        );
        let entries: Vec<Vec<String>> = map.block.iter().map(|d| d.words.clone()).collect();
        assert_eq!(
            entries,
            [
                vec!["default", ""],
                vec!["https://app.example", "https://app.example"],
                vec!["http://localhost:3000", "http://localhost:3000"]
            ]
        );
        assert!(
            all.iter()
                .any(|d| d.words == ["if", "($request_method", "=", "OPTIONS)"]
                    && d.block[0].words == ["return", "204"])
        );
        check(
            ConfigType::ResponseModification,
            json!({"cors": {"allowOrigins": ["*"]}}),
            &["~", "^/.*$"],
            &[&["add_header", "Access-Control-Allow-Origin", "*", "always"]],
        );

        refused(
            ConfigType::ResponseModification,
            json!({"addHeaders": {"Bad Name": "x"}}),
            "'Bad Name' is not a header name",
        );
        refused(
            ConfigType::ResponseModification,
            json!({"addHeaders": {"X-A": "a\r\nSet-Cookie: x"}}),
            "control character",
        );
        refused(
            ConfigType::ResponseModification,
            json!({"removeHeaders": ["a;b"]}),
            "'a;b' is not a header name",
        );
        refused(
            ConfigType::ResponseModification,
            json!({"compression": {"algorithms": ["br", "zstd"]}}),
            "gzip only",
        );
        refused(
            ConfigType::ResponseModification,
            json!({"cors": {"allowOrigins": ["https://a\" \"x"]}}),
            "is not * or scheme",
        );
        refused(
            ConfigType::ResponseModification,
            json!({"cors": {"allowOrigins": ["*"], "allowCredentials": true}}),
            "credentials",
        );
    }

    #[test]
    fn injected_syntax_stays_inside_its_value() {
        let header = json!({"pathPattern": "/p\"; return 200 x; #/*", "addHeaders": {"X-Test": "a; return 200 x", "X-Brace": "} server { listen 1; ${host}\\"}});
        let route = routing("/*");
        let rules = [
            ActiveRule {
                configuration_id: "config-r",
                version: "1.0.0",
                config_type: ConfigType::RoutingRule,
                content: &route,
            },
            ActiveRule {
                configuration_id: "config-h",
                version: "1.0.0",
                config_type: ConfigType::ResponseModification,
                content: &header,
            },
        ];
        let rendered = render(&rules, &settings()).unwrap();
        let all = flatten(&parse(&rendered.text));
        // One server, and the only `return` is the fallback's 404.
        assert_eq!(
            all.iter()
                .filter(|d| d.words[0] == "server" && !d.block.is_empty())
                .count(),
            1
        );
        let returns: Vec<&Directive> = named(&all, "return");
        assert_eq!(returns.len(), 1, "{}", rendered.text);
        assert_eq!(returns[0].words, ["return", "404"]);
        let lines = location(
            &rendered.text,
            &["~", "^/p\\\"\\;\\ return\\ 200\\ x\\;\\ \\#/.*$"],
        );
        assert!(has(
            &lines,
            &["add_header", "X-Test", "a; return 200 x", "always"]
        ));
        assert!(has(
            &lines,
            &[
                "add_header",
                "X-Brace",
                "} server { listen 1; ${edgeplane_dollar}{host}\\",
                "always"
            ]
        ));
    }

    #[test]
    fn certificates_become_files_and_a_tls_server() {
        let content = json!({
            "domains": ["www.example.com", "*.example.com"],
            "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "certificateChain": ["-----BEGIN CERTIFICATE-----\nCHAIN\n-----END CERTIFICATE-----"],
            "privateKey": "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n",
            "autoRenew": true,
            "renewalDays": 30,
            "provider": "letsencrypt",
        });
        let route = routing("/*");
        let rules = [
            rule(ConfigType::SslCertificate, &content),
            ActiveRule {
                configuration_id: "config-r",
                version: "1.0.0",
                config_type: ConfigType::RoutingRule,
                content: &route,
            },
        ];
        let rendered = render(&rules, &settings()).unwrap();
        assert_eq!(rendered.files.len(), 2);
        let cert = &rendered.files[0];
        assert_eq!(
            cert.path,
            PathBuf::from("/srv/edge/render/tls/config_1-1.0.0.crt")
        );
        assert_eq!(cert.mode, 0o644);
        let text = String::from_utf8(cert.bytes.clone()).unwrap();
        assert!(text.contains("MIIB") && text.contains("CHAIN"), "{text}");
        let key = &rendered.files[1];
        assert_eq!(
            key.path,
            PathBuf::from("/srv/edge/render/tls/config_1-1.0.0.key")
        );
        assert_eq!(key.mode, 0o600);
        let servers: Vec<Directive> = flatten(&parse(&rendered.text))
            .into_iter()
            .filter(|d| d.words[0] == "server" && !d.block.is_empty())
            .collect();
        assert_eq!(servers.len(), 2);
        let tls: Vec<Vec<String>> = servers[1].block.iter().map(|d| d.words.clone()).collect();
        assert!(has(&tls, &["listen", "127.0.0.1:8443", "ssl"]));
        assert!(has(
            &tls,
            &["server_name", "www.example.com", "*.example.com"]
        ));
        assert!(has(
            &tls,
            &["ssl_certificate", "/srv/edge/render/tls/config_1-1.0.0.crt"]
        ));
        assert!(has(
            &tls,
            &[
                "ssl_certificate_key",
                "/srv/edge/render/tls/config_1-1.0.0.key"
            ]
        ));
        // The TLS server serves the same locations.
        assert!(
            servers[1]
                .block
                .iter()
                .any(|d| d.words == ["location", "~", "^/.*$"])
        );

        let mut bad = content.clone();
        bad["domains"] = json!(["a.example; listen 1"]);
        refused(ConfigType::SslCertificate, bad, "is not a host name");
        let mut sealed = content.clone();
        sealed["privateKey"] = json!("enc:v1:abcdef");
        refused(ConfigType::SslCertificate, sealed, "not a PEM private key");
        let mut none = content;
        none["domains"] = json!([]);
        refused(ConfigType::SslCertificate, none, "at least one domain");
    }

    #[test]
    fn paths_from_the_settings_are_quoted_and_may_not_hold_variables() {
        let mut spaced = settings();
        spaced.cache_dir = PathBuf::from("/srv/my cache");
        let rendered = render(&[], &spaced).unwrap();
        let all = flatten(&parse(&rendered.text));
        assert_eq!(named(&all, "proxy_cache_path")[0].words[1], "/srv/my cache");
        let mut dollar = settings();
        dollar.access_log = PathBuf::from("/srv/$host.log");
        assert!(render(&[], &dollar).unwrap_err().contains("contains '$'"));
    }

    /// The nginx on this machine, if there is one; with `REQUIRE_NGINX_TEST` set there must be.
    fn local_nginx() -> Option<&'static str> {
        let found = ["nginx", "/usr/sbin/nginx"].into_iter().find(|binary| {
            std::process::Command::new(binary)
                .arg("-v")
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(
            found.is_some() || std::env::var_os("REQUIRE_NGINX_TEST").is_none(),
            "REQUIRE_NGINX_TEST is set but nginx cannot be run"
        );
        found
    }

    #[test]
    fn nginx_accepts_every_type_and_field_rendered_together() {
        let Some(nginx) = local_nginx() else {
            eprintln!(
                "!!!!!!!! nginx is not installed: nginx -t of the rendered file is SKIPPED !!!!!!!!"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut settings = settings();
        settings.render_dir = root.join("render");
        settings.cache_dir = root.join("cache");
        settings.access_log = root.join("access.log");
        settings.listen = "127.0.0.1:1".into();
        settings.tls_listen = "127.0.0.1:2".into();
        // Any variable does for the test; a GeoIP module's would in production.
        settings.geoip_variable = Some("http_x_country".into());
        let certified = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
        let contents = [
            (
                ConfigType::CacheRule,
                json!({
                    "pathPattern": "/static/*.js", "ttl": 3600, "cacheControl": "public, max-age=3600",
                    "cacheKey": ["$scheme", "$host", "$uri", "$args", "$http_x_device"],
                    "varyHeaders": ["Accept-Encoding"], "purgePatterns": ["/static/*"],
                    "bypassConditions": {"cookies": ["session"], "queryParams": ["nocache"]},
                }),
            ),
            (
                ConfigType::RoutingRule,
                json!({
                    "pathPattern": "/*",
                    "origins": [
                        {"name": "a", "endpoint": "http://127.0.0.1:9001", "weight": 70, "priority": 1},
                        {"name": "b", "endpoint": "http://127.0.0.1:9002/", "weight": 30, "priority": 1},
                        {"name": "c", "endpoint": "http://[::1]:9003", "priority": 2},
                    ],
                    "failoverPolicy": {"retryAttempts": 2, "retryDelay": "1s", "failoverThreshold": 3, "circuitBreakerTimeout": "30s"},
                    "pathRewrite": {"from": "^/old/(.*)$", "to": "/new/$1?from=$host"},
                    "hostHeader": "origin.example.com",
                }),
            ),
            (
                ConfigType::SecurityRule,
                json!({
                    "pathPattern": "/admin/*",
                    "waf": {"enabled": false, "rules": ["OWASP-CRS-3.3"], "mode": "block"},
                    "rateLimit": {"enabled": true, "limit": 100, "window": "7s", "key": "header:X-Api-Key"},
                    "geoBlocking": {"enabled": true, "mode": "allowlist", "countries": ["DE", "FR"]},
                    "ipFiltering": {"allowlist": ["10.0.0.0/8", "2001:db8::/32"], "denylist": ["10.1.0.0/16"]},
                }),
            ),
            (
                ConfigType::ResponseModification,
                json!({
                    "pathPattern": "/app/*",
                    "addHeaders": {"X-Frame-Options": "DENY", "X-Test": "a; return 200 x } ${host} \"q\" \\"},
                    "removeHeaders": ["Server", "X-Powered-By"],
                    "compression": {"enabled": true, "algorithms": ["gzip", "br"], "minSize": 1024},
                    "cors": {"enabled": true, "allowOrigins": ["https://app.example.com", "http://localhost:3000"],
                             "allowMethods": ["GET", "POST"], "allowHeaders": ["Content-Type"],
                             "exposeHeaders": ["X-Request-Id"], "allowCredentials": true, "maxAge": 600},
                }),
            ),
            (
                ConfigType::SslCertificate,
                json!({
                    "domains": ["www.example.com"],
                    "certificate": certified.cert.pem(),
                    "privateKey": certified.signing_key.serialize_pem(),
                    "autoRenew": true, "renewalDays": 30, "provider": "letsencrypt",
                }),
            ),
        ];
        let ids: Vec<String> = (0..contents.len()).map(|i| format!("config-{i}")).collect();
        let rules: Vec<ActiveRule<'_>> = contents
            .iter()
            .zip(&ids)
            .map(|((config_type, content), id)| ActiveRule {
                configuration_id: id,
                version: "1.0.0",
                config_type: *config_type,
                content,
            })
            .collect();
        let rendered = render(&rules, &settings).unwrap();
        std::fs::create_dir_all(root.join("render/tls")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("render").join(FILE_NAME), &rendered.text).unwrap();
        for file in &rendered.files {
            std::fs::write(&file.path, &file.bytes).unwrap();
        }
        let r = root.display();
        std::fs::write(
            root.join("nginx.conf"),
            format!(
                "pid {r}/nginx.pid;\nevents {{}}\nhttp {{\nclient_body_temp_path {r}/tmp/body;\n\
                 proxy_temp_path {r}/tmp/proxy;\nfastcgi_temp_path {r}/tmp/fastcgi;\n\
                 uwsgi_temp_path {r}/tmp/uwsgi;\nscgi_temp_path {r}/tmp/scgi;\n\
                 include {r}/render/{FILE_NAME};\n}}\n"
            ),
        )
        .unwrap();
        let output = std::process::Command::new(nginx)
            .arg("-p")
            .arg(root)
            .arg("-e")
            .arg(root.join("error.log"))
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .arg("-t")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            rendered.text
        );
    }
}
