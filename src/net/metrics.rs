//! `GET /metrics` in the Prometheus text format, on every listener: requests by path and status
//! and their latency, measured here for every node alike, plus the gauges the node's
//! [`Handler`](super::Handler) reports (view, role, replication, Raft) read at scrape time.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One gauge a node reports at scrape time.
#[derive(Clone, Debug, PartialEq)]
pub struct Gauge {
    /// Its name, `viewkv_` prefixed.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Its value now.
    pub value: f64,
}

impl Gauge {
    /// A gauge of `value`.
    pub fn new(name: &'static str, help: &'static str, value: impl Into<f64>) -> Gauge {
        Gauge {
            name,
            help,
            value: value.into(),
        }
    }
}

/// Labels of a request: its path (`other` for paths no handler knows, so a scanner cannot
/// grow the label set) and its status code.
type RequestLabels = Vec<(&'static str, String)>;

/// What one listener measured about the requests it served.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests answered, by path and status.
    requests: Family<RequestLabels, Counter>,
    /// Time from a request's headers to its answer, by path.
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// The current gauges, as a collector for one scrape.
#[derive(Debug)]
struct Gauges(Vec<Gauge>);

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for gauge in &self.0 {
            let value = ConstGauge::new(gauge.value);
            let metric =
                encoder.encode_descriptor(gauge.name, gauge.help, None, value.metric_type())?;
            value.encode(metric)?;
        }
        Ok(())
    }
}

/// The resident memory in bytes that a `/proc/PID/status` text gives (its `VmRSS` line).
pub fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The counter and histogram of one path and status. Looking them up hashes and allocates
/// their labels, so a caller that counts many answers of one kind (a framed connection) keeps
/// them and counts each answer with two atomic updates.
#[derive(Clone, Debug)]
pub struct Counted {
    /// Requests answered with this path and status.
    requests: Counter,
    /// Their latency, by path.
    latency: Histogram,
}

impl Counted {
    /// Count one answer that took `took`.
    pub fn record(&self, took: Duration) {
        self.requests.inc();
        self.latency.observe(took.as_secs_f64());
    }
}

impl HttpMetrics {
    /// Count one answered request.
    pub fn record(&self, path: &str, known: bool, status: u16, took: Duration) {
        self.counted(path, known, status).record(took);
    }

    /// Where requests answered on `path` (`known`: one that exists) with `status` are counted.
    pub fn counted(&self, path: &str, known: bool, status: u16) -> Counted {
        let path = if known { path } else { "other" }.to_string();
        let labels = vec![("path", path.clone()), ("status", status.to_string())];
        Counted {
            requests: self.requests.get_or_create(&labels).clone(),
            latency: self.latency.get_or_create(&vec![("path", path)]).clone(),
        }
    }

    /// The text exposition of these metrics and `gauges`, plus the process's memory.
    pub fn render(&self, mut gauges: Vec<Gauge>) -> String {
        gauges.push(Gauge::new(
            "viewkv_resident_memory_bytes",
            "Resident memory of this process.",
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| vm_rss(&s))
                .map_or(0.0, |bytes| bytes as f64),
        ));
        let mut registry = Registry::default();
        registry.register(
            "viewkv_requests",
            "Requests answered, by path and status.",
            self.requests.clone(),
        );
        registry.register(
            "viewkv_request_seconds",
            "Time to answer a request, by path.",
            self.latency.clone(),
        );
        registry.register_collector(Box::new(Gauges(gauges)));
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &registry) {
            Ok(()) => out,
            Err(err) => format!("# metrics could not be encoded: {err}\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_reads_the_kib_of_its_line_and_nothing_else() {
        let status = "Name:\tviewkv\nVmPeak:\t  900 kB\nVmRSS:\t  1234 kB\nThreads:\t4\n";
        assert_eq!(vm_rss(status), Some(1234 * 1024));
        assert_eq!(vm_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn requests_and_gauges_are_rendered_and_unknown_paths_share_one_label() {
        let metrics = HttpMetrics::default();
        metrics.record("/kv/request", true, 200, Duration::from_micros(300));
        metrics.record("/kv/request", true, 200, Duration::from_micros(500));
        metrics.record("/x1", false, 404, Duration::from_micros(10));
        metrics.record("/x2", false, 404, Duration::from_micros(10));
        let text = metrics.render(vec![Gauge::new("viewkv_view_number", "The view.", 7)]);
        assert!(
            text.contains(r#"viewkv_requests_total{path="/kv/request",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"viewkv_requests_total{path="other",status="404"} 2"#),
            "{text}"
        );
        assert!(!text.contains("/x1"), "{text}");
        assert!(text.contains("viewkv_view_number 7"), "{text}");
        assert!(
            text.contains(r#"viewkv_request_seconds_count{path="/kv/request"} 2"#),
            "{text}"
        );
        assert!(text.contains("viewkv_resident_memory_bytes"), "{text}");
    }
}
