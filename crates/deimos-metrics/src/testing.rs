//! Capturing metrics in tests (feature `testing`): a global debugging recorder and a snapshot of what was
//! emitted, by name and labels.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A metric's name and sorted labels.
type Id = (String, Vec<(String, String)>);

/// Every metric emitted so far in this process (the recorder is installed by the first call and stays: the
/// `metrics` facade has one global recorder).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    counters: BTreeMap<Id, u64>,
    gauges: BTreeMap<Id, f64>,
    histograms: BTreeMap<Id, Vec<f64>>,
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        if recorder.install().is_err() {
            tracing::warn!("another metrics recorder is installed: deimos_metrics::testing captures nothing");
        }
        snapshotter
    })
}

/// Installs the capturing recorder (call it before the code under test registers its metrics).
pub fn install() {
    snapshotter();
}

/// What has been emitted so far.
pub fn capture() -> Captured {
    let mut out = Captured::default();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        labels.sort();
        let id = (key.name().to_string(), labels);
        match value {
            DebugValue::Counter(n) => {
                out.counters.insert(id, n);
            }
            DebugValue::Gauge(g) => {
                out.gauges.insert(id, g.into_inner());
            }
            DebugValue::Histogram(h) => {
                out.histograms
                    .insert(id, h.into_iter().map(|v| v.into_inner()).collect());
            }
        }
    }
    out
}

fn matches(have: &[(String, String)], want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

impl Captured {
    /// The sum of the counters named `name` whose labels include `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .iter()
            .filter(|((n, l), _)| n == name && matches(l, labels))
            .map(|(_, v)| v)
            .sum()
    }

    /// The gauge named `name` whose labels include `labels` (the first such), if any.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.gauges
            .iter()
            .find(|((n, l), _)| n == name && matches(l, labels))
            .map(|(_, v)| *v)
    }

    /// The values recorded since the last capture by the histograms named `name` whose labels include `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.histograms
            .iter()
            .filter(|((n, l), _)| n == name && matches(l, labels))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    }

    /// The names of every metric captured.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .counters
            .keys()
            .chain(self.gauges.keys())
            .chain(self.histograms.keys())
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}
