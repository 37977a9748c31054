//! Metrics in the Prometheus text exposition format (version 0.0.4), written by hand: the
//! nodes expose a handful of counters and gauges, which does not need a metrics library.
//!
//! ```
//! use lloom_core::metrics::{MetricKind, MetricsText};
//! let mut m = MetricsText::default();
//! m.family("lloom_requests_total", MetricKind::Counter, "Requests answered.");
//! m.sample("lloom_requests_total", &[("outcome", "ok")], 3.0);
//! assert!(m.finish().contains("lloom_requests_total{outcome=\"ok\"} 3\n"));
//! ```

use std::fmt::Write as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counter or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct MetricsText {
    text: String,
}

impl MetricsText {
    /// Starts a metric family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the family started last.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{key}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: MetricKind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The page.
    pub fn finish(self) -> String {
        self.text
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping_follow_the_text_format() {
        let mut m = MetricsText::default();
        m.family("x_total", MetricKind::Counter, "Things.\nMore");
        m.sample("x_total", &[("a", "q\"uo\\te"), ("b", "line\nbreak")], 2.5);
        m.single("y", MetricKind::Gauge, "A gauge.", f64::INFINITY);
        assert_eq!(
            m.finish(),
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\",b=\"line\\nbreak\"} 2.5\n\
             # HELP y A gauge.\n# TYPE y gauge\ny +Inf\n"
        );
    }
}
