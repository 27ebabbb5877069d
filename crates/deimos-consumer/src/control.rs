//! Control and health of a running runner: [`RunnerControl`] (from [`ConsumerRunner::control`]) gives a
//! [`ListenerControl`] per listener, to pause, resume and seek, and [`Health`] snapshots with a liveness and a
//! readiness answer for probes (Kubernetes' `livenessProbe` and `readinessProbe`).
//!
//! [`ConsumerRunner::control`]: crate::ConsumerRunner::control

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::error::ConsumerError;

/// A listener that has not polled its consumer for this long is not live.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(30);

/// Where to [`seek`](ListenerControl::seek) a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeekTo {
    /// This offset.
    Offset(i64),
    /// The first message whose timestamp is at or after this time (milliseconds since the Unix epoch); the end
    /// of the partition when there is none.
    Timestamp(i64),
    /// The partition's first message.
    Beginning,
    /// After the partition's last message.
    End,
}

/// What a listener's loop is asked to do.
pub(crate) enum Command {
    /// Pause one partition, or every partition (`None`).
    Pause(Option<i32>),
    /// Resume one partition, or every partition (`None`).
    Resume(Option<i32>),
    /// Seek a partition; answers once done.
    Seek {
        partition: i32,
        to: SeekTo,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A snapshot of one listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerHealth {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group_id: String,
    /// Whether its loop runs (false before the runner starts it and after it stops).
    pub running: bool,
    /// The partitions assigned to it.
    pub assigned: Vec<i32>,
    /// Messages (or batches) being handled now.
    pub in_flight: usize,
    /// Messages fetched and waiting for their turn.
    pub buffered: usize,
    /// How long ago its loop last polled the consumer, when it has.
    pub since_last_poll: Option<Duration>,
    /// Per partition, the messages behind the last handled one (only with
    /// [`report_lag`](crate::ListenerBuilder::report_lag), from librdkafka's statistics).
    pub lag: BTreeMap<i32, i64>,
    /// Partitions with a message waiting to be retried (a transient error, or a fatal one under backoff).
    pub waiting: Vec<i32>,
    /// Partitions stopped because a message can never finish (a dead letter that cannot be sent), and why.
    pub stopped: BTreeMap<i32, String>,
    /// Partitions paused: from a control handle, by backpressure, or while they wait.
    pub paused: Vec<i32>,
}

impl ListenerHealth {
    /// Running, and polled within [`LIVENESS_WINDOW`].
    pub fn is_live(&self) -> bool {
        self.running && self.since_last_poll.is_some_and(|d| d < LIVENESS_WINDOW)
    }

    /// Live, and no partition stopped.
    pub fn is_ready(&self) -> bool {
        self.is_live() && self.stopped.is_empty()
    }
}

/// A snapshot of every listener of a runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// One per listener, in the order they were added.
    pub listeners: Vec<ListenerHealth>,
}

impl Health {
    /// Every listener live: its loop runs and polls its consumer. A failed liveness probe should restart the
    /// process.
    pub fn is_live(&self) -> bool {
        !self.listeners.is_empty() && self.listeners.iter().all(ListenerHealth::is_live)
    }

    /// Every listener ready: live, with no partition stopped by a message that can never finish (it needs an
    /// operator, then a restart).
    pub fn is_ready(&self) -> bool {
        !self.listeners.is_empty() && self.listeners.iter().all(ListenerHealth::is_ready)
    }
}

/// What a listener's loop publishes about itself.
#[derive(Debug, Default)]
pub(crate) struct HealthCell {
    snapshot: Mutex<(ListenerHealth, Option<Instant>)>,
}

impl HealthCell {
    pub(crate) fn new(topic: &str, group_id: &str) -> HealthCell {
        HealthCell {
            snapshot: Mutex::new((
                ListenerHealth {
                    topic: topic.to_string(),
                    group_id: group_id.to_string(),
                    ..ListenerHealth::default()
                },
                None,
            )),
        }
    }

    /// Replaces the snapshot (its topic and group are kept); `polled` is when the loop last polled.
    pub(crate) fn publish(&self, update: impl FnOnce(&mut ListenerHealth), polled: Option<Instant>) {
        let mut guard = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        update(&mut guard.0);
        if polled.is_some() {
            guard.1 = polled;
        }
    }

    fn get(&self) -> ListenerHealth {
        let guard = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        let mut health = guard.0.clone();
        health.since_last_poll = guard.1.map(|at| at.elapsed());
        health
    }
}

/// The runner's side of a listener's control: what the loop receives.
pub(crate) struct Wiring {
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) health: Arc<HealthCell>,
}

