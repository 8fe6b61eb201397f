//! How each configuration type maps to nginx (SPEC §6.1): the content of one configuration
//! read into what it renders — at `http` level (upstreams, zones, maps) and inside each
//! location it covers — with everything nginx cannot honour refused with the reason.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::Value;

use super::render::{Conf, ident, literal, quoted, refuse_control};
use crate::validate::{is_country_code, is_header_name};

/// The cache zone every CacheRule stores in.
pub(super) const CACHE_ZONE: &str = "edgeplane_cache";
/// Types compressed when a ResponseModification enables compression (text/html always is).
const GZIP_TYPES: &str = "text/plain text/css text/xml text/javascript application/javascript application/json application/xml image/svg+xml";
/// Largest TTL a CacheRule may ask for (SPEC §3), checked again here: content is not trusted.
const TTL_MAX: u64 = 31_536_000;

/// Letters, digits and `_`: what may follow `$cookie_` or `$arg_` in a variable name.
fn is_variable_part(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `$http_<name>` for a header `name` (lower case, `-` → `_`).
fn header_variable(name: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "header '{name}' cannot be read as an nginx variable"
        ));
    }
    Ok(format!(
        "$http_{}",
        name.to_ascii_lowercase().replace('-', "_")
    ))
}

fn string_field<'a>(content: &'a Value, field: &str) -> Result<Option<&'a str>, String> {
    match content.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

fn required_string<'a>(content: &'a Value, field: &str) -> Result<&'a str, String> {
    string_field(content, field)?.ok_or_else(|| format!("{field} is required"))
}

fn strings<'a>(content: &'a Value, field: &str) -> Result<Vec<&'a str>, String> {
    match content.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .ok_or_else(|| format!("{field}.{i} must be a string"))
            })
            .collect(),
        Some(_) => Err(format!("{field} must be an array")),
    }
}

fn unsigned(content: &Value, field: &str) -> Result<Option<u64>, String> {
    match content.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{field} must be a whole number from 0")),
    }
}

fn enabled(section: &Value) -> bool {
    section
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// A duration field in milliseconds: whole seconds as a number, or text (`30s`, `PT30S`).
fn duration_ms(content: &Value, field: &str) -> Result<Option<u64>, String> {
    match content.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|s| s.checked_mul(1000))
            .map(Some)
            .ok_or_else(|| format!("{field} must be a duration")),
        Some(Value::String(text)) => crate::model::parse_duration(text)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .map(Some)
            .ok_or_else(|| format!("{field} must be a duration")),
        Some(_) => Err(format!("{field} must be a duration")),
    }
}

fn path_pattern(content: &Value, default: Option<&str>) -> Result<String, String> {
    let pattern = match (string_field(content, "pathPattern")?, default) {
        (Some(pattern), _) => pattern,
        (None, Some(default)) => default,
        (None, None) => return Err("pathPattern is required".into()),
    };
    if !pattern.starts_with('/') {
        return Err("pathPattern must start with '/'".into());
    }
    refuse_control(pattern, "pathPattern")?;
    Ok(pattern.to_owned())
}

pub(super) struct CacheRule {
    pub(super) pattern: String,
    ttl: u64,
    cache_control: String,
    key: String,
    bypass: Vec<String>,
}

fn key_variable(item: &str) -> Result<String, String> {
    match item {
        "$uri" | "$args" | "$host" | "$scheme" => Ok(item.to_owned()),
        _ => match item.strip_prefix("$http_") {
            Some(name) => header_variable(name),
            None => Err(format!(
                "cacheKey item '{item}' is not $uri, $args, $host, $scheme or $http_<name>"
            )),
        },
    }
}

