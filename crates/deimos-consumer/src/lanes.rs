//! Scheduling: which fetched messages may be handled now, given the listener's [`ProcessingOrder`].
//!
//! Each partition has a lane; a lane has slots, each an ordered queue whose units (a message, or a batch) are
//! stepped on one at a time: the whole partition is one slot (`partition` order), each key is one (`key` order,
//! messages without a key sharing their partition's), or each message is one (`unordered`). Units of different
//! slots run at the same time. A unit that must wait (a backoff) stays first in its slot, holding only that
//! slot; one that can never finish stops its slot.
//!
//! Pure bookkeeping, without Kafka: the loop in `listen` feeds it messages and step results, and asks it for the
//! next unit to start, when to wake up, and which partitions to pause (a full buffer, a waiting partition, the
//! listener's buffer budget spent, or paused from a [`ListenerControl`](crate::ListenerControl)).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::listener::ProcessingOrder;
use crate::process::{Hold, Raw, Step, UnitState};

/// How units are cut from a slot's messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cut {
    /// One message per unit.
    Message,
    /// Up to `max_size` messages, once that many are there or the oldest has waited `max_wait`.
    Batch { max_size: usize, max_wait: Duration },
}

/// A slot of a lane: the partition, one key's hash, or one message's offset.
pub(crate) type SlotId = u64;
/// The slot of the messages without a key, in `key` order.
const KEYLESS: SlotId = u64::MAX;

/// At most this many messages of one slot are taken at once, to be handled one after another by one task: a
/// task per message would cost a wake-up of the loop per message.
pub(crate) const RUN_MAX: usize = 64;

/// Work taken out of the lanes to be stepped on: a batch, or a run of messages of one slot handled one after
/// another (each its own unit). Its messages and state travel with it; it comes back with the messages not
/// finished, the first of them the one `state` is about.
pub(crate) struct Unit {
    pub(crate) partition: i32,
    pub(crate) slot: SlotId,
    /// The partition's assignment (or seek) the unit belongs to: results of an older one are dropped.
    pub(crate) epoch: u64,
    pub(crate) messages: Vec<Raw>,
    pub(crate) state: UnitState,
    /// The messages are units of their own (message delivery), not one batch.
    pub(crate) each: bool,
}

/// A unit waiting between two steps.
struct Held {
    unit: Unit,
    wake_at: Instant,
    hold: Hold,
}

#[derive(Default)]
struct Slot {
    queue: VecDeque<Raw>,
    /// When the oldest queued message arrived (batch deadlines).
    oldest_at: Option<Instant>,
    /// A unit of this slot is being stepped on.
    busy: bool,
    /// A unit that waits, first in line.
    held: Option<Held>,
    /// Why the slot stopped (a unit that can never finish): nothing more of it is handled.
    stopped: Option<String>,
    /// In the ready queue.
    queued: bool,
}

impl Slot {
    fn idle(&self) -> bool {
        self.queue.is_empty() && !self.busy && self.held.is_none() && self.stopped.is_none()
    }
}

struct Lane {
    epoch: u64,
    slots: HashMap<SlotId, Slot>,
    /// Messages queued or held (not in flight).
    buffered: usize,
    bytes: usize,
    /// Paused from a control handle.
    paused: bool,
}

/// The lanes of one listener.
pub(crate) struct Lanes {
    cut: Cut,
    order: ProcessingOrder,
    lanes: HashMap<i32, Lane>,
    /// Slots that may have a unit to start, oldest first.
    ready: VecDeque<(i32, SlotId)>,
    /// When slots become ready by themselves (a backoff ends, a batch is due); stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, i32, SlotId)>>,
    /// Messages (and their bytes) buffered over all lanes.
    buffered: usize,
    bytes: usize,
    /// Every partition paused because the buffer stayed full (set by the loop).
    throttled: bool,
    in_flight: usize,
    /// Every partition paused from a control handle, those assigned later too.
    all_paused: bool,
    hasher: BuildHasherDefault<DefaultHasher>,
}

