//! The API reference (`docs/api.md`), generated from the CRDs' schemas (`pssession-operator
//! api-docs`): every field with its type, default, limits and the doc comment the schema carries,
//! plus the CEL rules with their messages. A test fails when the checked-in file is stale.

use std::fmt::Write;

use serde_json::Value;

/// Where the generated reference is checked in, relative to the repository root.
pub const CHECKED_IN_PATH: &str = "docs/api.md";

/// The reference as Markdown.
pub fn to_markdown() -> String {
    let mut out = String::from(
        "# API reference: `psremoting.dev/v1alpha1`\n\n\
         Generated from the CRD schemas by `pssession-operator api-docs`; do not edit. The same text\n\
         is what `kubectl explain` shows.\n",
    );
    for crd in crate::crds::all() {
        let Ok(crd) = serde_json::to_value(&crd) else {
            continue;
        };
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
        let short: Vec<&str> = crd["spec"]["names"]["shortNames"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let _ = write!(out, "\n## {kind}\n\nPlural `{plural}`");
        if !short.is_empty() {
            let _ = write!(out, ", short name `{}`", short.join("`, `"));
        }
        out.push_str(", namespaced.\n");
        let Some(version) = crd["spec"]["versions"].as_array().and_then(|v| v.first()) else {
            continue;
        };
        let schema = &version["schema"]["openAPIV3Schema"];
        if let Some(text) = schema["description"].as_str() {
            let _ = write!(out, "\n{text}\n");
        }
        for part in ["spec", "status"] {
            let node = &schema["properties"][part];
            if node.is_null() {
                continue;
            }
            let _ = write!(
                out,
                "\n### {kind} `{part}`\n\n| field | type | default | description |\n|---|---|---|---|\n"
            );
            fields(&mut out, node, part);
            rules(&mut out, node, part);
        }
        if let Some(columns) = version["additionalPrinterColumns"].as_array() {
            let names: Vec<&str> = columns.iter().filter_map(|c| c["name"].as_str()).collect();
            let _ = write!(out, "\n`kubectl get {plural}` columns: {}.\n", names.join(", "));
        }
    }
    out
}

/// One row per field, depth first, with dotted paths.
fn fields(out: &mut String, node: &Value, path: &str) {
    let required: Vec<&str> = node["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = node["properties"].as_object() else {
        return;
    };
    for (name, field) in properties {
        let full = format!("{path}.{name}");
        let mut description = field["description"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', " ");
        if required.contains(&name.as_str()) {
            description.insert_str(0, "**Required.** ");
        }
        let limits = limits(field);
        if !limits.is_empty() {
            let _ = write!(description, " ({limits})");
        }
        let default = match &field["default"] {
            Value::Null => String::new(),
            value => format!("`{value}`"),
        };
        let _ = writeln!(
            out,
            "| `{full}` | {} | {default} | {} |",
            type_of(field),
            description.replace('|', "\\|").trim()
        );
        if field["type"] == "object" {
            fields(out, field, &full);
        } else if field["type"] == "array" {
            fields(out, &field["items"], &format!("{full}[]"));
        }
    }
}

fn type_of(field: &Value) -> String {
    match field["type"].as_str() {
        Some("array") => format!("list of {}", type_of(&field["items"])),
        Some("object") if field["additionalProperties"].is_object() => {
            format!("map of {}", type_of(&field["additionalProperties"]))
        }
        Some(other) => match field["format"].as_str() {
            Some(format) => format!("{other} ({format})"),
            None => other.to_owned(),
        },
        None if field["x-kubernetes-preserve-unknown-fields"] == true => "any JSON value".to_owned(),
        None if field["x-kubernetes-int-or-string"] == true => "int or string".to_owned(),
        None => "object".to_owned(),
    }
}

fn limits(field: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(values) = field["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    for (key, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
    ] {
        if let Some(n) = field[key].as_i64() {
            parts.push(format!("{label} {n}"));
        }
    }
    if let Some(pattern) = field["pattern"].as_str() {
        parts.push(format!("pattern `{pattern}`"));
    }
    parts.join("; ")
}

/// The CEL rules of a node and its children, with their messages.
fn rules(out: &mut String, node: &Value, path: &str) {
    let mut found = Vec::new();
    collect_rules(node, path, &mut found);
    if found.is_empty() {
        return;
    }
    out.push_str("\nValidation rules (CEL, checked at admission):\n\n");
    for (at, rule, message) in found {
        let _ = writeln!(out, "- `{at}`: {message} (`{rule}`)");
    }
}

fn collect_rules(node: &Value, path: &str, found: &mut Vec<(String, String, String)>) {
    if let Some(list) = node["x-kubernetes-validations"].as_array() {
        for rule in list {
            found.push((
                path.to_owned(),
                rule["rule"].as_str().unwrap_or_default().to_owned(),
                rule["message"].as_str().unwrap_or("invalid").to_owned(),
            ));
        }
    }
    if let Some(properties) = node["properties"].as_object() {
        for (name, child) in properties {
            collect_rules(child, &format!("{path}.{name}"), found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference is checked in; a change to the API types must come with it.
    #[test]
    fn checked_in_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CHECKED_IN_PATH);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == to_markdown(),
            "{} is stale: run `cargo run -p pssession-operator -- api-docs > {CHECKED_IN_PATH}`",
            path.display()
        );
    }

    #[test]
    fn every_spec_field_is_documented() {
        let text = to_markdown();
        for field in [
            "spec.computerName",
            "spec.credentialsSecretRef.name",
            "spec.idleTimeout",
            "spec.parameters",
            "status.queuedJobs",
        ] {
            assert!(text.contains(&format!("`{field}`")), "{field} missing");
        }
        assert!(text.contains("Validation rules"));
    }
}