pub(super) fn parse_cache(content: &Value) -> Result<CacheRule, String> {
    let pattern = path_pattern(content, None)?;
    let ttl = unsigned(content, "ttl")?.ok_or("ttl is required")?;
    if ttl > TTL_MAX {
        return Err(format!("ttl must be between 0 and {TTL_MAX} seconds"));
    }
    let cache_control = required_string(content, "cacheControl")?;
    refuse_control(cache_control, "cacheControl")?;
    let mut parts = Vec::new();
    for item in strings(content, "cacheKey")? {
        parts.push(key_variable(item)?);
    }
    if parts.is_empty() {
        parts.push("$scheme$host$request_uri".into());
    }
    // Responses that vary by a header are cached apart by its value.
    for name in strings(content, "varyHeaders")? {
        parts.push(header_variable(name).map_err(|e| format!("varyHeaders: {e}"))?);
    }
    let mut bypass = Vec::new();
    if let Some(conditions) = content.get("bypassConditions") {
        for name in strings(conditions, "cookies")? {
            if !is_variable_part(name) {
                return Err(format!(
                    "bypassConditions.cookies: cookie '{name}' cannot be read by nginx (letters, digits and '_' only)"
                ));
            }
            bypass.push(format!("$cookie_{name}"));
        }
        for name in strings(conditions, "queryParams")? {
            if !is_variable_part(name) {
                return Err(format!(
                    "bypassConditions.queryParams: parameter '{name}' cannot be read by nginx (letters, digits and '_' only)"
                ));
            }
            bypass.push(format!("$arg_{name}"));
        }
    }
    Ok(CacheRule {
        pattern,
        ttl,
        cache_control: cache_control.to_owned(),
        key: parts.join("|"),
        bypass,
    })
}

impl CacheRule {
    pub(super) fn location(&self, out: &mut Conf) -> Result<(), String> {
        if self.ttl == 0 {
            out.line("proxy_cache off;");
        } else {
            out.line(&format!("proxy_cache {CACHE_ZONE};"));
            out.line(&format!("proxy_cache_valid 200 301 302 {}s;", self.ttl));
            out.line(&format!("proxy_cache_key {};", quoted(&self.key)?));
            // The rule's TTL decides, not the origin's caching headers.
            out.line("proxy_ignore_headers Cache-Control Expires;");
            if !self.bypass.is_empty() {
                let variables = self.bypass.join(" ");
                out.line(&format!("proxy_cache_bypass {variables};"));
                out.line(&format!("proxy_no_cache {variables};"));
            }
        }
        out.line("proxy_hide_header Cache-Control;");
        out.line(&format!(
            "add_header Cache-Control {} always;",
            literal(&self.cache_control)?
        ));
        Ok(())
    }
}

pub(super) struct Routing {
    pub(super) pattern: String,
    upstream: String,
    scheme: &'static str,
    servers: Vec<String>,
    tries: u64,
    rewrite: Option<(String, String)>,
    host: Option<String>,
}

/// `scheme`, `host:port` of an origin endpoint; only a bare `/` may follow.
fn origin_address(endpoint: &str) -> Result<(&'static str, String), String> {
    let (scheme, rest, default_port) = if let Some(rest) = endpoint.strip_prefix("http://") {
        ("http", rest, 80)
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        ("https", rest, 443)
    } else {
        return Err(format!(
            "endpoint '{endpoint}' must be an http:// or https:// URL"
        ));
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if !path.is_empty() && path != "/" {
        return Err(format!(
            "endpoint '{endpoint}' has a path; nginx proxies regex locations to origins without one"
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("endpoint '{endpoint}' has an unterminated IPv6 address"))?;
        address
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("endpoint '{endpoint}' has an invalid IPv6 address"))?;
        (format!("[{address}]"), after.strip_prefix(':'))
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!("endpoint '{endpoint}' has an invalid host"));
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("endpoint '{endpoint}' has an invalid port")),
        },
    };
    Ok((scheme, format!("{host}:{port}")))
}