/// What a finished step changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The unit finished (its offsets are marked done by the step's task).
    Finished,
    /// The unit waits.
    Waiting,
    /// The slot stopped.
    Stopped,
    /// The partition was revoked or sought meanwhile: nothing to do.
    Gone,
}

impl Lanes {
    /// Lanes cutting units with `cut`, in `order`.
    pub(crate) fn new(cut: Cut, order: ProcessingOrder) -> Lanes {
        Lanes {
            cut,
            order,
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            buffered: 0,
            bytes: 0,
            throttled: false,
            in_flight: 0,
            all_paused: false,
            hasher: BuildHasherDefault::default(),
        }
    }

    fn slot_of(&self, message: &Raw) -> SlotId {
        match self.order {
            ProcessingOrder::Partition => 0,
            ProcessingOrder::Key => match &message.key {
                Some(key) => self.hasher.hash_one(&key[..]) & !(1 << 63),
                None => KEYLESS,
            },
            ProcessingOrder::Unordered => message.offset.cast_unsigned(),
        }
    }

    /// Adds a fetched message (new to this `epoch` of its partition) to its slot.
    pub(crate) fn push(&mut self, message: Raw, epoch: u64, now: Instant) {
        let partition = message.partition;
        let slot_id = self.slot_of(&message);
        let all_paused = self.all_paused;
        let lane = self.lanes.entry(partition).or_insert_with(|| Lane {
            epoch,
            slots: HashMap::new(),
            buffered: 0,
            bytes: 0,
            paused: all_paused,
        });
        if lane.epoch != epoch {
            // Messages of an earlier assignment, or from before a seek: forgotten.
            self.buffered -= lane.buffered;
            self.bytes -= lane.bytes;
            *lane = Lane {
                epoch,
                slots: HashMap::new(),
                buffered: 0,
                bytes: 0,
                paused: lane.paused,
            };
        }
        let size = message.size();
        lane.buffered += 1;
        lane.bytes += size;
        self.buffered += 1;
        self.bytes += size;
        let slot = lane.slots.entry(slot_id).or_default();
        if slot.queue.is_empty() {
            slot.oldest_at = Some(now);
            if let Cut::Batch { max_wait, .. } = self.cut {
                self.timers.push(Reverse((now + max_wait, partition, slot_id)));
            }
        }
        slot.queue.push_back(message);
        let full = match self.cut {
            Cut::Message => true,
            Cut::Batch { max_size, .. } => slot.queue.len() >= max_size,
        };
        if full && !slot.queued && !slot.busy && slot.held.is_none() && slot.stopped.is_none() && !lane.paused {
            slot.queued = true;
            self.ready.push_back((partition, slot_id));
        }
    }

    /// Whether `slot` has a unit to start at `now`.
    fn startable(cut: Cut, slot: &Slot, now: Instant) -> bool {
        if slot.busy || slot.stopped.is_some() {
            return false;
        }
        if let Some(held) = &slot.held {
            return held.wake_at <= now;
        }
        match cut {
            Cut::Message => !slot.queue.is_empty(),
            Cut::Batch { max_size, max_wait } => {
                slot.queue.len() >= max_size
                    || slot
                        .oldest_at
                        .is_some_and(|at| !slot.queue.is_empty() && at + max_wait <= now)
            }
        }
    }

