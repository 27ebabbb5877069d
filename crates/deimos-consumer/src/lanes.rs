//! Scheduling: one lane per assigned partition, holding its fetched messages in offset order, the unit being
//! worked on (a message, or a batch), and whether the partition waits (a backoff) or is stopped.
//!
//! Pure bookkeeping, without Kafka: the loop in `listen` feeds it messages and step results, and asks it which
//! partition to work on next, when to wake up, and which partitions to pause or resume.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::process::{Hold, Raw, Step, UnitState};

/// A partition's lane buffers at most this many messages before the partition is paused.
pub(crate) const MAX_BUFFERED_MESSAGES: usize = 2_000;
/// ... or this many bytes.
pub(crate) const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// How units are cut from a lane's messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cut {
    /// One message per unit.
    Message,
    /// Up to `max_size` messages, once that many are there or the oldest has waited `max_wait`.
    Batch { max_size: usize, max_wait: Duration },
}

/// The unit a lane is working on: its first `len` messages.
struct Current {
    len: usize,
    state: UnitState,
    /// When it may take its next step (`None`: now).
    wake_at: Option<Instant>,
    hold: Option<Hold>,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Raw>,
    bytes: usize,
    /// When the oldest message not yet in a unit arrived (batch deadlines).
    oldest_at: Option<Instant>,
    current: Option<Current>,
    /// Why the partition stopped (a unit that can never finish); nothing more is worked on.
    stopped: Option<String>,
    /// The last offset handled (or given up on) in this lane, to skip messages fetched again.
    last_done: Option<i64>,
}

/// What a pushed message was.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// Already handled by this lane (fetched again after a rebalance): its offset can be stored again.
    AlreadyDone,
    /// Already waiting in this lane (fetched again after a pause): dropped, nothing to store.
    AlreadyQueued,
}

/// The lanes of one listener.
pub(crate) struct Lanes {
    cut: Cut,
    lanes: BTreeMap<i32, Lane>,
    /// The partition worked on last, for round-robin.
    last_served: Option<i32>,
}

/// What to store and what changed after a step.
#[derive(Debug, PartialEq)]
pub(crate) enum Applied {
    /// The unit finished: store `last_offset + 1`.
    Finished { last_offset: i64 },
    /// The unit waits.
    Waiting,
    /// The partition stopped.
    Stopped,
    /// The partition was revoked while the step ran: nothing to store.
    Gone,
}

impl Lanes {
    pub(crate) fn new(cut: Cut) -> Lanes {
        Lanes {
            cut,
            lanes: BTreeMap::new(),
            last_served: None,
        }
    }

    /// Adds a fetched message to its partition's lane.
    pub(crate) fn push(&mut self, message: Raw, now: Instant) -> Pushed {
        let lane = self.lanes.entry(message.partition).or_default();
        if lane.last_done.is_some_and(|done| message.offset <= done) {
            return Pushed::AlreadyDone;
        }
        if lane.queue.back().is_some_and(|last| message.offset <= last.offset) {
            return Pushed::AlreadyQueued;
        }
        lane.bytes += message.size();
        if lane.oldest_at.is_none() {
            lane.oldest_at = Some(now);
        }
        lane.queue.push_back(message);
        Pushed::Queued
    }