/// A rewrite target: `$1`…`$9` stay captures; any other `$` is a dollar.
fn rewrite_target(to: &str) -> Result<String, String> {
    refuse_control(to, "pathRewrite.to")?;
    let mut out = String::from("\"");
    let mut chars = to.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            '$' => out.push_str("${edgeplane_dollar}"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

pub(super) fn parse_routing(id: &str, content: &Value) -> Result<Routing, String> {
    let pattern = path_pattern(content, None)?;
    let origins = content
        .get("origins")
        .and_then(Value::as_array)
        .filter(|o| !o.is_empty())
        .ok_or("origins must list at least one origin")?;
    // `retryDelay` has no nginx counterpart: nginx tries the next origin at once. An origin's
    // `maxRequestsPerSec` is capacity for validation's overload check, not a serving setting.
    let policy = content
        .get("failoverPolicy")
        .cloned()
        .unwrap_or(Value::Null);
    let retries = unsigned(&policy, "retryAttempts")?.unwrap_or(0);
    if retries > 10 {
        return Err("failoverPolicy.retryAttempts must be between 0 and 10".into());
    }
    let max_fails = unsigned(&policy, "failoverThreshold")?;
    let fail_timeout =
        duration_ms(&policy, "circuitBreakerTimeout")?.map(|ms| ms.div_ceil(1000).max(1));
    let mut scheme = None;
    let mut parsed = Vec::new();
    for (index, origin) in origins.iter().enumerate() {
        let endpoint =
            required_string(origin, "endpoint").map_err(|e| format!("origins.{index}.{e}"))?;
        let (origin_scheme, address) =
            origin_address(endpoint).map_err(|e| format!("origins.{index}: {e}"))?;
        if scheme.is_some_and(|s| s != origin_scheme) {
            return Err(
                "origins mix http and https; nginx proxies one upstream with one scheme".into(),
            );
        }
        scheme = Some(origin_scheme);
        let weight = unsigned(origin, "weight").map_err(|e| format!("origins.{index}.{e}"))?;
        let priority = match origin.get("priority") {
            None | Some(Value::Null) => 0,
            Some(p) => p
                .as_i64()
                .ok_or_else(|| format!("origins.{index}.priority must be an integer"))?,
        };
        parsed.push((address, weight, priority));
    }
    // Priority 1 is tried before priority 2: the smallest number is primary, the rest backup.
    let primary = parsed.iter().map(|(_, _, p)| *p).min().unwrap_or(0);
    let servers = parsed
        .into_iter()
        .map(|(address, weight, priority)| {
            let mut line = format!("server {address}");
            match weight {
                Some(0) => line.push_str(" down"),
                Some(w) => {
                    let _ = write!(line, " weight={}", w.min(1000));
                }
                None => {}
            }
            if let Some(fails) = max_fails {
                let _ = write!(line, " max_fails={fails}");
            }
            if let Some(timeout) = fail_timeout {
                let _ = write!(line, " fail_timeout={timeout}s");
            }
            if priority > primary {
                line.push_str(" backup");
            }
            line.push(';');
            line
        })
        .collect();
    let rewrite = match content.get("pathRewrite") {
        None | Some(Value::Null) => None,
        Some(rewrite) => {
            let from = required_string(rewrite, "from").map_err(|e| format!("pathRewrite.{e}"))?;
            let to = required_string(rewrite, "to").map_err(|e| format!("pathRewrite.{e}"))?;
            Some((quoted(from)?, rewrite_target(to)?))
        }
    };
    let host = match string_field(content, "hostHeader")? {
        Some(host) => Some(literal(host).map_err(|e| format!("hostHeader: {e}"))?),
        None => None,
    };
    Ok(Routing {
        pattern,
        upstream: format!("edgeplane_{}", ident(id)),
        scheme: scheme.unwrap_or("http"),
        servers,
        tries: retries + 1,
        rewrite,
        host,
    })
}

impl Routing {
    pub(super) fn upstream(&self, out: &mut Conf) {
        out.open(&format!("upstream {}", self.upstream));
        for server in &self.servers {
            out.line(server);
        }
        out.line("keepalive 16;");
        out.close();
    }

    pub(super) fn location(&self, out: &mut Conf) {
        if let Some((from, to)) = &self.rewrite {
            out.line(&format!("rewrite {from} {to} break;"));
        }
        out.line("proxy_http_version 1.1;");
        out.line("proxy_set_header Connection \"\";");
        match &self.host {
            Some(host) => out.line(&format!("proxy_set_header Host {host};")),
            None => out.line("proxy_set_header Host $host;"),
        }
        out.line("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;");
        out.line("proxy_next_upstream error timeout http_502 http_503 http_504;");
        out.line(&format!("proxy_next_upstream_tries {};", self.tries));
        if self.scheme == "https" {
            out.line("proxy_ssl_server_name on;");
        }
        out.line(&format!("proxy_pass {}://{};", self.scheme, self.upstream));
    }
}

pub(super) struct Security {
    pub(super) pattern: String,
    ident: String,
    deny: Vec<String>,
    allow: Vec<String>,
    /// Rate per minute, burst, key variable.
    rate: Option<(u64, u64, String)>,
    /// Blocked countries, and whether the list is an allowlist.
    geo: Option<(Vec<String>, bool)>,
}

fn address_list(content: &Value, field: &str) -> Result<Vec<String>, String> {
    let Some(filtering) = content.get("ipFiltering") else {
        return Ok(Vec::new());
    };
    strings(filtering, field)?
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let text = text.trim();
            text.parse::<IpNet>()
                .map(|net| net.trunc().to_string())
                .or_else(|_| text.parse::<IpAddr>().map(|a| a.to_string()))
                .map_err(|_| format!("ipFiltering.{field}.{i}: '{text}' is not an address or CIDR"))
        })
        .collect()
}

