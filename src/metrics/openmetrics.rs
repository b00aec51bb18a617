//! The OpenMetrics 1.0 text exposition, served when a scraper asks for it (Prometheus does by
//! default): counters named without `_total` in their metadata, `le` in the canonical number
//! form (`1.0`, not `1`), a `# UNIT` line where the unit ends the name, and `# EOF`.

use std::fmt::Write;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics to the classic text format: its quality
/// must be above zero and at least that of `text/plain` (a `*/*` counts for the text format).
pub fn preferred(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let mut open = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut quality = 1.0f32;
        let mut version = None;
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => quality = value.trim().parse().unwrap_or(0.0),
                "version" => version = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        match media.as_str() {
            // 0.0.1 is the draft of the same grammar; a later version is not ours to serve.
            "application/openmetrics-text"
                if matches!(version.as_deref(), None | Some("1.0.0") | Some("0.0.1")) =>
            {
                open = open.max(quality)
            }
            "text/plain" | "text/*" | "*/*" => text = text.max(quality),
            _ => {}
        }
    }
    open > 0.0 && open >= text
}

/// Renders families (sorted by name, as gathered) with their units from `unit_of`.
pub fn encode(families: &[MetricFamily], unit_of: impl Fn(&str) -> Option<&'static str>) -> String {
    let mut out = String::new();
    for family in families {
        let name = family.name();
        let kind = family.get_field_type();
        let base = match kind {
            MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let type_name = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "unknown",
        };
        let _ = writeln!(out, "# TYPE {base} {type_name}");
        if let Some(unit) = unit_of(name).filter(|u| base.ends_with(&format!("_{u}"))) {
            let _ = writeln!(out, "# UNIT {base} {unit}");
        }
        if !family.help().is_empty() {
            let _ = writeln!(out, "# HELP {base} {}", escape(family.help()));
        }
        for metric in family.get_metric() {
            match kind {
                MetricType::COUNTER => sample(
                    &mut out,
                    base,
                    "_total",
                    metric,
                    None,
                    metric.get_counter().get_value(),
                ),
                MetricType::GAUGE => sample(
                    &mut out,
                    base,
                    "",
                    metric,
                    None,
                    metric.get_gauge().get_value(),
                ),
                MetricType::HISTOGRAM => histogram(&mut out, base, metric),
                // This server registers neither.
                MetricType::SUMMARY | MetricType::UNTYPED => {}
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn histogram(out: &mut String, base: &str, metric: &Metric) {
    let h = metric.get_histogram();
    let mut infinite = false;
    for bucket in h.get_bucket() {
        let bound = bucket.upper_bound();
        infinite |= bound == f64::INFINITY;
        let le = canonical(bound);
        sample(
            out,
            base,
            "_bucket",
            metric,
            Some(&le),
            bucket.cumulative_count() as f64,
        );
    }
    if !infinite {
        sample(
            out,
            base,
            "_bucket",
            metric,
            Some("+Inf"),
            h.get_sample_count() as f64,
        );
    }
    sample(
        out,
        base,
        "_count",
        metric,
        None,
        h.get_sample_count() as f64,
    );
    sample(out, base, "_sum", metric, None, h.get_sample_sum());
}

fn sample(out: &mut String, base: &str, suffix: &str, metric: &Metric, le: Option<&str>, v: f64) {
    out.push_str(base);
    out.push_str(suffix);
    labels(out, metric.get_label(), le);
    out.push(' ');
    out.push_str(&number(v));
    out.push('\n');
}

fn labels(out: &mut String, pairs: &[LabelPair], le: Option<&str>) {
    if pairs.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let extra = le.map(|v| ("le", v));
    for (name, value) in pairs.iter().map(|p| (p.name(), p.value())).chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{name}=\"{}\"", escape(value));
    }
    out.push('}');
}

/// Backslash, double quote and line feed escaped, as in label values and help texts.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a decimal point, others in their shortest form.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The canonical rendering of an `le` value: Go's `%g` with `.0` added where it has neither
/// a decimal point nor an exponent (`1.0`, `0.25`, `1e-05`, `1e+21`).
fn canonical(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v.is_nan() {
        return "NaN".into();
    }
    let exponent = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    if !(-4..21).contains(&exponent) {
        let rust = format!("{v:e}");
        let (mantissa, exp) = rust.split_once('e').unwrap_or((&rust, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let plain = format!("{v}");
    if plain.contains('.') {
        plain
    } else {
        format!("{plain}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_values_are_canonical() {
        let cases = [
            (0.001, "0.001"),
            (0.1, "0.1"),
            (0.25, "0.25"),
            (1.0, "1.0"),
            (10.0, "10.0"),
            (1800.0, "1800.0"),
            (100000.0, "100000.0"),
            (1e-5, "1e-05"),
            (1e-10, "1e-10"),
            (1e21, "1e+21"),
            (0.0, "0.0"),
            (f64::INFINITY, "+Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(canonical(v), want, "{v}");
        }
    }

    #[test]
    fn the_accept_header_decides_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(preferred(Some(prometheus)));
        assert!(preferred(Some("application/openmetrics-text")));
        assert!(!preferred(None));
        assert!(!preferred(Some("*/*")));
        assert!(!preferred(Some("text/plain")));
        assert!(!preferred(Some(
            "text/plain;q=0.9,application/openmetrics-text;q=0.5"
        )));
        assert!(!preferred(Some("application/openmetrics-text;q=0")));
        assert!(!preferred(Some(
            "application/openmetrics-text;version=2.0.0"
        )));
        assert!(preferred(Some(
            "text/plain;q=0.5, application/openmetrics-text;version=1.0.0;q=0.5"
        )));
    }

    #[test]
    fn families_follow_the_grammar() {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("x_events_total", "Events \"quoted\"\\ and\nnew line."),
            &["kind"],
        )
        .unwrap();
        counter.with_label_values(&["a\"b"]).inc_by(3);
        let histogram = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("x_wait_seconds", "Waits.").buckets(vec![0.5, 1.0]),
        )
        .unwrap();
        histogram.observe(0.7);
        let gauge = prometheus::Gauge::new("x_ratio", "A ratio.").unwrap();
        gauge.set(0.5);
        registry.register(Box::new(counter)).unwrap();
        registry.register(Box::new(histogram)).unwrap();
        registry.register(Box::new(gauge)).unwrap();
        let text = encode(&registry.gather(), |name| match name {
            "x_wait_seconds" => Some("seconds"),
            "x_events_total" => Some("events"),
            _ => None,
        });
        assert_eq!(
            text,
            "# TYPE x_events counter\n\
             # UNIT x_events events\n\
             # HELP x_events Events \\\"quoted\\\"\\\\ and\\nnew line.\n\
             x_events_total{kind=\"a\\\"b\"} 3\n\
             # TYPE x_ratio gauge\n\
             # HELP x_ratio A ratio.\n\
             x_ratio 0.5\n\
             # TYPE x_wait_seconds histogram\n\
             # UNIT x_wait_seconds seconds\n\
             # HELP x_wait_seconds Waits.\n\
             x_wait_seconds_bucket{le=\"0.5\"} 0\n\
             x_wait_seconds_bucket{le=\"1.0\"} 1\n\
             x_wait_seconds_bucket{le=\"+Inf\"} 1\n\
             x_wait_seconds_count 1\n\
             x_wait_seconds_sum 0.7\n\
             # EOF\n"
        );
    }
}
