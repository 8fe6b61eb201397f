//! `edgeplane config …`: apply a file (create by name or add a version), list, show, diff,
//! validate and approve configurations, naming them as people do: `NAME[@VERSION]`.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::http::{Api, ClientError};
use super::output::{self, Output, Paint, fields, print_json, table, text};

/// The keys a configuration file may hold; anything else is a typo worth refusing.
const FILE_KEYS: [&str; 8] = [
    "name",
    "type",
    "description",
    "tags",
    "metadata",
    "content",
    "changeDescription",
    "bump",
];

/// A configuration as written in a file (JSON or YAML).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigFile {
    pub name: String,
    pub config_type: String,
    pub content: Value,
    pub description: Option<String>,
    pub tags: Option<Value>,
    /// Values as strings, as the API keeps them.
    pub metadata: Option<Map<String, Value>>,
    pub change_description: Option<String>,
    pub bump: Option<String>,
}

/// Reads `path` (`-`: standard input) as YAML when it is named `.yaml`/`.yml`, as JSON when
/// named `.json`, else as JSON and failing that YAML.
pub fn read_document(path: &Path) -> Result<Value, ClientError> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| ClientError::Usage(format!("cannot read standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    parse_document(&text, extension.as_deref())
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

fn parse_document(text: &str, extension: Option<&str>) -> Result<Value, String> {
    let yaml = |text: &str| {
        serde_norway::from_str::<Value>(text).map_err(|e| format!("not valid YAML: {e}"))
    };
    match extension {
        Some("yaml" | "yml") => yaml(text),
        Some("json") => serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}")),
        _ => serde_json::from_str(text).or_else(|_| yaml(text)),
    }
}

impl ConfigFile {
    pub fn from_document(document: Value) -> Result<ConfigFile, ClientError> {
        let usage = |message: String| ClientError::Usage(message);
        let Value::Object(mut object) = document else {
            return Err(usage(
                "the file must hold one object with name, type and content".into(),
            ));
        };
        if let Some(unknown) = object.keys().find(|k| !FILE_KEYS.contains(&k.as_str())) {
            return Err(usage(format!(
                "unknown key '{unknown}' (expected {})",
                FILE_KEYS.join(", ")
            )));
        }
        let string = |object: &mut Map<String, Value>, key: &str| match object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(usage(format!("'{key}' must be a string"))),
        };
        let name = string(&mut object, "name")?
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| usage("the file has no 'name'".into()))?;
        let config_type = string(&mut object, "type")?
            .ok_or_else(|| usage("the file has no 'type' (CacheRule, RoutingRule, …)".into()))?;
        let content = object
            .remove("content")
            .filter(|c| !c.is_null())
            .ok_or_else(|| usage("the file has no 'content'".into()))?;
        let metadata = match object.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(
                map.into_iter()
                    .map(|(key, value)| match value {
                        // YAML reads `9.0` as a number; the API keeps metadata as strings.
                        Value::String(_) => Ok((key, value)),
                        Value::Number(n) => Ok((key, Value::String(n.to_string()))),
                        Value::Bool(b) => Ok((key, Value::String(b.to_string()))),
                        _ => Err(usage(format!("metadata '{key}' must be a plain value"))),
                    })
                    .collect::<Result<Map<_, _>, _>>()?,
            ),
            Some(_) => return Err(usage("'metadata' must be a map of strings".into())),
        };
        Ok(ConfigFile {
            description: string(&mut object, "description")?,
            change_description: string(&mut object, "changeDescription")?,
            bump: string(&mut object, "bump")?,
            tags: object.remove("tags").filter(|t| !t.is_null()),
            name,
            config_type,
            content,
            metadata,
        })
    }

    fn create_body(&self) -> Value {
        let mut body = json!({
            "name": self.name,
            "type": self.config_type,
            "content": self.content,
        });
        if let Some(description) = &self.description {
            body["description"] = json!(description);
        }
        if let Some(tags) = &self.tags {
            body["tags"] = tags.clone();
        }
        if let Some(metadata) = &self.metadata {
            body["metadata"] = Value::Object(metadata.clone());
        }
        body
    }

    fn update_body(&self, source: &str) -> Value {
        let mut body = json!({
            "content": self.content,
            "changeDescription": self
                .change_description
                .clone()
                .unwrap_or_else(|| format!("applied from {source}")),
        });
        if let Some(description) = &self.description {
            body["description"] = json!(description);
        }
        if let Some(metadata) = &self.metadata {
            body["metadata"] = Value::Object(metadata.clone());
        }
        if let Some(bump) = &self.bump {
            body["bump"] = json!(bump);
        }
        body
    }
}

