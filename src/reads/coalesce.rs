//! Single flight: identical reads that arrive while one is under way wait for its answer
//! instead of calling Qpien again.
//!
//! The call runs in a task of its own, not in the request that started it, so a caller
//! who goes away (a closed connection drops its handler) cancels nothing for the others,
//! and the answer still reaches the cache. A flight leaves the table when it lands: its
//! answer, success or failure, goes only to the requests that were waiting on it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

pub type Flight<V> = Shared<BoxFuture<'static, V>>;

pub struct Flights<K, V: Clone> {
    under_way: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

/// Whether this request started the flight or joined one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self {
            under_way: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The flight for `key`: the one under way, or a new one running `call()`.
    pub fn join<F>(&self, key: &K, call: impl FnOnce() -> F) -> (Flight<V>, Role)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut under_way = self.under_way.lock().expect("not poisoned");
        if let Some(flight) = under_way.get(key) {
            return (flight.clone(), Role::Follower);
        }
        // Boxed at once: the call's future is a few KiB, and each move into the task
        // would otherwise copy it.
        let call = Box::pin(call());
        let table = Arc::clone(&self.under_way);
        let landed = key.clone();
        // The table's lock is held until the flight is in it, so the task cannot
        // remove it before it was added.
        let task = tokio::spawn(async move {
            let answer = call.await;
            table.lock().expect("not poisoned").remove(&landed);
            answer
        });
        let flight = async move {
            match task.await {
                Ok(answer) => answer,
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        .boxed()
        .shared();
        under_way.insert(key.clone(), flight.clone());
        (flight, Role::Leader)
    }

    /// Whether a flight for `key` is under way.
    pub fn under_way(&self, key: &K) -> bool {
        self.under_way
            .lock()
            .expect("not poisoned")
            .contains_key(key)
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.under_way.lock().expect("not poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_joins_share_one_call_and_a_dropped_waiter_cancels_nothing() {
        let flights: Flights<&str, u32> = Flights::new();
        let calls = Arc::new(AtomicU32::new(0));
        let call = || {
            let calls = Arc::clone(&calls);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                calls.fetch_add(1, Ordering::SeqCst) + 41
            }
        };
        let (first, role) = flights.join(&"k", call);
        assert_eq!(role, Role::Leader);
        let (second, role) = flights.join(&"k", call);
        assert_eq!(role, Role::Follower);

        drop(first);
        assert_eq!(second.await, 41);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0, "a landed flight leaves the table");

        let (third, role) = flights.join(&"k", call);
        assert_eq!(role, Role::Leader, "a later read starts a new flight");
        assert_eq!(third.await, 42);
    }

    #[tokio::test]
    async fn a_flight_whose_every_waiter_left_still_lands() {
        let flights: Flights<&str, ()> = Flights::new();
        let landed = Arc::new(AtomicU32::new(0));
        let flag = Arc::clone(&landed);
        let (flight, _) = flights.join(&"k", move || async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.fetch_add(1, Ordering::SeqCst);
        });
        drop(flight);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(landed.load(Ordering::SeqCst), 1);
    }
}
