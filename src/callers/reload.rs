//! Keeps the published key set equal to the keys file without a restart. A timer looks at
//! the file's modification time, size and inode once a second (a `stat`, no read) and
//! re-reads it when any changed; SIGHUP re-reads it at once. The new set is published with
//! one atomic pointer swap (`arc-swap`): requests in flight keep the set they started with,
//! the next ones see the new one, none waits on a lock.
//!
//! A file that cannot be read or parsed leaves the last good set in place and is logged
//! once per change (line number and reason, never key material), so a bad edit or a
//! half-written file cannot lock every caller out. Since that set may hold a key the
//! operator meant to revoke, the failure is also kept (`KeyStore::health`) until a good
//! read clears it, for the metrics and `/readyz` to report.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::file::read_key_file;
use super::{CallerKey, KeyFileError, KeySet};

/// How often the file's metadata is checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file without reading it. The inode catches a file
/// replaced by rename (editors, `keys revoke`, Kubernetes secret volumes) even when
/// size and time happen to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

/// The outcome of one look at the file.
#[derive(Debug)]
pub enum Reload {
    /// Nothing changed since the last look.
    Unchanged,
    /// The file was read; this many keys are now in force.
    Reloaded(usize),
    /// The file changed but cannot be used; the last good set stays.
    Kept(KeyFileError),
}

/// How the reads of the file have gone.
#[derive(Clone, Copy, Debug)]
pub struct KeysHealth {
    /// When the set in force was read.
    pub loaded_at: SystemTime,
    /// Set while the file cannot be used: the set in force is older than the file.
    pub failing: Option<Failing>,
}

/// The file could not be used since `since`, and the last read said `reason`.
#[derive(Clone, Copy, Debug)]
pub struct Failing {
    pub since: SystemTime,
    /// `missing`, `unreadable` or `invalid`: a word, so nothing of the file or its path
    /// reaches whoever can read `/readyz`; the log has the details.
    pub reason: &'static str,
}

fn reason(error: &KeyFileError) -> &'static str {
    match error {
        KeyFileError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => "missing",
        KeyFileError::Io { .. } => "unreadable",
        KeyFileError::Invalid { .. } => "invalid",
    }
}

/// The key set in force, and the file it comes from.
pub struct KeyStore {
    path: PathBuf,
    current: ArcSwap<KeySet>,
    /// The version last looked at, good or bad, so a broken file is reported once.
    seen: Mutex<Option<Stamp>>,
    health: Mutex<KeysHealth>,
}