    /// The next unit to step on, if one can start at `now`; it counts as in flight until [`complete`](Self::complete).
    pub(crate) fn next_unit(&mut self, now: Instant) -> Option<Unit> {
        while let Some(Reverse((at, partition, slot_id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(lane) = self.lanes.get_mut(&partition)
                && !lane.paused
                && let Some(slot) = lane.slots.get_mut(&slot_id)
                && !slot.queued
                && Self::startable(self.cut, slot, now)
            {
                slot.queued = true;
                self.ready.push_back((partition, slot_id));
            }
        }
        while let Some((partition, slot_id)) = self.ready.pop_front() {
            let cut = self.cut;
            let Some(lane) = self.lanes.get_mut(&partition) else {
                continue;
            };
            let Some(slot) = lane.slots.get_mut(&slot_id) else {
                continue;
            };
            slot.queued = false;
            if lane.paused || !Self::startable(cut, slot, now) {
                continue;
            }
            let unit = match slot.held.take() {
                Some(held) => held.unit,
                None => {
                    let len = match cut {
                        Cut::Message => RUN_MAX,
                        Cut::Batch { max_size, .. } => max_size.max(1),
                    }
                    .min(slot.queue.len());
                    let messages: Vec<Raw> = slot.queue.drain(..len).collect();
                    slot.oldest_at = (!slot.queue.is_empty()).then_some(now);
                    Unit {
                        partition,
                        slot: slot_id,
                        epoch: lane.epoch,
                        messages,
                        state: UnitState::default(),
                        each: matches!(cut, Cut::Message),
                    }
                }
            };
            slot.busy = true;
            let (count, bytes) = (unit.messages.len(), unit.messages.iter().map(Raw::size).sum::<usize>());
            lane.buffered -= count;
            lane.bytes = lane.bytes.saturating_sub(bytes);
            self.buffered -= count;
            self.bytes = self.bytes.saturating_sub(bytes);
            self.in_flight += 1;
            return Some(unit);
        }
        None
    }

    /// Records how a step on `unit` ended; a waiting unit comes back into its slot.
    pub(crate) fn complete(&mut self, unit: Unit, step: &Step, now: Instant) -> Applied {
        self.in_flight = self.in_flight.saturating_sub(1);
        let (partition, slot_id) = (unit.partition, unit.slot);
        let Some(lane) = self.lanes.get_mut(&partition).filter(|lane| lane.epoch == unit.epoch) else {
            return Applied::Gone;
        };
        let Some(slot) = lane.slots.get_mut(&slot_id) else {
            return Applied::Gone;
        };
        slot.busy = false;
        // What comes back unfinished goes back in front of the slot's queue, in order: the whole batch, or the
        // messages of a run from the one that must wait (held apart) or was not reached.
        let Unit {
            mut messages,
            state,
            each,
            ..
        } = unit;
        let held = match step {
            Step::Wait { .. } if each && !messages.is_empty() => vec![messages.remove(0)],
            Step::Wait { .. } => std::mem::take(&mut messages),
            _ => Vec::new(),
        };
        let count = messages.len() + held.len();
        let bytes = messages.iter().chain(&held).map(Raw::size).sum::<usize>();
        lane.buffered += count;
        lane.bytes += bytes;
        self.buffered += count;
        self.bytes += bytes;
        for m in messages.into_iter().rev() {
            slot.queue.push_front(m);
        }
        let applied = match step {
            Step::Done(_) => Applied::Finished,
            Step::Wait { delay, hold } => {
                let wake_at = now + *delay;
                slot.held = Some(Held {
                    unit: Unit {
                        partition,
                        slot: slot_id,
                        epoch: lane.epoch,
                        messages: held,
                        state,
                        each,
                    },
                    wake_at,
                    hold: *hold,
                });
                self.timers.push(Reverse((wake_at, partition, slot_id)));
                return Applied::Waiting;
            }
            Step::Stop(why) => {
                slot.stopped = Some(why.clone());
                Applied::Stopped
            }
        };
        if slot.idle() {
            lane.slots.remove(&slot_id);
        } else if !slot.queued && !lane.paused && Self::startable(self.cut, slot, now) {
            slot.queued = true;
            self.ready.push_back((partition, slot_id));
        } else if let (Cut::Batch { max_wait, .. }, Some(at)) = (self.cut, slot.oldest_at) {
            self.timers.push(Reverse((at + max_wait, partition, slot_id)));
        }
        applied
    }

    /// Forgets a partition: revoked, or sought to another offset. Its buffered messages and waiting units are
    /// dropped (their offsets were not stored); units in flight come back as [`Applied::Gone`].
    pub(crate) fn forget(&mut self, partition: i32) {
        if let Some(lane) = self.lanes.remove(&partition) {
            self.buffered -= lane.buffered;
            self.bytes = self.bytes.saturating_sub(lane.bytes);
        }
    }

    /// The epoch of `partition`'s lane, if it has one.
    pub(crate) fn epoch(&self, partition: i32) -> Option<u64> {
        self.lanes.get(&partition).map(|lane| lane.epoch)
    }

    /// Pauses or resumes one partition (or all, and those assigned later) on behalf of a control handle.
    pub(crate) fn set_paused(&mut self, partition: Option<i32>, paused: bool) {
        if partition.is_none() {
            self.all_paused = paused;
        }
        let now = Instant::now();
        for (p, lane) in &mut self.lanes {
            if partition.is_some_and(|only| only != *p) {
                continue;
            }
            lane.paused = paused;
            if !paused {
                for (slot_id, slot) in &mut lane.slots {
                    if !slot.queued && Self::startable(self.cut, slot, now) {
                        slot.queued = true;
                        self.ready.push_back((*p, *slot_id));
                    }
                }
            }
        }
    }

    /// When the next slot becomes ready by itself (a backoff ends, a batch is due).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pauses every partition (`true`: the listener's buffer stayed full) or lets them fetch again.
    pub(crate) fn set_throttled(&mut self, yes: bool) {
        self.throttled = yes;
    }

    /// Whether every partition is paused because the buffer stayed full.
    pub(crate) fn throttled(&self) -> bool {
        self.throttled
    }

    /// The partitions to pause now: paused from a control handle, waiting or stopped in `partition` order, or all
    /// of them while throttled.
    pub(crate) fn pauses_wanted(&self) -> BTreeSet<i32> {
        let whole_partition = self.order == ProcessingOrder::Partition;
        self.lanes
            .iter()
            .filter(|(_, lane)| {
                self.throttled
                    || lane.paused
                    || (whole_partition && lane.slots.values().any(|s| s.held.is_some() || s.stopped.is_some()))
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// Per reason, how many partitions have a slot held for it.
    pub(crate) fn held(&self) -> BTreeMap<Hold, usize> {
        let mut out = BTreeMap::new();
        for lane in self.lanes.values() {
            let mut reasons = BTreeSet::new();
            for slot in lane.slots.values() {
                if slot.stopped.is_some() {
                    reasons.insert(Hold::Stopped);
                } else if let Some(held) = &slot.held {
                    reasons.insert(held.hold);
                }
            }
            for hold in reasons {
                *out.entry(hold).or_insert(0) += 1;
            }
        }
        out
    }

    /// Partitions with a unit waiting to be retried, in order.
    pub(crate) fn waiting_partitions(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .lanes
            .iter()
            .filter(|(_, lane)| lane.slots.values().any(|s| s.held.is_some()))
            .map(|(p, _)| *p)
            .collect();
        out.sort_unstable();
        out
    }

    /// Partitions with a stopped slot, and why (the first reason found).
    pub(crate) fn stopped(&self) -> BTreeMap<i32, String> {
        self.lanes
            .iter()
            .filter_map(|(p, lane)| lane.slots.values().find_map(|s| s.stopped.clone()).map(|why| (*p, why)))
            .collect()
    }

    /// Messages buffered over all lanes (not yet handled, not in flight).
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Whether `partition` has messages buffered.
    pub(crate) fn has_buffered(&self, partition: i32) -> bool {
        self.lanes.get(&partition).is_some_and(|lane| lane.buffered > 0)
    }

    /// Bytes buffered over all lanes.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Units being stepped on.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::handler::Headers;
    use crate::process::Outcome;
    use bytes::Bytes;

    fn raw(partition: i32, offset: i64) -> Raw {
        keyed(partition, offset, None)
    }

    fn keyed(partition: i32, offset: i64, key: Option<&str>) -> Raw {
        Raw {
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::from(vec![0; 10])),
            headers: Headers::new(),
            partition,
            offset,
            timestamp: None,
        }
    }

    fn done() -> Step {
        Step::Done(Outcome::Handled { attempts: 1 })
    }

    /// Completes `unit` as its task does when every message of it was handled.
    fn finish(lanes: &mut Lanes, mut unit: Unit, now: Instant) -> Applied {
        unit.messages.clear();
        lanes.complete(unit, &done(), now)
    }

    fn offsets(unit: &Unit) -> Vec<i64> {
        unit.messages.iter().map(|m| m.offset).collect()
    }

    #[test]
    fn partitions_run_side_by_side_each_in_order() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message, ProcessingOrder::Partition);
        for (p, o) in [(0, 1), (0, 2), (1, 7), (1, 8)] {
            lanes.push(raw(p, o), 1, now);
        }
        let a = lanes.next_unit(now).unwrap();
        let b = lanes.next_unit(now).unwrap();
        assert_eq!(
            (a.partition, offsets(&a)),
            (0, vec![1, 2]),
            "a run of the partition's messages, in order"
        );
        assert_eq!((b.partition, offsets(&b)), (1, vec![7, 8]));
        assert!(lanes.next_unit(now).is_none(), "one run per partition at a time");
        assert_eq!(lanes.in_flight(), 2);
        lanes.push(raw(1, 9), 1, now);
        assert!(lanes.next_unit(now).is_none(), "partition 1 is busy");
        assert_eq!(finish(&mut lanes, b, now), Applied::Finished);
        assert_eq!(offsets(&lanes.next_unit(now).unwrap()), [9]);
        // A run cut short (the listener stops, the partition is revoked) puts the rest back, in order.
        let mut cut_short = a;
        cut_short.messages.remove(0);
        assert_eq!(lanes.complete(cut_short, &done(), now), Applied::Finished);
        assert_eq!(offsets(&lanes.next_unit(now).unwrap()), [2]);
    }

    #[test]
    fn keys_run_side_by_side_each_in_order_and_keyless_messages_share_a_slot() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message, ProcessingOrder::Key);
        for (o, k) in [(0, Some("a")), (1, Some("b")), (2, Some("a")), (3, None), (4, None)] {
            lanes.push(keyed(0, o, k), 1, now);
        }
        let started: Vec<Unit> = std::iter::from_fn(|| lanes.next_unit(now)).collect();
        let runs: Vec<Vec<i64>> = started.iter().map(offsets).collect();
        assert_eq!(
            runs,
            [vec![0, 2], vec![1], vec![3, 4]],
            "a, b and the keyless slot each run in order"
        );
        lanes.push(keyed(0, 5, Some("b")), 1, now);
        assert!(lanes.next_unit(now).is_none(), "b is busy");
        for unit in started {
            finish(&mut lanes, unit, now);
        }
        assert_eq!(offsets(&lanes.next_unit(now).unwrap()), [5]);
    }

