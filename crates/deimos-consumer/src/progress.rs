//! Offsets under out-of-order completion: per partition, the offsets fetched and not yet finished, and the
//! committable position (the first unfinished offset). Shared by a listener's loop, the tasks that step on its
//! units, and its consumer context, which waits here on revoke for the units in flight of the revoked partitions.
//!
//! When messages finish out of order, the committable position stays at the first unfinished one; the offsets
//! finished after it travel with it as the commit's metadata ([`Stored::metadata`]), so that the partition's next
//! owner (or this listener after a restart) skips them instead of handling them again ([`Progress::resume_from`]).
//!
//! Pure bookkeeping, without Kafka: storing the positions it returns is the caller's.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The commit metadata's prefix: the offsets after the position that are finished, as ranges relative to it.
const METADATA_PREFIX: &str = "deimos:1:";
/// Brokers keep at most 4096 bytes of metadata per partition by default (`offset.metadata.max.bytes`); offsets
/// that do not fit are left out (handled again by the next owner).
const METADATA_MAX: usize = 4000;

/// A position to store: the offset of the next message to handle, and the commit metadata naming the offsets
/// after it that are finished already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) position: i64,
    pub(crate) metadata: String,
}

/// What a fetched message is to its partition.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// New: handle it, in this epoch of the partition.
    New { epoch: u64 },
    /// Not to handle: fetched before (librdkafka fetches again after a rebalance or a pause), or finished before
    /// the partition was assigned (named in the committed metadata). Store `store` (a commit may have been lost).
    Skip { store: Option<Stored> },
}

#[derive(Debug)]
struct Partition {
    epoch: u64,
    /// Offsets fetched and not yet dropped from the front, in order, with whether each is finished.
    offsets: VecDeque<(i64, bool)>,
    /// How many of `offsets` are finished (after the first unfinished one, since finished ones at the front are
    /// dropped): none in `partition` order, so the metadata is built only when there is something to say.
    done: usize,
    /// The offset after the last one fetched.
    next: Option<i64>,
    /// Units of this partition being stepped on.
    in_flight: usize,
    /// The last position returned to be stored.
    stored: Option<i64>,
    /// Offsets finished before the partition was assigned, from the committed metadata.
    finished_before: BTreeSet<i64>,
    /// Being forgotten: runs of messages stop at the next message.
    closing: bool,
}

impl Partition {
    fn new(epoch: u64, position: Option<i64>) -> Partition {
        Partition {
            epoch,
            offsets: VecDeque::new(),
            done: 0,
            next: None,
            in_flight: 0,
            // Where the partition starts: nothing to store until it moves on.
            stored: position,
            finished_before: BTreeSet::new(),
            closing: false,
        }
    }

    fn position(&self) -> Option<i64> {
        self.offsets.front().map(|(offset, _)| *offset).or(self.next)
    }

    /// Drops the finished offsets at the front.
    fn advance(&mut self) {
        while self.offsets.front().is_some_and(|(_, finished)| *finished) {
            self.offsets.pop_front();
            self.done -= 1;
        }
    }

    /// Marks `offset` finished (the first unfinished one, usually).
    fn finish(&mut self, offset: i64) {
        let at = match self.offsets.front() {
            Some((first, _)) if *first == offset => Some(0),
            _ => self.offsets.binary_search_by_key(&offset, |(o, _)| *o).ok(),
        };
        if let Some(entry) = at.and_then(|i| self.offsets.get_mut(i))
            && !entry.1
        {
            entry.1 = true;
            self.done += 1;
        }
    }

    /// The position with its metadata.
    fn stored(&self) -> Option<Stored> {
        let position = self.position()?;
        if self.done == 0 && self.finished_before.is_empty() {
            return Some(Stored {
                position,
                metadata: String::new(),
            });
        }
        let finished = self
            .offsets
            .iter()
            .filter(|(_, finished)| *finished)
            .map(|(offset, _)| *offset)
            .chain(self.finished_before.iter().copied().filter(|o| *o >= position));
        Some(Stored {
            position,
            metadata: encode(position, finished),
        })
    }

