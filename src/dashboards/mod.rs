//! The shipped Grafana dashboards, generated (`qod dashboards --out dashboards/`) from the
//! panels declared in `panels`, so that every dashboard gets the same variables, datasource,
//! selectors and layout. The committed JSON is checked against Grafana's dashboard linter's
//! rules and `@grafana/schema` by the tests, whoever wrote it.

mod panels;

use serde_json::{Value, json};

pub use panels::boards;

/// The selector every query of a `qod` metric carries.
pub const SELECTOR: &str = r#"job=~"$job",instance=~"$instance""#;

/// The metric `name` with the dashboards' selector and `extra` matchers.
pub fn sel(name: &str, extra: &str) -> String {
    if extra.is_empty() {
        format!("{name}{{{SELECTOR}}}")
    } else {
        format!("{name}{{{SELECTOR},{extra}}}")
    }
}

pub struct Board {
    pub uid: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub rows: Vec<Row>,
}

pub struct Row {
    pub title: &'static str,
    pub panels: Vec<Panel>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One number (big), for the state now or over the range.
    Stat,
    /// Lines over time.
    Series,
}

pub struct Panel {
    pub kind: Kind,
    pub title: &'static str,
    /// What the panel shows and what a bad value means.
    pub description: &'static str,
    /// A Grafana unit id (`s`, `percentunit`, `reqps`, `short`, ...).
    pub unit: &'static str,
    pub targets: Vec<(String, &'static str)>,
}

impl Panel {
    pub fn stat(title: &'static str, description: &'static str, unit: &'static str) -> Self {
        Self {
            kind: Kind::Stat,
            title,
            description,
            unit,
            targets: Vec::new(),
        }
    }

    pub fn series(title: &'static str, description: &'static str, unit: &'static str) -> Self {
        Self {
            kind: Kind::Series,
            ..Self::stat(title, description, unit)
        }
    }

    /// A query and its legend (`{{label}}` as Grafana writes it).
    pub fn query(mut self, expr: impl Into<String>, legend: &'static str) -> Self {
        self.targets.push((expr.into(), legend));
        self
    }
}

fn datasource() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

fn variables() -> Value {
    let query = |name: &str, label: &str, q: &str| {
        json!({
            "name": name,
            "label": label,
            "type": "query",
            "datasource": datasource(),
            "query": {"query": q, "refId": format!("{name}-variable")},
            "refresh": 2,
            "includeAll": true,
            "multi": true,
            "allValue": ".+",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1
        })
    };
    json!([
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "default", "value": "default"}
        },
        query("job", "Job", "label_values(qod_build_info, job)"),
        query(
            "instance",
            "Instance",
            r#"label_values(qod_build_info{job=~"$job"}, instance)"#
        )
    ])
}

/// The dashboard model Grafana imports.
pub fn render(board: &Board) -> Value {
    let mut panels = Vec::new();
    let mut id = 0;
    let mut y = 0;
    for row in &board.rows {
        id += 1;
        panels.push(json!({
            "id": id,
            "type": "row",
            "title": row.title,
            "collapsed": false,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": []
        }));
        y += 1;
        let mut x = 0;
        let mut height = 0;
        for p in &row.panels {
            let (w, h) = match p.kind {
                Kind::Stat => (6, 4),
                Kind::Series => (12, 8),
            };
            if x + w > 24 {
                x = 0;
                y += height;
                height = 0;
            }
            id += 1;
            panels.push(panel(p, id, x, y, w, h));
            x += w;
            height = height.max(h);
        }
        y += height;
    }
    json!({
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "tags": ["qod"],
        "timezone": "utc",
        "editable": false,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "links": [{
            "title": "QoD dashboards",
            "type": "dashboards",
            "tags": ["qod"],
            "asDropdown": true,
            "includeVars": true,
            "keepTime": true,
            "icon": "external link",
            "targetBlank": false,
            "tooltip": "The other QoD dashboards"
        }],
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "panels": panels
    })
}

fn panel(p: &Panel, id: u32, x: u32, y: u32, w: u32, h: u32) -> Value {
    let targets: Vec<Value> = p
        .targets
        .iter()
        .enumerate()
        .map(|(i, (expr, legend))| {
            json!({
                "refId": char::from(b'A' + i as u8).to_string(),
                "datasource": datasource(),
                "expr": expr,
                "legendFormat": legend,
                "range": true,
                "instant": false
            })
        })
        .collect();
    let (kind, options) = match p.kind {
        Kind::Stat => (
            "stat",
            json!({
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "auto"
            }),
        ),
        Kind::Series => (
            "timeseries",
            json!({
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                "tooltip": {"mode": "multi", "sort": "desc"}
            }),
        ),
    };
    json!({
        "id": id,
        "type": kind,
        "title": p.title,
        "description": p.description,
        "datasource": datasource(),
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": options,
        "targets": targets
    })
}

/// Writes every dashboard as `<uid>.json` into `dir`; returns the files written.
pub fn write_all(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for board in boards() {
        let path = dir.join(format!("{}.json", board.uid));
        let mut text = serde_json::to_string_pretty(&render(&board))?;
        text.push('\n');
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}
