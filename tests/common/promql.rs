//! PromQL expressions taken apart with `promql-parser`: the series selectors they use.
#![allow(dead_code)]

use std::collections::BTreeSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};

/// Every series selector of `expr`, in the order they appear.
pub fn selectors(expr: &Expr) -> Vec<&VectorSelector> {
    let mut found = Vec::new();
    collect(expr, &mut found);
    found
}

fn collect<'a>(e: &'a Expr, found: &mut Vec<&'a VectorSelector>) {
    match e {
        Expr::Aggregate(a) => {
            collect(&a.expr, found);
            if let Some(p) = &a.param {
                collect(p, found);
            }
        }
        Expr::Unary(u) => collect(&u.expr, found),
        Expr::Binary(b) => {
            collect(&b.lhs, found);
            collect(&b.rhs, found);
        }
        Expr::Paren(p) => collect(&p.expr, found),
        Expr::Subquery(s) => collect(&s.expr, found),
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect(a, found)),
        Expr::MatrixSelector(m) => found.push(&m.vs),
        Expr::VectorSelector(v) => found.push(v),
        _ => {}
    }
}

/// The metric names an expression reads (recorded series included).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let ast = promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    selectors(&ast)
        .into_iter()
        .filter_map(|v| v.name.clone())
        .collect()
}

/// A selector as PromQL again, e.g. to ask Prometheus whether it selects anything.
pub fn render(v: &VectorSelector) -> String {
    let matchers: Vec<String> = v
        .matchers
        .matchers
        .iter()
        .filter(|m| m.name != "__name__")
        .map(|m| {
            let op = match m.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::Re(_) => "=~",
                MatchOp::NotRe(_) => "!~",
            };
            let value = m.value.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{}{op}\"{value}\"", m.name)
        })
        .collect();
    format!(
        "{}{{{}}}",
        v.name.clone().unwrap_or_default(),
        matchers.join(",")
    )
}