    /// The position to store now, if it moved.
    fn moved(&mut self) -> Option<Stored> {
        let stored = self.stored()?;
        if Some(stored.position) == self.stored && stored.metadata.is_empty() {
            return None;
        }
        self.stored = Some(stored.position);
        Some(stored)
    }
}

/// `deimos:1:` and the `finished` offsets (ascending, after `position`) as ranges relative to it: `2,4-9`.
fn encode(position: i64, finished: impl Iterator<Item = i64>) -> String {
    let mut out = String::new();
    let mut range: Option<(i64, i64)> = None;
    let push = |out: &mut String, (a, b): (i64, i64)| {
        if out.len() >= METADATA_MAX {
            return;
        }
        out.push_str(if out.is_empty() { METADATA_PREFIX } else { "," });
        let _ = if a == b {
            write!(out, "{}", a - position)
        } else {
            write!(out, "{}-{}", a - position, b - position)
        };
    };
    for offset in finished {
        range = match range {
            Some((a, b)) if offset == b + 1 => Some((a, offset)),
            Some(done) => {
                push(&mut out, done);
                Some((offset, offset))
            }
            None => Some((offset, offset)),
        };
    }
    if let Some(done) = range {
        push(&mut out, done);
    }
    out
}

/// The offsets a commit's metadata names as finished (nothing when it is not ours).
pub(crate) fn decode(position: i64, metadata: &str) -> BTreeSet<i64> {
    let Some(ranges) = metadata.strip_prefix(METADATA_PREFIX) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for item in ranges.split(',') {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>())
            && (0..=b).contains(&a)
            && b - a < 1_000_000
        {
            out.extend((a..=b).map(|d| position.saturating_add(d)));
        }
    }
    out
}

#[derive(Debug, Default)]
struct Inner {
    partitions: HashMap<i32, Partition>,
    last_epoch: u64,
    /// The listener stops: runs of messages stop at the next message.
    stopping: bool,
}