fn rate_key(key: Option<&str>) -> Result<String, String> {
    match key {
        None | Some("ip" | "client_ip" | "remote_addr") => Ok("$binary_remote_addr".into()),
        Some(key) => match key.strip_prefix("header:") {
            Some(name) => header_variable(name.trim()),
            None => Err(format!(
                "rateLimit.key '{key}' is not one nginx can count by (ip, header:<name>)"
            )),
        },
    }
}

pub(super) fn parse_security(
    id: &str,
    content: &Value,
    geoip_variable: Option<&str>,
) -> Result<(Security, Option<String>), String> {
    let pattern = path_pattern(content, Some("/*"))?;
    if let Some(waf) = content.get("waf").filter(|w| enabled(w)) {
        let rules = strings(waf, "rules")?;
        return Err(format!(
            "nginx has no WAF module and cannot enforce the WAF rule sets [{}]; set waf.enabled to false for edges that run nginx",
            rules.join(", ")
        ));
    }
    let deny = address_list(content, "denylist")?;
    let allow = address_list(content, "allowlist")?;
    let rate = match content.get("rateLimit").filter(|r| enabled(r)) {
        None => None,
        Some(limit) => {
            let count = unsigned(limit, "limit")
                .map_err(|e| format!("rateLimit.{e}"))?
                .filter(|n| *n > 0)
                .ok_or("rateLimit.limit must be above 0")?;
            let window = duration_ms(limit, "window")
                .map_err(|e| format!("rateLimit.{e}"))?
                .unwrap_or(1000);
            if !(1000..=3_600_000).contains(&window) {
                return Err("rateLimit.window must be between 1s and 3600s".into());
            }
            let per_minute = count.saturating_mul(60_000).div_ceil(window);
            let key = rate_key(string_field(limit, "key")?)?;
            Some((per_minute, count, key))
        }
    };
    let mut warning = None;
    let geo = match content.get("geoBlocking").filter(|g| enabled(g)) {
        None => None,
        Some(geo) => {
            let countries = strings(geo, "countries")?;
            if let Some(bad) = countries.iter().find(|c| !is_country_code(c)) {
                return Err(format!(
                    "geoBlocking: '{bad}' is not an ISO 3166-1 alpha-2 country code"
                ));
            }
            let allowlist = match string_field(geo, "mode")? {
                None | Some("blocklist") => false,
                Some("allowlist") => true,
                Some(other) => {
                    return Err(format!(
                        "geoBlocking.mode '{other}' is not allowlist or blocklist"
                    ));
                }
            };
            if geoip_variable.is_none() {
                warning = Some(
                    "geo blocking is not enforced: this edge has no nginx_geoip_variable".into(),
                );
                None
            } else {
                Some((
                    countries.into_iter().map(str::to_owned).collect(),
                    allowlist,
                ))
            }
        }
    };
    Ok((
        Security {
            pattern,
            ident: ident(id),
            deny,
            allow,
            rate,
            geo,
        },
        warning,
    ))
}

impl Security {
    pub(super) fn http_level(&self, out: &mut Conf, geoip_variable: Option<&str>) {
        if let Some((per_minute, _, key)) = &self.rate {
            let rate = if per_minute % 60 == 0 {
                format!("{}r/s", per_minute / 60)
            } else {
                format!("{per_minute}r/m")
            };
            out.line(&format!(
                "limit_req_zone {key} zone=edgeplane_rate_{}:10m rate={rate};",
                self.ident
            ));
        }
        if let (Some((countries, allowlist)), Some(variable)) = (&self.geo, geoip_variable) {
            let (listed, other) = if *allowlist { (0, 1) } else { (1, 0) };
            out.open(&format!("map ${variable} $edgeplane_geo_{}", self.ident));
            out.line(&format!("default {other};"));
            for country in countries {
                out.line(&format!("{country} {listed};"));
            }
            out.close();
        }
    }

