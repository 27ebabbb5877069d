//! Capturing metrics in tests (feature `testing`): a global recorder and a reading of what was
//! emitted, by name and labels.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// A metric's name and sorted labels.
type Id = (String, Vec<(String, String)>);

/// The metrics emitted in this process since [`install`], as they stand at the time of [`capture`]: counters
/// are totals, gauges hold their last value, histograms every value recorded. Capturing reads without resetting
/// anything, so a test may capture as often as it likes and compare two captures to see what happened between.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    counters: BTreeMap<Id, u64>,
    gauges: BTreeMap<Id, f64>,
    histograms: BTreeMap<Id, Vec<f64>>,
}

/// The recorder: metrics-util's registry with atomic storage, read without the swap-to-zero of its debugging
/// recorder's snapshots (which would make a second capture see counters at 0 and gauges at 0.0).
struct CaptureRecorder {
    registry: Registry<Key, AtomicStorage>,
}

impl Recorder for CaptureRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

fn registry() -> &'static Registry<Key, AtomicStorage> {
    static RECORDER: OnceLock<&'static CaptureRecorder> = OnceLock::new();
    let recorder = RECORDER.get_or_init(|| {
        let recorder: &'static CaptureRecorder = Box::leak(Box::new(CaptureRecorder {
            registry: Registry::atomic(),
        }));
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: deimos_metrics::testing captures nothing");
        }
        recorder
    });
    &recorder.registry
}

/// Installs the capturing recorder (call it before the code under test registers its metrics).
pub fn install() {
    registry();
}

fn id(key: &Key) -> Id {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    labels.sort();
    (key.name().to_string(), labels)
}

/// What has been emitted so far (see [`Captured`]).
pub fn capture() -> Captured {
    let registry = registry();
    let mut out = Captured::default();
    for (key, counter) in registry.get_counter_handles() {
        *out.counters.entry(id(&key)).or_default() += counter.load(Ordering::SeqCst);
    }
    for (key, gauge) in registry.get_gauge_handles() {
        out.gauges
            .insert(id(&key), f64::from_bits(gauge.load(Ordering::SeqCst)));
    }
    for (key, histogram) in registry.get_histogram_handles() {
        out.histograms.entry(id(&key)).or_default().extend(histogram.data());
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

    /// Every value recorded by the histograms named `name` whose labels include `labels`.
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
