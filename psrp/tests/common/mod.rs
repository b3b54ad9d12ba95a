//! What the tests of the recorded Windows exchanges share: where the recordings are (see
//! tests/vectors/README.md) and how the PSRP payloads are found in their SOAP envelopes.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn vectors_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PSRP_VECTORS_DIR") {
        return Some(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/fetch.sh");
    match Command::new("sh").arg(&script).output() {
        Ok(out) if out.status.success() => {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!path.is_empty()).then(|| PathBuf::from(path))
        }
        Ok(out) => {
            eprintln!(
                "{} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(err) => {
            eprintln!("cannot run {}: {err}", script.display());
            None
        }
    }
}

/// One element carrying base64 PSRP fragments.
pub struct Payload<'a> {
    pub command_id: Option<&'a str>,
    pub text: &'a str,
}

/// The value of `name="..."` inside a start tag.
pub fn attr<'a>(start_tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let at = start_tag.find(&needle)? + needle.len();
    let len = start_tag[at..].find('"')?;
    Some(&start_tag[at..at + len])
}

/// The text of the first element named `tag` (`<tag ...>text<`).
pub fn element_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = body[from..].find(&format!("<{tag}")) {
        let start = from + at;
        let after = &body[start + 1 + tag.len()..];
        from = start + 1;
        if !after.starts_with([' ', '>']) {
            continue;
        }
        let gt = after.find('>')?;
        let rest = &after[gt + 1..];
        return Some(&rest[..rest.find('<').unwrap_or(rest.len())]);
    }
    None
}

/// The PSRP payloads of one envelope, in document order.
pub fn payloads(body: &str) -> Vec<Payload<'_>> {
    const TAGS: [&str; 5] = [
        "creationXml",
        "connectXml",
        "connectResponseXml",
        "rsp:Arguments",
        "rsp:Stream",
    ];
    let mut out = Vec::new();
    let mut command_line: Option<&str> = None;
    let mut pos = 0;
    while let Some(at) = body[pos..].find('<') {
        let start = pos + at;
        pos = start + 1;
        let tag_end = body[pos..].find([' ', '>', '/']).map_or(body.len(), |n| pos + n);
        let tag = &body[pos..tag_end];
        let Some(gt) = body[start..].find('>') else { break };
        let start_tag = &body[start..start + gt + 1];
        if tag == "rsp:CommandLine" {
            command_line = attr(start_tag, "CommandId");
        }
        if !TAGS.contains(&tag) || start_tag.ends_with("/>") {
            continue;
        }
        let text_start = start + gt + 1;
        let text = &body[text_start
            ..body[text_start..]
                .find('<')
                .map_or(body.len(), |n| text_start + n)];
        let command_id = if tag == "rsp:Arguments" {
            command_line
        } else {
            attr(start_tag, "CommandId")
        };
        if !text.trim().is_empty() {
            out.push(Payload {
                command_id,
                text: text.trim(),
            });
        }
    }
    out
}

/// The WinRM shell id a SOAP body names (a `ShellId` option or the `<rsp:Shell ShellId=..>`
/// attribute), upper-cased; empty when it names none.
pub fn shell_id(body: &str) -> String {
    body.find("Name=\"ShellId\">")
        .map(|at| &body[at + 15..])
        .and_then(|rest| rest.split('<').next())
        .or_else(|| {
            body.find("<rsp:Shell ")
                .and_then(|at| attr(&body[at..], "ShellId"))
        })
        .unwrap_or("")
        .to_uppercase()
}
