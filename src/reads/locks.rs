//! One lock per key, kept only while someone holds or waits for it: the table holds as
//! many entries as there are updates under way, whatever the number of keys seen, and
//! two keys never share a lock (as they would in a fixed set of stripes, where anyone
//! who can pick keys can make others wait).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::{Instant, timeout_at};

pub struct KeyedLocks<K> {
    table: Arc<Mutex<HashMap<K, Arc<AsyncMutex<()>>>>>,
}

/// The lock of one key, held; dropping it lets the next waiter in, and the last one out
/// takes the key off the table.
pub struct Held<K: Hash + Eq> {
    guard: Option<OwnedMutexGuard<()>>,
    lock: Arc<AsyncMutex<()>>,
    key: Option<K>,
    table: Arc<Mutex<HashMap<K, Arc<AsyncMutex<()>>>>>,
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    pub fn new() -> Self {
        Self {
            table: Arc::default(),
        }
    }

    /// The lock of `key`, or `None` if it is not free by `deadline`.
    pub async fn lock(&self, key: &K, deadline: Instant) -> Option<Held<K>> {
        let lock = {
            let mut table = self.table.lock().expect("not poisoned");
            Arc::clone(table.entry(key.clone()).or_default())
        };
        // Built before the wait, so a waiter that gives up also leaves the table tidy.
        let mut held = Held {
            guard: None,
            lock: Arc::clone(&lock),
            key: Some(key.clone()),
            table: Arc::clone(&self.table),
        };
        held.guard = Some(timeout_at(deadline, lock.lock_owned()).await.ok()?);
        Some(held)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().expect("not poisoned").len()
    }
}

impl<K: Hash + Eq> Drop for Held<K> {
    fn drop(&mut self) {
        self.guard.take();
        let Some(key) = self.key.take() else {
            return;
        };
        // Clones are made only under the table's lock, so under it a count of two (the
        // table's and ours) means nobody else holds or waits for this key.
        let mut table = self.table.lock().expect("not poisoned");
        if Arc::strong_count(&self.lock) == 2 {
            table.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_is_held_by_one_at_a_time_and_a_wait_ends_at_its_deadline() {
        let locks = KeyedLocks::new();
        let soon = || Instant::now() + Duration::from_secs(1);
        let first = locks.lock(&"a", soon()).await.expect("free");
        assert!(
            locks.lock(&"b", soon()).await.is_some(),
            "another key is another lock"
        );
        assert!(
            locks.lock(&"a", soon()).await.is_none(),
            "held: the wait gives up at its deadline"
        );
        drop(first);
        assert!(locks.lock(&"a", soon()).await.is_some(), "free again");
        assert_eq!(locks.len(), 0, "no key stays once nobody holds it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_lock_when_it_is_let_go() {
        let locks = Arc::new(KeyedLocks::new());
        let first = locks.lock(&1, Instant::now()).await.expect("free");
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                locks.lock(&1, deadline).await.is_some()
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(locks.len(), 1, "held and waited for: one entry");
        drop(first);
        assert!(waiter.await.unwrap());
        assert_eq!(locks.len(), 0);
    }
}
