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

/// Writes a node's network counters (`lloom_network_*`): announcements accepted and refused,
/// relay reservations, relayed connections, hole punches, and AutoNAT's reachability verdict.
#[allow(clippy::cast_precision_loss)] // counters far below 2^53
pub fn write_network_stats(m: &mut MetricsText, stats: &crate::network::NetworkStats) {
    let counters = [
        (
            "lloom_network_announcements_accepted_total",
            "Announcements that passed verification.",
            stats.announcements_accepted,
        ),
        (
            "lloom_network_announcements_refused_total",
            "Announcements refused (malformed, forged or invalid).",
            stats.announcements_malformed
                + stats.announcements_forged
                + stats.announcements_invalid,
        ),
        (
            "lloom_network_peers_disconnected_total",
            "Peers disconnected for repeated misbehaviour.",
            stats.peers_disconnected,
        ),
        (
            "lloom_network_relay_reservations_total",
            "Reservations relays accepted for this node.",
            stats.relay_reservations,
        ),
        (
            "lloom_network_relayed_connections_total",
            "Connections established through a relay.",
            stats.relayed_connections,
        ),
        (
            "lloom_network_hole_punches_succeeded_total",
            "Relayed connections replaced by a direct one (DCUtR).",
            stats.hole_punches_succeeded,
        ),
        (
            "lloom_network_hole_punches_failed_total",
            "Hole punching attempts that failed.",
            stats.hole_punches_failed,
        ),
        (
            "lloom_network_redials_total",
            "Peers dialled again (bootstrap peers, and peers mDNS found, after a failure).",
            stats.redials,
        ),
    ];
    for (name, help, value) in counters {
        m.single(name, MetricKind::Counter, help, value as f64);
    }
    let gauges = [
        ("lloom_network_bootstrap_peers", "Bootstrap peers configured.", stats.bootstrap_peers),
        (
            "lloom_network_bootstrap_peers_connected",
            "Bootstrap peers connected now.",
            stats.bootstrap_connected,
        ),
    ];
    for (name, help, value) in gauges {
        m.single(name, MetricKind::Gauge, help, value as f64);
    }
    let name = "lloom_network_reachable";
    m.family(name, MetricKind::Gauge, "AutoNAT's verdict: 1 for the current one.");
    for (label, state) in [
        ("unknown", crate::network::Reachability::Unknown),
        ("public", crate::network::Reachability::Public),
        ("private", crate::network::Reachability::Private),
    ] {
        m.sample(name, &[("state", label)], f64::from(u8::from(stats.reachability == state)));
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

    #[test]
    fn network_stats_name_every_counter_and_the_reachability() {
        let stats = crate::network::NetworkStats {
            hole_punches_succeeded: 3,
            bootstrap_peers: 2,
            bootstrap_connected: 1,
            reachability: crate::network::Reachability::Private,
            ..Default::default()
        };
        let mut m = MetricsText::default();
        write_network_stats(&mut m, &stats);
        let page = m.finish();
        assert!(page.contains("lloom_network_hole_punches_succeeded_total 3\n"), "{page}");
        assert!(page.contains("lloom_network_reachable{state=\"private\"} 1\n"), "{page}");
        assert!(page.contains("lloom_network_bootstrap_peers 2\n"), "{page}");
        assert!(page.contains("lloom_network_bootstrap_peers_connected 1\n"), "{page}");
        assert!(page.contains("lloom_network_redials_total 0\n"), "{page}");
        assert!(page.contains("lloom_network_reachable{state=\"public\"} 0\n"), "{page}");
    }
}