/// `NAME@VERSION` → (NAME, Some(VERSION)); the `@` counts only before a semantic version,
/// so a name may hold one.
pub fn split_version(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once('@') {
        Some((name, version)) if !name.is_empty() && semver::Version::parse(version).is_ok() => {
            (name, Some(version))
        }
        _ => (spec, None),
    }
}

/// The configuration named `name` (exactly), or with that id.
pub async fn find(api: &Api, name: &str) -> Result<Value, ClientError> {
    let candidates = api
        .list_all(
            &["configurations"],
            "configurations",
            &[("name", name.to_string())],
        )
        .await?;
    if let Some(found) = candidates
        .into_iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
    {
        return Ok(found);
    }
    match api.get(&["configurations", name], &[]).await {
        Ok(found) => Ok(found),
        Err(ClientError::Api(failure)) if failure.status == 404 => Err(ClientError::NotFound(
            format!("no configuration is named '{name}'"),
        )),
        Err(error) => Err(error),
    }
}

fn id_of(configuration: &Value) -> Result<String, ClientError> {
    configuration
        .get("configurationId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ClientError::Other("the configuration has no configurationId".into()))
}

/// `config apply -f FILE`.
pub async fn apply(api: &Api, path: &Path, output: Output) -> Result<(), ClientError> {
    let file = ConfigFile::from_document(read_document(path)?)?;
    let source = path.display().to_string();
    let existing = match find(api, &file.name).await {
        Ok(found) => Some(found),
        Err(ClientError::NotFound(_)) => None,
        Err(error) => return Err(error),
    };
    let Some(existing) = existing else {
        let created = api.post(&["configurations"], &file.create_body()).await?;
        match output {
            Output::Json => print_json(&created),
            Output::Table => {
                println!(
                    "configuration {} created: version {} ({}), id {}",
                    file.name,
                    text(&created, "version"),
                    text(&created, "status"),
                    text(&created, "configurationId"),
                );
                println!(
                    "approve it with: edgeplane config approve {}@{}",
                    file.name,
                    text(&created, "version")
                );
            }
        }
        return Ok(());
    };
    let id = id_of(&existing)?;
    let stored_type = text(&existing, "type");
    if stored_type != file.config_type {
        return Err(ClientError::Usage(format!(
            "configuration {} is a {stored_type}; the file says {}",
            file.name, file.config_type
        )));
    }
    let current_version = text(&existing, "version");
    let current = api
        .get(&["configurations", &id, "versions", &current_version], &[])
        .await?;
    let same_metadata = match &file.metadata {
        None => current
            .get("metadata")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty),
        Some(metadata) => current.get("metadata").and_then(Value::as_object) == Some(metadata),
    };
    if current.get("content") == Some(&file.content) && same_metadata {
        match output {
            Output::Json => print_json(&existing),
            Output::Table => println!(
                "configuration {} unchanged at version {current_version} ({})",
                file.name,
                text(&existing, "status")
            ),
        }
        return Ok(());
    }
    // If-Match: a version someone else added since the read is not silently replaced.
    let updated = api
        .call(
            reqwest::Method::PUT,
            &["configurations", &id],
            &[],
            Some(&file.update_body(&source)),
            Some(&current_version),
        )
        .await?;
    match output {
        Output::Json => print_json(&updated),
        Output::Table => {
            println!(
                "configuration {}: version {} ({}) added after {current_version}",
                file.name,
                text(&updated, "version"),
                text(&updated, "status"),
            );
            println!(
                "compare with: edgeplane config diff {} {current_version} {}",
                file.name,
                text(&updated, "version")
            );
        }
    }
    Ok(())
}

