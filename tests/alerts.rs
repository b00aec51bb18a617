//! The shipped Prometheus rules: the committed files are what `qod alerts` generates, every
//! alert follows the conventions (severity, a plain summary, a templated description, a
//! runbook section with Meaning, Impact, Diagnosis and Mitigation), every expression parses
//! and names exported metrics only, and Debian's promtool checks the rules and runs their
//! tests: each alert fires in its firing case and stays silent in its silent one.

#[path = "common/promql.rs"]
mod promql;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use qod::alerts::{self, Severity};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");

#[test]
fn the_committed_rules_are_the_generated_ones() {
    let out = tempfile::tempdir().unwrap();
    let written = alerts::write_all(out.path()).unwrap();
    if std::env::var_os("QOD_REFRESH_FIXTURES").is_some() {
        alerts::write_all(Path::new(DIR)).unwrap();
    }
    for fresh in written {
        let name = fresh.file_name().unwrap();
        let kept = std::fs::read_to_string(PathBuf::from(DIR).join(name)).unwrap_or_default();
        assert!(
            std::fs::read_to_string(&fresh).unwrap() == kept,
            "{name:?} differs from what the code generates: run `qod alerts --out dashboards`"
        );
    }
}

/// The `## Name` sections of the runbooks and the `###` headings within each.
fn runbook_sections() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(PathBuf::from(DIR).join(alerts::RUNBOOKS)).unwrap();
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            sections.push((name.trim().to_owned(), Vec::new()));
        } else if let Some(sub) = line.strip_prefix("### ")
            && let Some(last) = sections.last_mut()
        {
            last.1.push(sub.trim().to_owned());
        }
    }
    sections
}

#[test]
fn every_alert_follows_the_conventions_and_has_its_runbook() {
    let all = alerts::alerts();
    let sections = runbook_sections();
    let names: BTreeSet<&str> = all.iter().map(|a| a.name).collect();
    assert_eq!(names.len(), all.len(), "an alert name twice");
    let documented: BTreeSet<&str> = sections.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, documented, "alerts and runbook sections differ");
    for (name, headings) in &sections {
        assert_eq!(
            headings,
            &["Meaning", "Impact", "Diagnosis", "Mitigation"],
            "runbook of {name}"
        );
    }
    let mut per_group = std::collections::BTreeMap::new();
    for a in &all {
        assert!(
            a.name.starts_with("Qod") && a.name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{}: CamelCase",
            a.name
        );
        assert!(matches!(a.severity, Severity::Critical | Severity::Warning));
        let first = a.summary.chars().next().unwrap();
        assert!(
            first.is_uppercase() && a.summary.ends_with('.') && !a.summary.contains("{{"),
            "{}: the summary is a plain sentence",
            a.name
        );
        assert!(
            a.description.contains("{{ $labels."),
            "{}: the description is templated",
            a.name
        );
        assert_eq!(
            a.runbook_url(),
            format!("runbooks.md#{}", a.name.to_lowercase())
        );
        for (label, _) in a.fires_with {
            assert!(
                a.description
                    .contains(&format!("{{{{ $labels.{label} }}}}"))
                    || *label != "queue",
                "{}: the description names the queue",
                a.name
            );
        }
        *per_group.entry(a.group).or_insert(0) += 1;
    }
    assert!(per_group.values().all(|n| *n <= 20), "{per_group:?}");
    let tests = std::fs::read_to_string(PathBuf::from(DIR).join("qod.rules.test.yml")).unwrap();
    for a in &all {
        let cases = tests.matches(&format!("alertname: {}\n", a.name)).count();
        assert_eq!(cases, 2, "{}: one firing and one silent case", a.name);
    }
    assert!(
        all.len() >= 15,
        "the alerts the issue lists: {} found",
        all.len()
    );
}

#[test]
fn every_expression_parses_and_names_exported_metrics_only() {
    let exported: BTreeSet<String> = qod::metrics::catalogue::FAMILIES
        .iter()
        .flat_map(|f| {
            let mut names = vec![f.name.to_owned()];
            if f.kind == qod::metrics::catalogue::Kind::Histogram {
                for s in ["_bucket", "_count", "_sum"] {
                    names.push(format!("{}{s}", f.name));
                }
            }
            names
        })
        .collect();
    let recorded: BTreeSet<String> = alerts::recordings().into_iter().map(|r| r.record).collect();
    let exprs = alerts::recordings()
        .into_iter()
        .map(|r| r.expr)
        .chain(alerts::alerts().into_iter().map(|a| a.expr));
    for expr in exprs {
        promql_parser::parser::parse(&expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        for name in promql::metric_names(&expr) {
            assert!(
                exported.contains(&name) || recorded.contains(&name) || name == "up",
                "{expr}: {name} is neither exported nor recorded"
            );
        }
    }
}

fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("QOD_PROMTOOL").map(PathBuf::from);
    if found.is_none() {
        eprintln!("promtool checks skipped: QOD_PROMTOOL is not set (scripts/test-all sets it)");
    }
    found
}

fn run(promtool: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_checks_the_rules_and_every_alert_fires_and_stays_silent_as_tested() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = Path::new(DIR);
    let (ok, said) = run(&promtool, &["check", "rules", "qod.rules.yml"], dir);
    assert!(ok, "promtool check rules: {said}");
    let (ok, said) = run(&promtool, &["test", "rules", "qod.rules.test.yml"], dir);
    assert!(ok, "promtool test rules: {said}");
}

#[test]
fn the_rule_tests_catch_an_alert_that_no_longer_fires() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = alerts::rule_file().replace(r#"up{job=\"qod\"} == 0"#, r#"up{job=\"qod\"} == 2"#);
    assert_ne!(rules, alerts::rule_file(), "the rule to break is there");
    std::fs::write(dir.path().join("qod.rules.yml"), rules).unwrap();
    std::fs::write(dir.path().join("qod.rules.test.yml"), alerts::test_file()).unwrap();
    let (ok, said) = run(
        &promtool,
        &["test", "rules", "qod.rules.test.yml"],
        dir.path(),
    );
    assert!(!ok, "a broken rule passed its tests: {said}");
    assert!(said.contains("QodTargetDown"), "{said}");
}

/// The README's scrape and Alertmanager configuration examples, as written, with the rule file
/// of this folder: `promtool check config` and `amtool check-config` accept them.
#[test]
fn the_readme_setup_examples_are_valid_configuration() {
    let Some(promtool) = promtool() else {
        return;
    };
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let scrape = blocks
        .iter()
        .find(|b| b.contains("job_name: qod"))
        .expect("a scrape example");
    let routes = blocks
        .iter()
        .find(|b| b.contains("receivers:"))
        .expect("an Alertmanager example");
    let dir = tempfile::tempdir().unwrap();
    let rules = PathBuf::from(DIR).join("qod.rules.yml");
    let prometheus = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus,
        scrape.replace("/etc/prometheus/qod.rules.yml", rules.to_str().unwrap()),
    )
    .unwrap();
    let (ok, said) = run(
        &promtool,
        &["check", "config", "prometheus.yml"],
        dir.path(),
    );
    assert!(ok, "promtool check config: {said}");
    assert!(said.contains("1 rule files found"), "{said}");
    std::fs::write(dir.path().join("alertmanager.yml"), routes).unwrap();
    let amtool = promtool.with_file_name("amtool");
    let (ok, said) = run(&amtool, &["check-config", "alertmanager.yml"], dir.path());
    assert!(ok, "amtool check-config: {said}");
}