/// The progress of one listener's partitions.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    inner: Mutex<Inner>,
    settled: Condvar,
    /// Counts the changes a run of messages must see at once (the listener stops, a partition is forgotten).
    changes: AtomicU64,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a fetched message.
    pub(crate) fn fetched(&self, partition: i32, offset: i64) -> Fetched {
        let mut inner = self.lock();
        let Inner {
            partitions, last_epoch, ..
        } = &mut *inner;
        let p = partitions.entry(partition).or_insert_with(|| {
            *last_epoch += 1;
            Partition::new(*last_epoch, Some(offset))
        });
        if p.next.is_some_and(|next| offset < next) {
            return Fetched::Skip { store: p.stored() };
        }
        p.next = Some(offset.saturating_add(1));
        if p.finished_before.remove(&offset) {
            p.offsets.push_back((offset, true));
            p.done += 1;
            p.advance();
            return Fetched::Skip { store: p.moved() };
        }
        p.offsets.push_back((offset, false));
        Fetched::New { epoch: p.epoch }
    }

    /// A partition just assigned, whose committed position is `position` with `metadata`: the offsets the
    /// metadata names as finished are skipped when fetched.
    pub(crate) fn resume_from(&self, partition: i32, position: i64, metadata: &str) -> usize {
        let finished = decode(position, metadata);
        if finished.is_empty() {
            return 0;
        }
        let mut inner = self.lock();
        inner.last_epoch += 1;
        let mut p = Partition::new(inner.last_epoch, Some(position));
        let count = finished.len();
        p.finished_before = finished;
        inner.partitions.insert(partition, p);
        count
    }

    /// A unit of `partition` (in `epoch`) starts a step.
    pub(crate) fn started(&self, partition: i32, epoch: u64) {
        if let Some(p) = self.lock().partitions.get_mut(&partition).filter(|p| p.epoch == epoch) {
            p.in_flight += 1;
        }
    }

    /// Messages of `partition` (in `epoch`) finished. Returns whether a run of messages may go on with the next
    /// one (the partition is still assigned and the listener not stopping). The position is stored when the
    /// run [`ended`](Self::ended).
    pub(crate) fn finished(&self, partition: i32, epoch: u64, offsets: impl Iterator<Item = i64>) -> bool {
        let mut inner = self.lock();
        let stopping = inner.stopping;
        let Some(p) = inner.partitions.get_mut(&partition).filter(|p| p.epoch == epoch) else {
            return false;
        };
        for offset in offsets {
            p.finish(offset);
        }
        p.advance();
        !p.closing && !stopping
    }

    /// Calls `store` with the partition's committable position when it moved (a long run stores as it goes).
    pub(crate) fn flush(&self, partition: i32, epoch: u64, store: impl FnOnce(Stored)) {
        let mut inner = self.lock();
        if let Some(p) = inner.partitions.get_mut(&partition).filter(|p| p.epoch == epoch)
            && let Some(stored) = p.moved()
        {
            store(stored);
        }
    }

    /// A unit (or run of units) of `partition` (in `epoch`) that started is no longer being stepped on: calls
    /// `store` with the partition's committable position when it moved (or offsets after it finished), with the
    /// guard held so that positions are stored in order.
    pub(crate) fn ended(&self, partition: i32, epoch: u64, store: impl FnOnce(Stored)) {
        let mut inner = self.lock();
        if let Some(p) = inner.partitions.get_mut(&partition).filter(|p| p.epoch == epoch) {
            if let Some(stored) = p.moved() {
                store(stored);
            }
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0 {
                self.settled.notify_all();
            }
        }
    }

    /// The listener stops: runs of messages end at their next message.
    pub(crate) fn stop_runs(&self) {
        self.lock().stopping = true;
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes since the start that a run of messages must see at once (cheap to read): while it stays the same,
    /// a run may mark its finished messages a few at a time.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Forgets `partitions` (revoked, or sought elsewhere): results of their units in flight are dropped, and
    /// their next messages start a new epoch. First waits up to `drain` for their units in flight to end (when
    /// given: the caller may block), so what they finish is stored before the partitions move. Returns how many
    /// units were still in flight when it gave up waiting.
    pub(crate) fn forget(&self, partitions: &[i32], drain: Option<Duration>) -> usize {
        let mut inner = self.lock();
        for p in partitions {
            if let Some(p) = inner.partitions.get_mut(p) {
                p.closing = true;
            }
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
        let in_flight = |inner: &Inner| -> usize {
            partitions
                .iter()
                .filter_map(|p| inner.partitions.get(p))
                .map(|p| p.in_flight)
                .sum()
        };
        // A listener that stops has stopped its runs, or abandoned them: nothing to wait for.
        if let Some(drain) = drain.filter(|_| !inner.stopping) {
            let deadline = Instant::now() + drain;
            while in_flight(&inner) > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                inner = self
                    .settled
                    .wait_timeout(inner, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let abandoned = in_flight(&inner);
        for p in partitions {
            inner.partitions.remove(p);
        }
        abandoned
    }

    /// Units in flight over all partitions.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().partitions.values().map(|p| p.in_flight).sum()
    }

    /// Per partition, the committable position (what the committed offset should be) with its metadata.
    pub(crate) fn positions(&self) -> BTreeMap<i32, Stored> {
        self.lock()
            .partitions
            .iter()
            .filter_map(|(partition, p)| p.stored().map(|stored| (*partition, stored)))
            .collect()
    }

    /// The current epoch of `partition`, if it has one.
    pub(crate) fn epoch(&self, partition: i32) -> Option<u64> {
        self.lock().partitions.get(&partition).map(|p| p.epoch)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn epoch(f: Fetched) -> u64 {
        match f {
            Fetched::New { epoch } => epoch,
            Fetched::Skip { .. } => panic!("not new"),
        }
    }

    fn end(progress: &Progress, partition: i32, epoch: u64, offsets: &[i64]) -> Option<i64> {
        end_stored(progress, partition, epoch, offsets).map(|s| s.position)
    }

    fn end_stored(progress: &Progress, partition: i32, epoch: u64, offsets: &[i64]) -> Option<Stored> {
        let mut stored = None;
        progress.finished(partition, epoch, offsets.iter().copied());
        progress.ended(partition, epoch, |s| stored = Some(s));
        stored
    }

    #[test]
    fn the_position_never_passes_an_unfinished_offset() {
        let progress = Progress::default();
        let e = epoch(progress.fetched(0, 10));
        for o in [11, 13, 14] {
            progress.fetched(0, o);
        }
        for _ in 0..4 {
            progress.started(0, e);
        }
        assert_eq!(
            end_stored(&progress, 0, e, &[13]),
            Some(Stored {
                position: 10,
                metadata: "deimos:1:3".into()
            }),
            "10 is not finished: the position stays, with 13 named as finished"
        );
        assert_eq!(end(&progress, 0, e, &[11]), Some(10));
        assert_eq!(
            end(&progress, 0, e, &[10]),
            Some(14),
            "10, 11 and 13 are finished; 14 is next"
        );
        assert_eq!(end(&progress, 0, e, &[14]), Some(15));
        assert_eq!(progress.positions()[&0].position, 15);
        assert_eq!(progress.in_flight(), 0);
        assert!(matches!(
            progress.fetched(0, 13),
            Fetched::Skip {
                store: Some(Stored { position: 15, .. })
            }
        ));
    }

    #[test]
    fn results_of_a_forgotten_epoch_are_dropped() {
        let progress = Progress::default();
        let old = epoch(progress.fetched(0, 1));
        progress.started(0, old);
        assert_eq!(progress.forget(&[0], None), 1, "one unit abandoned");
        let new = epoch(progress.fetched(0, 1));
        assert_ne!(old, new);
        assert_eq!(end(&progress, 0, old, &[1]), None);
        assert_eq!(progress.positions()[&0].position, 1);
    }

    #[test]
    fn forgetting_waits_for_units_in_flight() {
        let progress = std::sync::Arc::new(Progress::default());
        let e = epoch(progress.fetched(3, 0));
        progress.started(3, e);
        let ending = std::sync::Arc::clone(&progress);
        let stored = std::sync::Arc::new(Mutex::new(None));
        let stored_by_task = std::sync::Arc::clone(&stored);
        let task = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let go_on = ending.finished(3, e, std::iter::once(0));
            assert!(!go_on, "the partition is being forgotten: the run stops");
            ending.ended(3, e, |s| {
                *stored_by_task.lock().unwrap() = Some(s.position);
            });
        });
        assert_eq!(progress.forget(&[3], Some(Duration::from_secs(5))), 0);
        assert_eq!(
            *stored.lock().unwrap(),
            Some(1),
            "stored before the partition was forgotten"
        );
        task.join().unwrap();
    }

    #[test]
    fn the_next_owner_skips_what_the_metadata_names_as_finished() {
        assert_eq!(
            encode(100, [101, 102, 103, 105, 108, 109].into_iter()),
            "deimos:1:1-3,5,8-9"
        );
        assert_eq!(
            decode(100, "deimos:1:1-3,5,8-9"),
            BTreeSet::from([101, 102, 103, 105, 108, 109])
        );
        assert!(decode(100, "someone else's").is_empty());
        assert!(decode(100, "deimos:1:9-2,x,-5").is_empty(), "nonsense is ignored");

        let next_owner = Progress::default();
        assert_eq!(next_owner.resume_from(0, 100, "deimos:1:1-2"), 2);
        let e = epoch(next_owner.fetched(0, 100));
        let stored = |f: Fetched| match f {
            Fetched::Skip { store } => store.map(|s| s.position),
            Fetched::New { .. } => panic!("handled again"),
        };
        assert_eq!(
            stored(next_owner.fetched(0, 101)),
            Some(100),
            "skipped; 100 is not finished yet"
        );
        assert_eq!(stored(next_owner.fetched(0, 102)), Some(100));
        assert_eq!(epoch(next_owner.fetched(0, 103)), e, "103 is new");
        next_owner.started(0, e);
        assert_eq!(
            end(&next_owner, 0, e, &[100]),
            Some(103),
            "100 done: 101 and 102 were done before"
        );
    }
}