    pub(super) fn location(&self, out: &mut Conf) {
        if self.geo.is_some() {
            out.line(&format!(
                "if ($edgeplane_geo_{}) {{ return 403; }}",
                self.ident
            ));
        }
        for address in &self.deny {
            out.line(&format!("deny {address};"));
        }
        for address in &self.allow {
            out.line(&format!("allow {address};"));
        }
        if !self.allow.is_empty() {
            out.line("deny all;");
        }
        if let Some((_, burst, _)) = &self.rate {
            out.line(&format!(
                "limit_req zone=edgeplane_rate_{} burst={burst} nodelay;",
                self.ident
            ));
            out.line("limit_req_status 429;");
        }
    }
}

pub(super) struct Cors {
    /// `*`, or the origins answered through the `$edgeplane_cors_<id>` map.
    any_origin: bool,
    origins: Vec<String>,
    headers: Vec<(String, String)>,
}

pub(super) struct Response {
    pub(super) pattern: String,
    ident: String,
    add: Vec<(String, String)>,
    hide: Vec<String>,
    gzip_min_length: Option<Option<u64>>,
    cors: Option<Cors>,
}

fn is_cors_origin(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    })
}

fn header_list(section: &Value, field: &str) -> Result<Vec<String>, String> {
    let items = strings(section, field)?;
    if let Some(bad) = items.iter().find(|n| !is_header_name(n)) {
        return Err(format!("{field}: '{bad}' is not a header name or method"));
    }
    Ok(items.into_iter().map(str::to_owned).collect())
}

pub(super) fn parse_cors(cors: &Value) -> Result<Cors, String> {
    let origins = strings(cors, "allowOrigins")?;
    if let Some(bad) = origins.iter().find(|o| **o != "*" && !is_cors_origin(o)) {
        return Err(format!(
            "cors.allowOrigins: '{bad}' is not * or scheme://host[:port]"
        ));
    }
    let any_origin = origins.contains(&"*");
    let mut headers = Vec::new();
    let methods = header_list(cors, "allowMethods").map_err(|e| format!("cors.{e}"))?;
    if !methods.is_empty() {
        headers.push(("Access-Control-Allow-Methods".into(), methods.join(", ")));
    }
    let allowed = header_list(cors, "allowHeaders").map_err(|e| format!("cors.{e}"))?;
    if !allowed.is_empty() {
        headers.push(("Access-Control-Allow-Headers".into(), allowed.join(", ")));
    }
    let exposed = header_list(cors, "exposeHeaders").map_err(|e| format!("cors.{e}"))?;
    if !exposed.is_empty() {
        headers.push(("Access-Control-Expose-Headers".into(), exposed.join(", ")));
    }
    if cors.get("allowCredentials").and_then(Value::as_bool) == Some(true) {
        if any_origin {
            return Err("cors: credentials cannot be allowed for the origin *".into());
        }
        headers.push(("Access-Control-Allow-Credentials".into(), "true".into()));
    }
    if let Some(age) = unsigned(cors, "maxAge").map_err(|e| format!("cors.{e}"))? {
        headers.push(("Access-Control-Max-Age".into(), age.to_string()));
    }
    Ok(Cors {
        any_origin,
        origins: origins.into_iter().map(str::to_owned).collect(),
        headers,
    })
}

pub(super) fn parse_response(id: &str, content: &Value) -> Result<Response, String> {
    let pattern = path_pattern(content, Some("/*"))?;
    let mut add = Vec::new();
    match content.get("addHeaders") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                if !is_header_name(name) {
                    return Err(format!("addHeaders: '{name}' is not a header name"));
                }
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("addHeaders.{name} must be a string"))?;
                refuse_control(value, &format!("addHeaders.{name}"))?;
                add.push((name.clone(), value.to_owned()));
            }
        }
        Some(_) => return Err("addHeaders must be an object".into()),
    }
    let hide = header_list(content, "removeHeaders")?;
    let gzip_min_length = match content.get("compression").filter(|c| enabled(c)) {
        None => None,
        Some(compression) => {
            let algorithms = strings(compression, "algorithms")?;
            if !algorithms.is_empty() && !algorithms.contains(&"gzip") {
                return Err(format!(
                    "compression: nginx compresses with gzip only, not {}",
                    algorithms.join(", ")
                ));
            }
            Some(unsigned(compression, "minSize").map_err(|e| format!("compression.{e}"))?)
        }
    };
    let cors = match content.get("cors").filter(|c| enabled(c)) {
        None => None,
        Some(cors) => Some(parse_cors(cors)?),
    };
    Ok(Response {
        pattern,
        ident: ident(id),
        add,
        hide,
        gzip_min_length,
        cors,
    })
}