    /// Forgets revoked partitions: their buffered messages and any unit in progress (its offsets were not
    /// stored, so the partition's next owner handles it).
    pub(crate) fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.lanes.remove(p);
        }
    }

    /// The next partition to take a step on, round-robin, if any is ready at `now`.
    pub(crate) fn next_ready(&mut self, now: Instant) -> Option<i32> {
        let start = self.last_served;
        let ready = |(p, lane): (&i32, &Lane)| self.is_ready(lane, now).then_some(*p);
        let after = start.map_or(Some(i32::MIN), |s| s.checked_add(1));
        let found = after
            .and_then(|a| self.lanes.range(a..).find_map(ready))
            .or_else(|| self.lanes.iter().find_map(ready));
        if found.is_some() {
            self.last_served = found;
        }
        found
    }

    fn is_ready(&self, lane: &Lane, now: Instant) -> bool {
        if lane.stopped.is_some() {
            return false;
        }
        match &lane.current {
            Some(current) => current.wake_at.is_none_or(|at| at <= now),
            None => match self.cut {
                Cut::Message => !lane.queue.is_empty(),
                Cut::Batch { max_size, max_wait } => {
                    lane.queue.len() >= max_size || lane.oldest_at.is_some_and(|at| at + max_wait <= now)
                }
            },
        }
    }

    /// The unit of `partition` to step on (cut now if none is in progress), with its state.
    pub(crate) fn unit(&mut self, partition: i32) -> Option<(&[Raw], &mut UnitState)> {
        let cut = self.cut;
        let lane = self.lanes.get_mut(&partition)?;
        if lane.current.is_none() {
            let len = match cut {
                Cut::Message => 1,
                Cut::Batch { max_size, .. } => max_size.max(1),
            }
            .min(lane.queue.len());
            if len == 0 {
                return None;
            }
            lane.current = Some(Current {
                len,
                state: UnitState::default(),
                wake_at: None,
                hold: None,
            });
        }
        let current = lane.current.as_mut()?;
        let len = current.len;
        let messages = lane.queue.make_contiguous();
        Some((&messages[..len], &mut current.state))
    }

    /// Records how a step on `partition`'s unit ended.
    pub(crate) fn apply(&mut self, partition: i32, step: &Step, now: Instant) -> Applied {
        let Some(lane) = self.lanes.get_mut(&partition) else {
            return Applied::Gone;
        };
        let Some(current) = lane.current.as_mut() else {
            return Applied::Gone;
        };
        match step {
            Step::Done(_) => {
                let len = current.len;
                lane.current = None;
                let mut last_offset = None;
                for m in lane.queue.drain(..len) {
                    lane.bytes = lane.bytes.saturating_sub(m.size());
                    last_offset = Some(m.offset);
                }
                lane.oldest_at = (!lane.queue.is_empty()).then_some(now);
                match last_offset {
                    Some(last_offset) => {
                        lane.last_done = Some(last_offset);
                        Applied::Finished { last_offset }
                    }
                    None => Applied::Gone,
                }
            }
            Step::Wait { delay, hold } => {
                current.wake_at = Some(now + *delay);
                current.hold = Some(*hold);
                Applied::Waiting
            }
            Step::Stop(why) => {
                current.hold = Some(Hold::Stopped);
                lane.stopped = Some(why.clone());
                Applied::Stopped
            }
        }
    }

    /// When the next lane becomes ready by itself (a backoff ends, a batch's wait ends).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter(|lane| lane.stopped.is_none())
            .filter_map(|lane| match (&lane.current, self.cut) {
                (Some(current), _) => current.wake_at,
                (None, Cut::Batch { max_wait, .. }) => lane.oldest_at.map(|at| at + max_wait),
                (None, Cut::Message) => None,
            })
            .min()
    }

    /// The partitions that should be paused now: stopped, waiting on a backoff, or with a full buffer.
    pub(crate) fn to_pause(&self) -> BTreeSet<i32> {
        self.lanes
            .iter()
            .filter(|(_, lane)| {
                lane.stopped.is_some()
                    || lane
                        .current
                        .as_ref()
                        .is_some_and(|c| c.hold.is_some() && c.wake_at.is_some())
                    || lane.queue.len() >= MAX_BUFFERED_MESSAGES
                    || lane.bytes >= MAX_BUFFERED_BYTES
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// How many partitions are held, by reason.
    pub(crate) fn held(&self) -> BTreeMap<Hold, usize> {
        let mut out = BTreeMap::new();
        for lane in self.lanes.values() {
            let hold = if lane.stopped.is_some() {
                Some(Hold::Stopped)
            } else {
                lane.current.as_ref().and_then(|c| c.hold)
            };
            if let Some(hold) = hold {
                *out.entry(hold).or_insert(0) += 1;
            }
        }
        out
    }

    /// Clears a unit's hold once it takes its next step.
    pub(crate) fn release(&mut self, partition: i32) {
        if let Some(current) = self.lanes.get_mut(&partition).and_then(|l| l.current.as_mut()) {
            current.hold = None;
            current.wake_at = None;
        }
    }

    /// Messages buffered over all lanes (not yet handled).
    pub(crate) fn buffered(&self) -> usize {
        self.lanes.values().map(|l| l.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::handler::Headers;
    use crate::process::Outcome;

    fn raw(partition: i32, offset: i64) -> Raw {
        Raw {
            key: None,
            value: Some(vec![0; 10]),
            headers: Headers::new(),
            partition,
            offset,
            timestamp: None,
        }
    }

    fn done() -> Step {
        Step::Done(Outcome::Handled { attempts: 1 })
    }

    #[test]
    fn messages_of_a_partition_go_in_order_and_partitions_take_turns() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message);
        for (p, o) in [(0, 1), (0, 2), (1, 7), (1, 8)] {
            assert_eq!(lanes.push(raw(p, o), now), Pushed::Queued);
        }
        let mut order = Vec::new();
        while let Some(p) = lanes.next_ready(now) {
            let (unit, _) = lanes.unit(p).unwrap();
            let offset = unit[0].offset;
            assert_eq!(lanes.apply(p, &done(), now), Applied::Finished { last_offset: offset });
            order.push((p, offset));
        }
        assert_eq!(order, [(0, 1), (1, 7), (0, 2), (1, 8)]);
        assert_eq!(
            lanes.push(raw(0, 2), now),
            Pushed::AlreadyDone,
            "fetched again after a rebalance"
        );
    }

    #[test]
    fn a_waiting_partition_is_paused_and_the_others_go_on() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Message);
        lanes.push(raw(0, 1), now);
        lanes.push(raw(0, 2), now);
        lanes.push(raw(1, 1), now);
        let p = lanes.next_ready(now).unwrap();
        assert_eq!(p, 0);
        lanes.unit(p).unwrap();
        let wait = Step::Wait {
            delay: Duration::from_secs(1),
            hold: Hold::Transient,
        };
        assert_eq!(lanes.apply(0, &wait, now), Applied::Waiting);
        assert_eq!(lanes.to_pause(), BTreeSet::from([0]));
        assert_eq!(lanes.held().get(&Hold::Transient), Some(&1));
        assert_eq!(lanes.next_ready(now), Some(1));
        lanes.unit(1);
        lanes.apply(1, &done(), now);
        assert_eq!(lanes.next_ready(now), None, "partition 0 waits");
        assert_eq!(lanes.next_wake(), Some(now + Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        assert_eq!(lanes.next_ready(later), Some(0));
        lanes.release(0);
        let (unit, _) = lanes.unit(0).unwrap();
        assert_eq!(unit[0].offset, 1, "the same message again");
        assert_eq!(lanes.apply(0, &done(), later), Applied::Finished { last_offset: 1 });
        assert!(lanes.to_pause().is_empty());
    }

    #[test]
    fn batches_are_cut_when_full_or_due_and_stopped_partitions_stay_stopped() {
        let now = Instant::now();
        let mut lanes = Lanes::new(Cut::Batch {
            max_size: 3,
            max_wait: Duration::from_millis(100),
        });
        for o in 0..4 {
            lanes.push(raw(0, o), now);
        }
        lanes.push(raw(1, 0), now);
        assert_eq!(lanes.next_ready(now), Some(0), "full");
        let (unit, _) = lanes.unit(0).unwrap();
        assert_eq!(unit.iter().map(|m| m.offset).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(lanes.apply(0, &done(), now), Applied::Finished { last_offset: 2 });
        assert_eq!(lanes.next_ready(now), None, "neither full nor due");
        let due = now + Duration::from_millis(100);
        assert_eq!(lanes.next_wake(), Some(due));
        let p = lanes.next_ready(due).unwrap();
        lanes.unit(p);
        assert_eq!(lanes.apply(p, &Step::Stop("no".into()), due), Applied::Stopped);
        assert!(lanes.to_pause().contains(&p));
        assert_eq!(lanes.held().get(&Hold::Stopped), Some(&1));
        lanes.revoke(&[p]);
        assert!(lanes.held().is_empty());
    }
}
