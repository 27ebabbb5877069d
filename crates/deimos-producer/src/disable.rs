//! Disabling producers: everywhere, for the duration of a closure or a future, or for listed producers only
//! (Deimos's `config.producers.disabled` and `Deimos.disable_producers`).
//!
//! A disabled producer's `publish` calls succeed without sending anything, as in Deimos.
//!
//! - [`disable_all`] / [`enable_all`]: process-wide, like `producers.disabled`.
//! - [`without_producers`] / [`without_producers_named`]: for the duration of a closure, on the calling thread.
//! - [`without_producers_in`] / [`without_producers_named_in`]: for the duration of a future, wherever its
//!   task runs; other tasks keep producing.
//!
//! Scopes nest: an inner scope adds to the outer one and, when it ends, exactly the outer state is back (a
//! producer disabled by the outer scope stays disabled). The state is restored however the scope ends: a
//! returned error, a panic, or a dropped future.
//!
//! ```
//! use std::sync::Arc;
//! use deimos_avro::SchemaStore;
//! use deimos_keys::KeyConfig;
//! use deimos_producer::{MemoryBackend, Producer, ProducerSetup, disable};
//! use deimos_registry::MemoryRegistry;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
//! let backend = MemoryBackend::new();
//! let setup = ProducerSetup::builder(SchemaStore::load_all(schemas)?, Arc::new(MemoryRegistry::new()), backend.clone())
//!     .build();
//! let producer = Producer::builder("GadgetProducer").topic("gadgets").schema("com.acme.keys.Gadget")
//!     .key_config(KeyConfig::None).build(&setup).await?;
//! let gadget = json!({"id": 1, "region": "eu", "name": "g"});
//!
//! disable::without_producers_named_in(&["GadgetProducer"], async {
//!     assert!(disable::is_disabled("GadgetProducer"));
//!     producer.publish(gadget.clone()).await // succeeds, sends nothing
//! })
//! .await?;
//! assert!(backend.sent().is_empty());
//! assert!(!disable::is_disabled("GadgetProducer")); // restored when the scope ends
//!
//! producer.publish(gadget).await?;
//! assert_eq!(backend.sent().len(), 1);
//! # Ok(())
//! # }
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

static ALL_DISABLED: AtomicBool = AtomicBool::new(false);

/// What a scope disabled.
#[derive(Debug, Clone, Default)]
struct Scope {
    all: bool,
    names: Vec<String>,
}

impl Scope {
    fn covers(&self, name: &str) -> bool {
        self.all || self.names.iter().any(|n| n == name)
    }

    fn with_all(&self) -> Scope {
        Scope {
            all: true,
            names: self.names.clone(),
        }
    }

    fn with_names(&self, names: &[&str]) -> Scope {
        let mut s = self.clone();
        for n in names {
            if !s.names.iter().any(|m| m == n) {
                s.names.push((*n).to_string());
            }
        }
        s
    }
}

thread_local! {
    static THREAD_SCOPE: RefCell<Scope> = RefCell::new(Scope::default());
}

tokio::task_local! {
    static TASK_SCOPE: Scope;
}

/// Disables every producer in the process until [`enable_all`].
pub fn disable_all() {
    ALL_DISABLED.store(true, Ordering::SeqCst);
}

/// Undoes [`disable_all`]. Scoped disabling is not affected.
pub fn enable_all() {
    ALL_DISABLED.store(false, Ordering::SeqCst);
}

/// Whether the producer named `name` is disabled here: process-wide, by a closure scope on this thread, or by a
/// future scope of the current task.
pub fn is_disabled(name: &str) -> bool {
    ALL_DISABLED.load(Ordering::Relaxed)
        || THREAD_SCOPE.with(|s| s.borrow().covers(name))
        || TASK_SCOPE.try_with(|s| s.covers(name)).unwrap_or(false)
}

/// Whether every producer is disabled here (Deimos's `producers_disabled?` without a class): process-wide, by a
/// closure scope on this thread, or by a future scope of the current task. Producers disabled by name do not
/// count.
///
/// ```
/// use deimos_producer::disable;
///
/// assert!(!disable::all_disabled());
/// disable::without_producers(|| assert!(disable::all_disabled()));
/// disable::without_producers_named(&["WidgetProducer"], || {
///     assert!(!disable::all_disabled());
///     assert!(disable::is_disabled("WidgetProducer"));
/// });
/// ```
pub fn all_disabled() -> bool {
    ALL_DISABLED.load(Ordering::Relaxed)
        || THREAD_SCOPE.with(|s| s.borrow().all)
        || TASK_SCOPE.try_with(|s| s.all).unwrap_or(false)
}

/// Restores the thread scope when dropped, also during unwinding.
struct Restore(Option<Scope>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            THREAD_SCOPE.with(|s| *s.borrow_mut() = prev);
        }
    }
}

fn with_thread_scope<R>(change: impl FnOnce(&Scope) -> Scope, f: impl FnOnce() -> R) -> R {
    let prev = THREAD_SCOPE.with(|s| {
        let next = change(&s.borrow());
        std::mem::replace(&mut *s.borrow_mut(), next)
    });
    let _restore = Restore(Some(prev));
    f()
}

/// Runs `f` with every producer disabled on this thread.
pub fn without_producers<R>(f: impl FnOnce() -> R) -> R {
    with_thread_scope(Scope::with_all, f)
}

/// Runs `f` with the producers named in `names` disabled on this thread.
pub fn without_producers_named<R>(names: &[&str], f: impl FnOnce() -> R) -> R {
    with_thread_scope(|s| s.with_names(names), f)
}

fn current_task_scope() -> Scope {
    TASK_SCOPE.try_with(Scope::clone).unwrap_or_default()
}

/// Runs `fut` with every producer disabled inside it (in this task, not in tasks it spawns).
pub async fn without_producers_in<F: Future>(fut: F) -> F::Output {
    TASK_SCOPE.scope(current_task_scope().with_all(), fut).await
}

/// Runs `fut` with the producers named in `names` disabled inside it.
pub async fn without_producers_named_in<F: Future>(names: &[&str], fut: F) -> F::Output {
    TASK_SCOPE.scope(current_task_scope().with_names(names), fut).await
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn closure_scopes_nest_and_restore_on_panic() {
        assert!(!is_disabled("a"));
        without_producers_named(&["a"], || {
            assert!(is_disabled("a"));
            assert!(!is_disabled("b"));
            without_producers_named(&["a", "b"], || assert!(is_disabled("a") && is_disabled("b")));
            // The inner scope ended: `a` is still disabled by the outer one, `b` is back.
            assert!(is_disabled("a"));
            assert!(!is_disabled("b"));
            let caught = std::panic::catch_unwind(|| without_producers(|| std::panic::panic_any("boom")));
            assert!(caught.is_err());
            assert!(!is_disabled("b"));
        });
        assert!(!is_disabled("a"));
    }

    #[tokio::test]
    async fn future_scopes_are_per_task() {
        let inside = without_producers_in(async {
            let other = tokio::spawn(async { is_disabled("a") });
            (is_disabled("a"), other.await.unwrap_or(true))
        })
        .await;
        assert_eq!(inside, (true, false));
        assert!(!is_disabled("a"));
        let failed: Result<(), &str> = without_producers_named_in(&["x"], async { Err("failed") }).await;
        assert!(failed.is_err());
        assert!(!is_disabled("x"));
    }
}