impl Response {
    pub(super) fn http_level(&self, out: &mut Conf) {
        let Some(cors) = self.cors.as_ref().filter(|c| !c.any_origin) else {
            return;
        };
        out.open(&format!("map $http_origin $edgeplane_cors_{}", self.ident));
        out.line("default \"\";");
        for origin in &cors.origins {
            // Checked to scheme://host[:port]: nothing to escape, and never a map keyword.
            out.line(&format!("\"{origin}\" \"{origin}\";"));
        }
        out.close();
    }

    pub(super) fn location(&self, out: &mut Conf) -> Result<(), String> {
        for name in &self.hide {
            out.line(&format!("proxy_hide_header {};", quoted(name)?));
        }
        for (name, value) in &self.add {
            out.line(&format!(
                "add_header {} {} always;",
                quoted(name)?,
                literal(value)?
            ));
        }
        if let Some(min_length) = self.gzip_min_length {
            out.line("gzip on;");
            out.line("gzip_proxied any;");
            out.line(&format!("gzip_types {GZIP_TYPES};"));
            if let Some(min_length) = min_length {
                out.line(&format!("gzip_min_length {min_length};"));
            }
        }
        if let Some(cors) = &self.cors {
            if cors.any_origin {
                out.line("add_header Access-Control-Allow-Origin \"*\" always;");
            } else {
                out.line(&format!(
                    "add_header Access-Control-Allow-Origin $edgeplane_cors_{} always;",
                    self.ident
                ));
                out.line("add_header Vary Origin always;");
            }
            for (name, value) in &cors.headers {
                out.line(&format!("add_header {name} {} always;", literal(value)?));
            }
            out.line("if ($request_method = OPTIONS) { return 204; }");
        }
        Ok(())
    }
}

pub(super) struct Tls {
    pub(super) domains: Vec<String>,
    pub(super) cert_path: PathBuf,
    pub(super) key_path: PathBuf,
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

fn is_server_name(domain: &str) -> bool {
    let host = domain.strip_prefix("*.").unwrap_or(domain);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub(super) fn parse_certificate(
    id: &str,
    version: &str,
    content: &Value,
    tls_dir: &Path,
) -> Result<Tls, String> {
    let domains = strings(content, "domains")?;
    if domains.is_empty() {
        return Err("domains must name at least one domain".into());
    }
    if let Some(bad) = domains.iter().find(|d| !is_server_name(d)) {
        return Err(format!("domains: '{bad}' is not a host name"));
    }
    let mut cert_pem = required_string(content, "certificate")?.trim().to_owned();
    if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("certificate is not a PEM certificate".into());
    }
    let chain: Vec<&str> = match content.get("certificateChain") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(_)) => strings(content, "certificateChain")?,
        _ => Vec::new(),
    };
    for pem in chain {
        cert_pem.push('\n');
        cert_pem.push_str(pem.trim());
    }
    cert_pem.push('\n');
    let key_pem = required_string(content, "privateKey")?;
    if !key_pem.contains("PRIVATE KEY-----") {
        return Err(
            "privateKey is not a PEM private key (a sealed key must be opened before the push)"
                .into(),
        );
    }
    let stem = format!(
        "{}-{}",
        ident(id),
        version.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_")
    );
    Ok(Tls {
        domains: domains.into_iter().map(str::to_ascii_lowercase).collect(),
        cert_path: tls_dir.join(format!("{stem}.crt")),
        key_path: tls_dir.join(format!("{stem}.key")),
        cert_pem,
        key_pem: format!("{}\n", key_pem.trim()),
    })
}
