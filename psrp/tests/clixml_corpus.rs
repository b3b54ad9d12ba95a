//! Reads every `*.xml` file of the directory named by `PSRP_CLIXML_CORPUS` (one CLIXML element per
//! file, e.g. the data of PSRP messages recorded from real hosts, or a fuzzing corpus) and checks
//! that it parses and that writing it again gives the same bytes. Without the variable the test
//! passes without doing anything: the recordings are fetched by the test tooling, not kept here.
//!
//! `PSRP_CLIXML_CORPUS_ALLOW_DIFF=1` reports differences in the rewritten text instead of failing
//! (for corpora written by other serializers, whose spelling of the same values differs).

use std::path::Path;

use psrp::clixml::{parse, to_clixml};

#[test]
fn clixml_corpus_parses_and_round_trips() {
    let Some(dir) = std::env::var_os("PSRP_CLIXML_CORPUS") else {
        return;
    };
    let allow_diff = std::env::var_os("PSRP_CLIXML_CORPUS_ALLOW_DIFF").is_some();
    let mut files: Vec<_> = std::fs::read_dir(Path::new(&dir))
        .expect("corpus directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    let (mut parsed, mut identical) = (0, 0);
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("UTF-8 file");
        match parse(&text) {
            Ok(value) => {
                parsed += 1;
                let again = to_clixml(&value);
                if again == text {
                    identical += 1;
                } else {
                    let at = again
                        .bytes()
                        .zip(text.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                    let from = at.saturating_sub(40);
                    failures.push(format!(
                        "{}: rewritten text differs at byte {at}:\n  sent:    {:?}\n  written: {:?}",
                        path.display(),
                        text.get(from..(at + 60).min(text.len())).unwrap_or(""),
                        again.get(from..(at + 60).min(again.len())).unwrap_or(""),
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    eprintln!(
        "{} files, {parsed} parsed, {identical} rewritten byte for byte",
        files.len()
    );
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(parsed == files.len(), "some files did not parse");
    assert!(
        allow_diff || failures.is_empty(),
        "{} files differ",
        failures.len()
    );
}
