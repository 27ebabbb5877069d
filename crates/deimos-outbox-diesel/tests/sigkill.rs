//! The relay process killed with SIGKILL at random points, 20 times, while writers keep committing (and rolling
//! back) transactions: every committed message still reaches Kafka, nothing rolled back does, each key's
//! messages arrive in commit order, and the only duplicates are re-sends of messages not yet acknowledged
//! when the relay died.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Kind, Kit, TestDb, fast_config, per_key};
use deimos_outbox_diesel::{Conn, Relay};

const KILLS: usize = 20;
const KEYS: i64 = 16;
const BATCH: usize = 50;
const IN_FLIGHT: usize = 4;

/// A small xorshift generator: random kill points without a dependency; the seed is printed for reruns.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn relay_survives_sigkill(kind: Kind) {
    let db = TestDb::new(kind).await;
    let kit = Kit::new("outbox.sigkill").await;
    let seed = std::env::var("DEIMOS_SIGKILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("sigkill seed {seed} (set DEIMOS_SIGKILL_SEED to rerun)");
    let mut rng = Rng(seed);

    // Writers: transactions of one key (held for the transaction, as a row lock would), one in six rolled back.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let seqs = common::key_seqs(KEYS);
    let mut writers = Vec::new();
    for w in 0..3i64 {
        let (writer, seqs, url, stop) = (kit.writer(), seqs.clone(), db.url.clone(), stop_writing.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&url).await.unwrap();
            let (mut t, mut committed) = (0i64, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let key = (w * 5 + t * 3) % KEYS;
                let commit = t % 6 != 5;
                committed += usize::from(writer.write_keyed(&mut conn, &seqs, key, commit).await);
                t += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            committed
        }));
    }

    for run in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_deimos-outbox"))
            .args(["--database-url", &db.url, "relay", "--brokers", &kit.brokers()])
            .args(["--lease-ttl-secs", "3", "--poll-interval-ms", "50"])
            .args([
                "--batch-size",
                &BATCH.to_string(),
                "--max-in-flight",
                &IN_FLIGHT.to_string(),
            ])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let after = Duration::from_millis(500 + rng.next() % 4_000);
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "run {run}: the relay should have been killed, it exited with {status}"
        );
    }
    stop_writing.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }

    // A last relay (in process) drains what is left once the killed relays' leases expire.
    let relay = Relay::new(&db.url, kit.backend(), fast_config().build()).unwrap();
    let pending = db.count("kafka_messages").await;
    let (tx, task) = common::spawn_relay(relay);
    common::within(90, async {
        while db.count("kafka_messages").await > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tx.send(()).unwrap();
    task.await.unwrap();

    // Read until every committed message is there (duplicates make the total larger).
    let received = kit.read_all(usize::MAX, Duration::from_secs(10)).await;
    let all: Vec<_> = received.values().flatten().collect();
    assert!(
        all.iter().all(|m| m.committed),
        "a message from a rolled-back transaction reached Kafka"
    );
    let mut duplicates = 0usize;
    let mut delivered = 0usize;
    for (key, seqs) in per_key(&received) {
        // Commit order with re-sends: each message is the next one of its key, or one already seen.
        let mut max = 0;
        for s in &seqs {
            if *s == max + 1 {
                max = *s;
                delivered += 1;
            } else {
                assert!(
                    *s <= max,
                    "key {key}: {s} came before {} (received {seqs:?}, seed {seed})",
                    max + 1
                );
                duplicates += 1;
            }
        }
    }
    assert_eq!(delivered, committed, "every committed message arrived (seed {seed})");
    // Only unacknowledged batches are sent again: at most what was in flight per partition at each kill.
    let bound = KILLS * common::PARTITIONS as usize * BATCH * IN_FLIGHT;
    assert!(duplicates <= bound, "{duplicates} duplicates, more than {bound}");
    eprintln!(
        "{kind:?}: {committed} committed, {duplicates} re-sent after {KILLS} kills, {pending} left for the last relay"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_survives_sigkill() {
    relay_survives_sigkill(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_relay_survives_sigkill() {
    relay_survives_sigkill(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_survives_sigkill() {
    relay_survives_sigkill(Kind::Sqlite).await;
}
