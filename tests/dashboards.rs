//! The shipped dashboards: the committed JSON is what `qod dashboards` generates, every query
//! uses exported metrics, and every dashboard passes the rules of Grafana's dashboard linter
//! (which cannot be installed here), checked on the committed files whoever wrote them.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::sink::{Behaviour, TestSink};
use common::{TestApp, session_body, status};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");

/// Units a panel may declare (Grafana's unit ids the dashboards use).
const UNITS: &[&str] = &[
    "s",
    "ms",
    "percentunit",
    "percent",
    "short",
    "none",
    "ops",
    "reqps",
    "bytes",
];

/// Stand-ins for Grafana's interval variables, so that a query parses and a range can still
/// be told apart afterwards.
const RATE_INTERVAL: Duration = Duration::from_secs(1111);

/// The query with Grafana's variables replaced as the linter does before parsing.
fn parse(expr: &str) -> Result<Expr, String> {
    let substituted = expr
        .replace("$__rate_interval", &format!("{}s", RATE_INTERVAL.as_secs()))
        .replace("$__range", "2222s")
        .replace("$__interval", "3333s");
    parser::parse(&substituted)
}

/// Every problem of one query, by rule.
fn lint_query(expr: &str) -> Vec<String> {
    let ast = match parse(expr) {
        Ok(ast) => ast,
        Err(e) => return vec![format!("target-promql: {e}")],
    };
    let mut problems = Vec::new();
    walk(&ast, None, &mut problems);
    problems
}

/// Walks the expression; `inside` is the function the current node is an argument of.
fn walk(e: &Expr, inside: Option<&str>, problems: &mut Vec<String>) {
    match e {
        Expr::Aggregate(a) => {
            walk(&a.expr, None, problems);
            if let Some(p) = &a.param {
                walk(p, None, problems);
            }
        }
        Expr::Unary(u) => walk(&u.expr, None, problems),
        Expr::Binary(b) => {
            walk(&b.lhs, None, problems);
            walk(&b.rhs, None, problems);
        }
        Expr::Paren(p) => walk(&p.expr, inside, problems),
        Expr::Subquery(s) => walk(&s.expr, None, problems),
        Expr::Call(c) => {
            for arg in &c.args.args {
                walk(arg, Some(c.func.name), problems);
            }
        }
        Expr::MatrixSelector(m) => {
            if matches!(inside, Some("rate" | "irate")) && m.range != RATE_INTERVAL {
                problems.push(format!(
                    "target-rate-interval: {} over {:?}, not $__rate_interval",
                    inside.unwrap_or_default(),
                    m.range
                ));
            }
            selector(&m.vs, inside, true, problems);
        }
        Expr::VectorSelector(v) => selector(v, inside, false, problems),
        _ => {}
    }
}

fn selector(
    v: &promql_parser::parser::VectorSelector,
    inside: Option<&str>,
    ranged: bool,
    problems: &mut Vec<String>,
) {
    let name = v.name.clone().unwrap_or_default();
    for (label, variable, rule) in [
        ("job", "$job", "target-job"),
        ("instance", "$instance", "target-instance"),
    ] {
        let ok = v
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == label && m.value == variable && matches!(m.op, MatchOp::Re(_)));
        if !ok {
            problems.push(format!("{rule}: {name} has no {label}=~\"{variable}\""));
        }
    }
    let counter = ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .any(|s| name.ends_with(s));
    let counted = ranged && matches!(inside, Some("rate" | "irate" | "increase"));
    if counter && !counted {
        problems.push(format!(
            "target-counter-agg: {name} outside rate/irate/increase"
        ));
    }
}