    #[test]
    fn unordered_messages_all_start_at_once() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message, ProcessingOrder::Unordered);
        for o in 0..5 {
            lanes.push(keyed(0, o, Some("same")), 1, now);
        }
        assert_eq!(std::iter::from_fn(|| lanes.next_unit(now)).count(), 5);
    }

    #[test]
    fn a_waiting_key_holds_only_itself_and_a_waiting_partition_is_paused() {
        let now = Instant::now();
        let wait = Step::Wait {
            delay: Duration::from_secs(1),
            hold: Hold::Transient,
        };
        let mut by_key = Lanes::new(Cut::Message, ProcessingOrder::Key);
        for (o, k) in [(0, "a"), (1, "a"), (2, "b")] {
            by_key.push(keyed(0, o, Some(k)), 1, now);
        }
        let a = by_key.next_unit(now).unwrap();
        let b = by_key.next_unit(now).unwrap();
        assert_eq!(by_key.complete(a, &wait, now), Applied::Waiting);
        finish(&mut by_key, b, now);
        assert!(by_key.next_unit(now).is_none(), "key a waits; its next message too");
        assert!(by_key.pauses_wanted().is_empty(), "in key order the partition goes on");
        assert_eq!(by_key.held().get(&Hold::Transient), Some(&1));
        let later = now + Duration::from_secs(1);
        assert_eq!(by_key.next_wake(), Some(later));
        let again = by_key.next_unit(later).unwrap();
        assert_eq!(offsets(&again), [0], "the same message again, alone");
        finish(&mut by_key, again, later);
        assert_eq!(
            offsets(&by_key.next_unit(later).unwrap()),
            [1],
            "then the rest of the key"
        );

        let mut by_partition = Lanes::new(Cut::Message, ProcessingOrder::Partition);
        by_partition.push(raw(0, 1), 1, now);
        by_partition.push(raw(1, 1), 1, now);
        let p0 = by_partition.next_unit(now).unwrap();
        by_partition.complete(p0, &wait, now);
        assert_eq!(by_partition.pauses_wanted(), BTreeSet::from([0]));
        assert_eq!(by_partition.next_unit(now).unwrap().partition, 1);
    }

    #[test]
    fn batches_are_cut_when_full_or_due_and_stopped_slots_stay_stopped() {
        let now = Instant::now();
        let mut lanes = Lanes::new(
            Cut::Batch {
                max_size: 3,
                max_wait: Duration::from_millis(100),
            },
            ProcessingOrder::Partition,
        );
        for o in 0..4 {
            lanes.push(raw(0, o), 1, now);
        }
        lanes.push(raw(1, 0), 1, now);
        let full = lanes.next_unit(now).unwrap();
        assert_eq!(offsets(&full), [0, 1, 2]);
        assert!(lanes.next_unit(now).is_none(), "neither full nor due");
        finish(&mut lanes, full, now);
        let due = now + Duration::from_millis(100);
        assert_eq!(lanes.next_wake(), Some(due));
        let first_due = lanes.next_unit(due).unwrap();
        let second_due = lanes.next_unit(due).unwrap();
        assert_eq!(
            BTreeSet::from([first_due.partition, second_due.partition]),
            BTreeSet::from([0, 1])
        );
        let p = first_due.partition;
        assert_eq!(
            lanes.complete(first_due, &Step::Stop("no".into()), due),
            Applied::Stopped
        );
        assert!(lanes.pauses_wanted().contains(&p));
        assert_eq!(lanes.stopped().get(&p).map(String::as_str), Some("no"));
        lanes.forget(p);
        assert!(lanes.held().is_empty());
    }

    #[test]
    fn throttling_pauses_every_partition_and_the_buffer_is_counted() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message, ProcessingOrder::Unordered);
        lanes.push(raw(0, 0), 1, now);
        lanes.push(raw(1, 0), 1, now);
        assert_eq!((lanes.buffered(), lanes.buffered_bytes()), (2, 2 * raw(0, 0).size()));
        assert!(lanes.pauses_wanted().is_empty());
        lanes.set_throttled(true);
        assert_eq!(lanes.pauses_wanted(), BTreeSet::from([0, 1]));
        lanes.set_throttled(false);
        let unit = lanes.next_unit(now).unwrap();
        assert_eq!(lanes.buffered(), 1);
        finish(&mut lanes, unit, now);
    }

    #[test]
    fn a_new_epoch_forgets_what_was_buffered_and_results_of_the_old_one_are_gone() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message, ProcessingOrder::Partition);
        lanes.push(raw(0, 1), 1, now);
        lanes.push(raw(0, 2), 1, now);
        let old = lanes.next_unit(now).unwrap();
        lanes.push(raw(0, 1), 2, now);
        assert_eq!(lanes.buffered(), 1, "offset 2 of epoch 1 is forgotten");
        assert_eq!(finish(&mut lanes, old, now), Applied::Gone);
        assert_eq!(offsets(&lanes.next_unit(now).unwrap()), [1]);
    }

    #[test]
    fn a_paused_partition_starts_nothing_until_resumed() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message, ProcessingOrder::Partition);
        lanes.push(raw(0, 1), 1, now);
        lanes.set_paused(Some(0), true);
        assert!(lanes.next_unit(now).is_none());
        assert_eq!(lanes.pauses_wanted(), BTreeSet::from([0]));
        lanes.set_paused(None, false);
        assert_eq!(offsets(&lanes.next_unit(now).unwrap()), [1]);
    }
}