/// Controls one listener of a runner: pause, resume, seek, health. Cheap to clone; commands given before the
/// runner starts the listener are carried out once it has.
#[derive(Clone)]
pub struct ListenerControl {
    topic: Arc<str>,
    group_id: Arc<str>,
    commands: mpsc::UnboundedSender<Command>,
    health: Arc<HealthCell>,
}

impl fmt::Debug for ListenerControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerControl")
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

impl ListenerControl {
    /// A control and the loop's end of it.
    pub(crate) fn new(topic: &str, group_id: &str) -> (ListenerControl, Wiring) {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(HealthCell::new(topic, group_id));
        (
            ListenerControl {
                topic: Arc::from(topic),
                group_id: Arc::from(group_id),
                commands: tx,
                health: Arc::clone(&health),
            },
            Wiring { commands: rx, health },
        )
    }

    /// The listener's topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The listener's consumer group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    fn send(&self, command: Command) {
        // The loop has ended: nothing to control any more.
        let _ = self.commands.send(command);
    }

    /// Stops handling and fetching every partition of the listener, those assigned later too, until
    /// [`resume`](Self::resume). Messages being handled finish; the consumer stays in its group.
    pub fn pause(&self) {
        self.send(Command::Pause(None));
    }

    /// Resumes every partition paused with [`pause`](Self::pause) or [`pause_partition`](Self::pause_partition).
    pub fn resume(&self) {
        self.send(Command::Resume(None));
    }

    /// Stops handling and fetching one partition until [`resume_partition`](Self::resume_partition).
    pub fn pause_partition(&self, partition: i32) {
        self.send(Command::Pause(Some(partition)));
    }

    /// Resumes one partition.
    pub fn resume_partition(&self, partition: i32) {
        self.send(Command::Resume(Some(partition)));
    }

    /// Moves an assigned partition to `to` (a replay, or a skip): what was fetched and not handled is dropped,
    /// messages being handled finish without their offsets being stored, and the partition goes on from there.
    /// Its committed offset moves as messages from there are handled.
    pub async fn seek(&self, partition: i32, to: SeekTo) -> Result<(), ConsumerError> {
        let (reply, answer) = oneshot::channel();
        let error = |message: String| ConsumerError::Control {
            topic: self.topic.to_string(),
            group_id: self.group_id.to_string(),
            what: format!("seeking partition {partition} to {to:?}"),
            message,
        };
        self.send(Command::Seek { partition, to, reply });
        match answer.await {
            Ok(result) => result.map_err(error),
            Err(_) => Err(error("the listener is not running".into())),
        }
    }

    /// A snapshot of the listener.
    pub fn health(&self) -> ListenerHealth {
        self.health.get()
    }
}

/// Controls the listeners of a runner (from [`ConsumerRunner::control`](crate::ConsumerRunner::control)); cheap
/// to clone, usable from any task, before and while the runner runs.
#[derive(Debug, Clone, Default)]
pub struct RunnerControl {
    pub(crate) listeners: Arc<Vec<ListenerControl>>,
}

impl RunnerControl {
    /// The control of the first listener of `topic`.
    pub fn listener(&self, topic: &str) -> Option<ListenerControl> {
        self.listeners.iter().find(|l| &*l.topic == topic).cloned()
    }

    /// The control of the listener of `topic` in `group_id`.
    pub fn listener_in_group(&self, topic: &str, group_id: &str) -> Option<ListenerControl> {
        self.listeners
            .iter()
            .find(|l| &*l.topic == topic && &*l.group_id == group_id)
            .cloned()
    }

    /// Every listener's control, in the order they were added.
    pub fn listeners(&self) -> &[ListenerControl] {
        &self.listeners
    }

    /// A snapshot of every listener.
    pub fn health(&self) -> Health {
        Health {
            listeners: self.listeners.iter().map(ListenerControl::health).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_live_and_ready_from_the_listeners() {
        let (control, wiring) = ListenerControl::new("t", "g");
        let runner = RunnerControl {
            listeners: Arc::new(vec![control]),
        };
        assert!(!runner.health().is_live(), "not started");
        wiring.health.publish(|h| h.running = true, Some(Instant::now()));
        assert!(runner.health().is_live() && runner.health().is_ready());
        wiring.health.publish(
            |h| h.stopped = BTreeMap::from([(2, "no dead-letter topic".to_string())]),
            None,
        );
        assert!(runner.health().is_live() && !runner.health().is_ready());
        assert!(!RunnerControl::default().health().is_live(), "no listeners");
    }
}