/// `config list`.
pub async fn list(
    api: &Api,
    filters: &[(&str, String)],
    output: Output,
    paint: Paint,
) -> Result<(), ClientError> {
    let mut query = filters.to_vec();
    query.push(("limit", "100".to_string()));
    let page = api.get(&["configurations"], &query).await?;
    if output == Output::Json {
        print_json(&page);
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Vec<String>> = page
        .get("configurations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                text(c, "name"),
                text(c, "type"),
                text(c, "version"),
                text(c, "status"),
                text(c, "isDeployed"),
                output::age(c.get("updatedAt"), now),
                text(c, "configurationId"),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no configurations");
        return Ok(());
    }
    let rendered = table(
        &[
            "NAME", "TYPE", "VERSION", "STATUS", "DEPLOYED", "UPDATED", "ID",
        ],
        &rows,
    );
    println!("{}", colour_column(&rendered, paint));
    if page.get("hasMore").and_then(Value::as_bool) == Some(true) {
        println!(
            "… {} in all; narrow with --type, --status or --name",
            text(&page, "total")
        );
    }
    Ok(())
}

/// Colours the status words of a rendered table (after alignment, so widths stay right).
fn colour_column(rendered: &str, paint: Paint) -> String {
    if !paint.enabled {
        return rendered.to_string();
    }
    rendered
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                return paint.bold(line);
            }
            let mut line = line.to_string();
            for word in ["Approved", "Draft", "Rejected", "Deprecated"] {
                let padded = format!("  {word}  ");
                if line.contains(&padded) {
                    line = line.replacen(&padded, &format!("  {}  ", paint.status(word)), 1);
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `config show NAME[@VERSION]`.
pub async fn show(api: &Api, spec: &str, output: Output, paint: Paint) -> Result<(), ClientError> {
    let (name, version) = split_version(spec);
    let configuration = find(api, name).await?;
    let id = id_of(&configuration)?;
    let shown = match version {
        Some(version) => {
            api.get(&["configurations", &id, "versions", version], &[])
                .await?
        }
        None => configuration.clone(),
    };
    if output == Output::Json {
        print_json(&shown);
        return Ok(());
    }
    let approved = match (
        shown.get("approvedBy").and_then(Value::as_str),
        shown.get("approvedAt"),
    ) {
        (Some(by), Some(at)) => format!("by {by} at {}", at.as_str().unwrap_or("-")),
        _ => "-".to_string(),
    };
    let mut pairs = vec![
        ("name", text(&configuration, "name")),
        ("id", id),
        ("type", text(&configuration, "type")),
        ("version", text(&shown, "version")),
        ("status", paint.status(&text(&shown, "status"))),
        ("approved", approved),
        ("deployed", text(&shown, "isDeployed")),
    ];
    if version.is_some() {
        pairs.push(("change", text(&shown, "changeDescription")));
        pairs.push((
            "created",
            format!(
                "by {} at {}",
                text(&shown, "createdBy"),
                text(&shown, "createdAt")
            ),
        ));
    } else {
        pairs.push(("description", text(&configuration, "description")));
        pairs.push(("updated", text(&configuration, "updatedAt")));
    }
    if let Some(metadata) = shown.get("metadata").and_then(Value::as_object)
        && !metadata.is_empty()
    {
        let listed: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        pairs.push(("metadata", listed.join(", ")));
    }
    println!("{}", fields(&pairs));
    println!("content:");
    let content = shown.get("content").cloned().unwrap_or(Value::Null);
    let pretty = serde_json::to_string_pretty(&content).unwrap_or_default();
    for line in pretty.lines() {
        println!("  {line}");
    }
    Ok(())
}

/// Whether one change of a diff is one the API counts as breaking (SPEC §5): an origin or a
/// domain removed, a TTL lowered to 0, the WAF switched to block. The API gives only the
/// count; these rules mark which lines it means.
pub fn is_breaking(config_type: &str, change: &Value) -> bool {
    let field = change.get("field").and_then(Value::as_str).unwrap_or("");
    let change_type = change
        .get("changeType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let old = change.get("oldValue");
    let new = change.get("newValue");
    let under = |prefix: &str| field == prefix || field.starts_with(&format!("{prefix}/"));
    match config_type {
        "CacheRule" => {
            field == "/ttl"
                && new.and_then(Value::as_f64) == Some(0.0)
                && old.and_then(Value::as_f64).is_some_and(|t| t > 0.0)
        }
        "SecurityRule" => {
            let mode = |value: Option<&Value>, pointer: &str| {
                value
                    .and_then(|v| v.pointer(pointer))
                    .and_then(Value::as_str)
                    == Some("block")
            };
            (field == "/waf/mode" && mode(new, "") && !mode(old, ""))
                || (field == "/waf" && mode(new, "/mode") && !mode(old, "/mode"))
        }
        "RoutingRule" => under("/origins") && change_type == "Removed",
        "SSLCertificate" => under("/domains") && change_type == "Removed",
        _ => false,
    }
}

fn shown_value(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "∅".to_string(),
        Some(value) => value.to_string(),
    }
}

/// `config diff NAME FROM TO`.
pub async fn diff(
    api: &Api,
    name: &str,
    from: &str,
    to: &str,
    output: Output,
    paint: Paint,
) -> Result<(), ClientError> {
    let configuration = find(api, name).await?;
    let id = id_of(&configuration)?;
    let answer = api
        .get(
            &["configurations", &id, "diff"],
            &[("from", from.to_string()), ("to", to.to_string())],
        )
        .await?;
    if output == Output::Json {
        print_json(&answer);
        return Ok(());
    }
    print!(
        "{}",
        render_diff(name, &text(&configuration, "type"), &answer, paint)
    );
    Ok(())
}

/// The diff as lines: `+` added, `-` removed, `~` modified, each with its JSON pointer, and
/// breaking changes marked.
pub fn render_diff(name: &str, config_type: &str, answer: &Value, paint: Paint) -> String {
    let changes = answer
        .get("changes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let summary = answer.get("summary");
    let count = |key: &str| {
        summary
            .and_then(|s| s.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let n_breaking = count("breakingChanges");
    let mut out = format!(
        "{} {} → {}: {} change(s)",
        paint.bold(name),
        text(answer, "fromVersion"),
        text(answer, "toVersion"),
        count("totalChanges"),
    );
    if n_breaking > 0 {
        out.push_str(&format!(
            ", {}",
            paint.red(&format!("{n_breaking} breaking"))
        ));
    }
    out.push('\n');
    for change in &changes {
        let field = change.get("field").and_then(Value::as_str).unwrap_or("");
        let field = if field.is_empty() { "/" } else { field };
        let line = match change.get("changeType").and_then(Value::as_str) {
            Some("Added") => paint.green(&format!(
                "+ {field}: {}",
                shown_value(change.get("newValue"))
            )),
            Some("Removed") => paint.red(&format!(
                "- {field}: {}",
                shown_value(change.get("oldValue"))
            )),
            _ => paint.yellow(&format!(
                "~ {field}: {} → {}",
                shown_value(change.get("oldValue")),
                shown_value(change.get("newValue"))
            )),
        };
        out.push_str(&line);
        if n_breaking > 0 && is_breaking(config_type, change) {
            out.push_str(&format!("  {}", paint.red(&paint.bold("BREAKING"))));
        }
        out.push('\n');
    }
    out
}

/// The findings of a validation report under `key` (`errors`, `warnings`), split into those
/// about other configurations and those against `own_id`, the stored configuration the file
/// would become a new version of. The API validates an unsaved body against every stored
/// configuration, itself included; applying the file excludes it, so those findings do not
/// count.
pub fn split_findings(report: &Value, key: &str, own_id: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    let own = own_id.map(|id| format!("'{id}'"));
    report
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .cloned()
        .partition(|finding| {
            own.as_deref()
                .is_none_or(|own| !text(finding, "message").contains(own))
        })
}

/// `config validate -f FILE`: true when valid, counting only what applying the file would
/// meet (see [`split_findings`]).
pub async fn validate(
    api: &Api,
    path: &Path,
    output: Output,
    paint: Paint,
) -> Result<bool, ClientError> {
    let file = ConfigFile::from_document(read_document(path)?)?;
    let own_id = match find(api, &file.name).await {
        Ok(existing) => Some(id_of(&existing)?),
        Err(ClientError::NotFound(_)) => None,
        Err(error) => return Err(error),
    };
    let report = api
        .post(
            &["configurations", "validate"],
            &json!({"type": file.config_type, "content": file.content}),
        )
        .await?;
    let (errors, own_errors) = split_findings(&report, "errors", own_id.as_deref());
    let (warnings, own_warnings) = split_findings(&report, "warnings", own_id.as_deref());
    let valid = errors.is_empty();
    if output == Output::Json {
        print_json(&report);
        return Ok(valid);
    }
    for (label, findings) in [
        (paint.red("error"), &errors),
        (paint.yellow("warning"), &warnings),
    ] {
        for finding in findings {
            println!(
                "{label} {}: {}",
                text(finding, "field"),
                text(finding, "message")
            );
        }
    }
    let n_own = own_errors.len() + own_warnings.len();
    if n_own > 0 {
        println!(
            "{}",
            paint.dim(&format!(
                "({n_own} finding(s) against the stored {} itself left out: a new version replaces it)",
                file.name
            ))
        );
    }
    if valid {
        println!(
            "{} {} ({}) is valid",
            paint.green("ok"),
            file.name,
            file.config_type
        );
    } else {
        println!(
            "{} {} ({}) is not valid",
            paint.red("invalid"),
            file.name,
            file.config_type
        );
    }
    Ok(valid)
}

/// `config approve NAME@VERSION`.
pub async fn approve(
    api: &Api,
    spec: &str,
    notes: Option<String>,
    output: Output,
    paint: Paint,
) -> Result<(), ClientError> {
    let (name, version) = split_version(spec);
    let version = version.ok_or_else(|| {
        ClientError::Usage(format!("say which version to approve: {spec}@VERSION"))
    })?;
    let configuration = find(api, name).await?;
    let id = id_of(&configuration)?;
    let mut body = json!({"version": version});
    if let Some(notes) = notes {
        body["notes"] = json!(notes);
    }
    let approved = api.post(&["configurations", &id, "approve"], &body).await?;
    match output {
        Output::Json => print_json(&approved),
        Output::Table => println!(
            "{name}@{version} {}; deploy it with: edgeplane deploy {name}@{version} --watch",
            paint.status("Approved")
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_files_read_the_same() {
        let yaml = "name: static\ntype: CacheRule\nmetadata:\n  simulate.errorRate: 9.0\n  owner: web\ncontent:\n  pathPattern: /static/*\n  ttl: 3600\n";
        let json_text = r#"{"name":"static","type":"CacheRule","metadata":{"simulate.errorRate":"9.0","owner":"web"},"content":{"pathPattern":"/static/*","ttl":3600}}"#;
        let from_yaml =
            ConfigFile::from_document(parse_document(yaml, Some("yaml")).unwrap()).unwrap();
        let from_json =
            ConfigFile::from_document(parse_document(json_text, None).unwrap()).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(from_yaml.content["ttl"], 3600);
        assert_eq!(
            from_yaml.create_body()["metadata"]["simulate.errorRate"],
            "9.0"
        );
        // Without an extension, YAML is tried when the text is not JSON.
        assert!(parse_document(yaml, None).is_ok());
    }

    #[test]
    fn files_missing_fields_or_with_typos_are_refused_by_name() {
        let check = |text: &str, needle: &str| {
            let error = parse_document(text, Some("yaml"))
                .map_err(ClientError::Usage)
                .and_then(ConfigFile::from_document)
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{error} should mention {needle}");
        };
        check("type: CacheRule\ncontent: {}\n", "name");
        check("name: a\ncontent: {}\n", "type");
        check("name: a\ntype: CacheRule\n", "content");
        check(
            "name: a\ntype: CacheRule\ncontent: {}\ncontnet: {}\n",
            "contnet",
        );
        check("- a\n- b\n", "one object");
        check(
            "name: a\ntype: CacheRule\ncontent: {}\nmetadata: [1]\n",
            "metadata",
        );
    }

    #[test]
    fn findings_against_the_configuration_itself_are_set_apart() {
        let report = json!({"errors": [
            {"field": "content.pathPattern", "message": "Path pattern '/a/*' is identical to existing configuration 'config-1' (a), with different content"},
            {"field": "content.pathPattern", "message": "overlaps existing configuration 'config-2' (b)"},
        ]});
        let (others, own) = split_findings(&report, "errors", Some("config-1"));
        assert_eq!((others.len(), own.len()), (1, 1));
        assert!(text(&others[0], "message").contains("config-2"));
        let (others, own) = split_findings(&report, "errors", None);
        assert_eq!((others.len(), own.len()), (2, 0));
        assert_eq!(split_findings(&report, "warnings", None).0.len(), 0);
    }

    #[test]
    fn versions_are_split_off_names() {
        assert_eq!(split_version("static@1.2.0"), ("static", Some("1.2.0")));
        assert_eq!(split_version("static"), ("static", None));
        assert_eq!(split_version("team@site"), ("team@site", None));
        assert_eq!(
            split_version("team@site@2.0.0"),
            ("team@site", Some("2.0.0"))
        );
        assert_eq!(split_version("@1.0.0"), ("@1.0.0", None));
    }

    #[test]
    fn breaking_changes_are_marked_by_the_apis_rules() {
        let change = |field: &str, kind: &str, old: Value, new: Value| json!({"field": field, "changeType": kind, "oldValue": old, "newValue": new});
        assert!(is_breaking(
            "CacheRule",
            &change("/ttl", "Modified", json!(60), json!(0))
        ));
        assert!(!is_breaking(
            "CacheRule",
            &change("/ttl", "Modified", json!(60), json!(30))
        ));
        assert!(is_breaking(
            "SecurityRule",
            &change("/waf/mode", "Modified", json!("detect"), json!("block"))
        ));
        assert!(is_breaking(
            "RoutingRule",
            &change("/origins/1", "Removed", json!({"name": "b"}), Value::Null)
        ));
        assert!(!is_breaking(
            "RoutingRule",
            &change("/origins/1/weight", "Modified", json!(30), json!(40))
        ));
        assert!(is_breaking(
            "SSLCertificate",
            &change("/domains/0", "Removed", json!("a.example.com"), Value::Null)
        ));
    }

    #[test]
    fn diffs_render_one_line_per_change_with_the_breaking_ones_marked() {
        let answer = json!({
            "fromVersion": "1.0.0", "toVersion": "1.1.0",
            "changes": [
                {"field": "/ttl", "changeType": "Modified", "oldValue": 60, "newValue": 0},
                {"field": "/varyHeaders/1", "changeType": "Added", "oldValue": null, "newValue": "Accept-Language"},
            ],
            "summary": {"totalChanges": 2, "breakingChanges": 1},
        });
        let rendered = render_diff("static", "CacheRule", &answer, Paint { enabled: false });
        assert_eq!(
            rendered,
            "static 1.0.0 → 1.1.0: 2 change(s), 1 breaking\n\
             ~ /ttl: 60 → 0  BREAKING\n\
             + /varyHeaders/1: \"Accept-Language\"\n"
        );
    }
}
