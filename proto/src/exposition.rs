//! Reading the server's `/metrics` text (Prometheus exposition format, see
//! `PROTOCOL.md`, "Metrics and health"): what tests, the soak and operators'
//! tools need to check a counter or gauge without a Prometheus library.

/// The values of every series of metric `name` in `text` (one per label
/// set; empty when the metric is absent). Comment lines and metrics whose
/// name merely starts with `name` are skipped.
pub fn samples(text: &str, name: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse().ok())
        .collect()
}

/// The sum of [`samples`]: 0 when the metric is absent.
pub fn sum(text: &str, name: &str) -> f64 {
    samples(text, name).iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_and_prefixes_do_not_match() {
        let text = "# HELP lapwing_topics topics\n\
                    lapwing_topics 3\n\
                    lapwing_topics_refused_total 9\n\
                    lapwing_resyncs_total{transport=\"quic\"} 2\n\
                    lapwing_resyncs_total{transport=\"grpc\"} 5\n";
        assert_eq!(samples(text, "lapwing_topics"), [3.0]);
        assert_eq!(sum(text, "lapwing_resyncs_total"), 7.0);
        assert!(samples(text, "lapwing_connections").is_empty());
        assert_eq!(sum(text, "lapwing_connections"), 0.0);
    }
}