impl KeyStore {
    /// Reads the file at start-up, where a broken file is an error to fix, not a
    /// reason to start with no keys.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let seen = stamp(path);
        let set = read_key_file(path)?;
        Ok(Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(set),
            seen: Mutex::new(seen),
            health: Mutex::new(KeysHealth {
                loaded_at: SystemTime::now(),
                failing: None,
            }),
        })
    }

    /// When the set in force was read, and whether the file has been unusable since.
    pub fn health(&self) -> KeysHealth {
        *self.health.lock().expect("not poisoned")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key `presented` is, in the set in force now.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<CallerKey>> {
        self.current.load().authenticate(presented)
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Re-reads the file if it changed since the last look, or in any case with `force`.
    pub fn reload(&self, force: bool) -> Reload {
        let now = stamp(&self.path);
        {
            let mut seen = self.seen.lock().expect("not poisoned");
            if !force && *seen == now {
                return Reload::Unchanged;
            }
            // Taken before reading: a change after this point shows up at the next look.
            *seen = now;
        }
        let read = read_key_file(&self.path);
        let mut health = self.health.lock().expect("not poisoned");
        match read {
            Ok(set) => {
                let count = set.len();
                self.current.store(Arc::new(set));
                *health = KeysHealth {
                    loaded_at: SystemTime::now(),
                    failing: None,
                };
                Reload::Reloaded(count)
            }
            Err(error) => {
                // The first failure dates it: later ones (another bad edit) do not
                // make the set in force any younger.
                let since = health.failing.map_or_else(SystemTime::now, |f| f.since);
                health.failing = Some(Failing {
                    since,
                    reason: reason(&error),
                });
                Reload::Kept(error)
            }
        }
    }

    /// Looks at the file every `POLL_INTERVAL` and on SIGHUP until the task is aborted,
    /// logging each change; `on_outcome` counts them (metrics).
    pub fn watch(
        self: Arc<Self>,
        on_outcome: impl Fn(&Reload) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut hangups = hangup_signals();
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = next_hangup(&mut hangups) => true,
                };
                let store = self.clone();
                let Ok(outcome) = tokio::task::spawn_blocking(move || store.reload(force)).await
                else {
                    continue;
                };
                let file = self.path.display().to_string();
                match &outcome {
                    Reload::Unchanged => {}
                    Reload::Reloaded(keys) => {
                        tracing::info!(keys.file = %file, keys.count = keys, sighup = force, "caller keys reloaded");
                    }
                    Reload::Kept(error) => {
                        let kept = self.current.load().len();
                        tracing::error!(keys.file = %file, keys.count = kept, error = %error,
                            "the caller keys file cannot be used; the last good keys stay in force");
                    }
                }
                on_outcome(&outcome);
            }
        })
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(signals) => Some(signals),
        Err(error) => {
            tracing::warn!(error = %error, "no SIGHUP reload of caller keys; the file is still watched");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangups {}

/// The next SIGHUP; pending forever without them.
#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::KeyDigest;

    fn line(id: &str, key: &str) -> String {
        format!("{id} {} read\n", KeyDigest::of(key))
    }

    #[test]
    fn a_changed_file_is_picked_up_and_an_unchanged_one_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, line("crm", "qpk_a")).unwrap();
        let store = KeyStore::load(&path).unwrap();

        let first = store.reload(false);
        std::fs::write(&path, line("crm", "qpk_a") + &line("bi", "qpk_b")).unwrap();
        let second = store.reload(false);

        assert!(matches!(first, Reload::Unchanged), "{first:?}");
        assert!(matches!(second, Reload::Reloaded(2)), "{second:?}");
        assert_eq!(store.authenticate("qpk_b").unwrap().id, "bi");
    }

    #[test]
    fn a_broken_file_keeps_the_last_good_set_until_it_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, line("crm", "qpk_a")).unwrap();
        let store = KeyStore::load(&path).unwrap();

        let loaded = store.health();
        std::fs::write(&path, "crm qpk_pasted-by-mistake read\n").unwrap();
        let broken = store.reload(false);
        let broken_health = store.health();
        let again = store.reload(false);
        let still = store.authenticate("qpk_a");
        std::fs::remove_file(&path).unwrap();
        let missing = store.reload(false);
        let missing_health = store.health();
        std::fs::write(&path, line("bi", "qpk_b")).unwrap();
        let fixed = store.reload(false);
        let fixed_health = store.health();

        assert!(loaded.failing.is_none());
        let first = broken_health.failing.expect("a broken file is reported");
        assert_eq!(first.reason, "invalid");
        assert_eq!(broken_health.loaded_at, loaded.loaded_at);
        let second = missing_health.failing.expect("a missing file is reported");
        assert_eq!(second.reason, "missing");
        assert_eq!(second.since, first.since, "dated from the first failure");
        assert!(fixed_health.failing.is_none());
        assert!(fixed_health.loaded_at >= first.since);

        assert!(
            matches!(broken, Reload::Kept(KeyFileError::Invalid { line: 1, .. })),
            "{broken:?}"
        );
        assert!(
            matches!(again, Reload::Unchanged),
            "a broken file is reported once"
        );
        assert_eq!(still.unwrap().id, "crm");
        assert!(
            matches!(missing, Reload::Kept(KeyFileError::Io { .. })),
            "{missing:?}"
        );
        assert!(matches!(fixed, Reload::Reloaded(1)), "{fixed:?}");
        assert!(store.authenticate("qpk_a").is_none());
    }

    #[test]
    fn a_forced_reload_reads_even_an_unchanged_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, line("crm", "qpk_a")).unwrap();
        let store = KeyStore::load(&path).unwrap();

        assert!(matches!(store.reload(true), Reload::Reloaded(1)));
    }

    #[test]
    fn a_broken_file_at_start_up_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "crm nothing read\n").unwrap();

        assert!(KeyStore::load(&path).is_err());
        assert!(KeyStore::load(&dir.path().join("absent")).is_err());
    }
}