/// Every problem of one dashboard, by rule.
fn lint(board: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut say = |p: String| problems.push(p);
    if board["uid"].as_str().is_none_or(str::is_empty) {
        say("uid: missing".into());
    }
    let vars = board["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    match var("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => say("template-datasource: no Prometheus datasource variable".into()),
    }
    for (name, rule) in [("job", "template-job"), ("instance", "template-instance")] {
        match var(name) {
            Some(v)
                if v["type"] == "query"
                    && v["datasource"]["uid"] == "${datasource}"
                    && v["multi"] == true
                    && v["includeAll"] == true =>
            {
                let q = v["query"]["query"].as_str().unwrap_or_default();
                if !q.starts_with("label_values(") || !q.ends_with(&format!(", {name})")) {
                    say(format!("{rule}: {name} is not label_values(..., {name})"));
                }
                let inner =
                    &q["label_values(".len().min(q.len())..q.len().saturating_sub(name.len() + 3)];
                if let Err(e) = parse(inner) {
                    say(format!("template-label-promql: {name}: {e}"));
                }
                if v["refresh"] != 2 {
                    say(format!("template-on-time-change-reload: {name}"));
                }
            }
            _ => say(format!("{rule}: no {name} variable")),
        }
    }
    if board["editable"] != false {
        say("uneditable-dashboard: the dashboard is editable".into());
    }
    for p in board["panels"].as_array().cloned().unwrap_or_default() {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        if p["datasource"]["uid"] != "${datasource}" {
            say(format!("panel-datasource: {title}"));
        }
        if title.is_empty() || p["description"].as_str().is_none_or(str::is_empty) {
            say(format!("panel-title-description: {title:?}"));
        }
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        if !UNITS.contains(&unit) {
            say(format!("panel-units: {title}: {unit:?}"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            say(format!("panel-no-targets: {title}"));
        }
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            for problem in lint_query(expr) {
                say(format!("{title}: {problem}"));
            }
        }
    }
    problems
}

#[test]
fn the_committed_dashboards_are_the_generated_ones() {
    let out = tempfile::tempdir().unwrap();
    let written = qod::dashboards::write_all(out.path()).unwrap();
    if std::env::var_os("QOD_REFRESH_FIXTURES").is_some() {
        qod::dashboards::write_all(std::path::Path::new(DIR)).unwrap();
    }
    let committed: BTreeSet<String> = common::dashboards()
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let generated: BTreeSet<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(committed, generated, "dashboards/ holds other files");
    for path in written {
        let name = path.file_name().unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        let kept = std::fs::read_to_string(PathBuf::from(DIR).join(name)).unwrap();
        assert!(
            fresh == kept,
            "{name:?} differs from what the code generates: run `qod dashboards --out dashboards`"
        );
    }
}

#[test]
fn every_dashboard_passes_the_linter_rules() {
    let mut uids = BTreeSet::new();
    for (path, board) in common::dashboards() {
        assert!(
            uids.insert(board["uid"].to_string()),
            "{}: uid twice",
            path.display()
        );
        let problems = lint(&board);
        assert!(
            problems.is_empty(),
            "{}:\n{}",
            path.display(),
            problems.join("\n")
        );
    }
}

#[test]
fn the_linter_rules_catch_what_they_are_for() {
    let sel = r#"job=~"$job",instance=~"$instance""#;
    let bad = [
        (
            format!("sum(rate(qod_jobs_total{{{sel}}}[5m]))"),
            "target-rate-interval",
        ),
        (
            format!("sum(qod_jobs_total{{{sel}}})"),
            "target-counter-agg",
        ),
        (
            r#"sum(rate(qod_jobs_total{instance=~"$instance"}[$__rate_interval]))"#.to_owned(),
            "target-job",
        ),
        (
            r#"sum(qod_sessions{job=~"$job"})"#.to_owned(),
            "target-instance",
        ),
        (
            format!("sum(rate(qod_jobs_total{{{sel}}}[$__rate_interval])"),
            "target-promql",
        ),
    ];
    for (expr, rule) in bad {
        let problems = lint_query(&expr);
        assert!(
            problems.iter().any(|p| p.starts_with(rule)),
            "{expr}: {rule} expected, got {problems:?}"
        );
    }
    let good = format!(
        "sum(increase(qod_jobs_total{{{sel}}}[30d])) / sum(rate(qod_jobs_total{{{sel}}}[$__rate_interval]))"
    );
    assert_eq!(lint_query(&good), Vec::<String>::new());

    let (_, mut board) = common::dashboards().remove(0);
    board["panels"][1]["description"] = Value::Null;
    board["panels"][1]["fieldConfig"]["defaults"]["unit"] = "furlongs".into();
    board["templating"]["list"][2]["name"] = "node".into();
    let problems = lint(&board);
    for rule in [
        "panel-title-description",
        "panel-units",
        "template-instance",
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(rule) || p.contains(&format!(": {rule}"))),
            "{rule} expected, got {problems:?}"
        );
    }
}

/// The metric names a dashboard reads: in its panels' queries and its variables'
/// `label_values(<selector>, label)`.
fn metric_names(board: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in queries(board) {
        let ast = parse(&expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        names.extend(
            common::promql::selectors(&ast)
                .into_iter()
                .filter_map(|v| v.name.clone()),
        );
    }
    for variable in board["templating"]["list"].as_array().into_iter().flatten() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector.to_owned())
            .unwrap_or_else(|| panic!("{query}: not label_values(selector, label)"));
        names.extend(common::promql::metric_names(&inner.replace("$job", "qod")));
    }
    names
}

/// Every panel query of a dashboard.
fn queries(board: &Value) -> Vec<String> {
    board["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn every_dashboard_query_uses_an_exported_metric() {
    let sink = TestSink::start().await;
    let app = TestApp::spawn_with(|s| {
        s.notify.allow_insecure_sinks = true;
        s.notify.allow_private_sinks = true;
    })
    .await;
    let mut body = session_body("+33612345000", "198.51.100.1", 1);
    body["sink"] = serde_json::json!(sink.url("events", Behaviour::Accept));
    let (_, created) = app.create(&body).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    app.wait_for_session(&id, Duration::from_secs(5), |_, b| {
        status(b) == "UNAVAILABLE"
    })
    .await;
    let exported = app.metrics().await;
    let families: BTreeSet<String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();

    let mut checked = 0;
    for (path, board) in common::dashboards() {
        // `up` is Prometheus's own series of each target.
        for name in metric_names(&board).into_iter().filter(|n| n != "up") {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                families.contains(family),
                "{} queries {name}, which /metrics does not export",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "no dashboard queries found");
}
