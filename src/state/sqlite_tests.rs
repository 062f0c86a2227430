//! The SQLite event log: order, cursors, filters, retention, restarts, and a `kill -9`
//! of a process in the middle of appending.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use super::*;
use crate::events::log::EventKind;

const A: &str = "6650a1000000000000000001";
const B: &str = "6650a1000000000000000002";

fn event(kind: EventKind, conversation: &str, n: u64) -> NewEvent {
    NewEvent {
        kind,
        qpien_type: None,
        occurred_at: Utc::now(),
        conversation_id: Some(conversation.into()),
        data: json!({ "n": n }),
    }
}

fn open(dir: &tempfile::TempDir, retention: Duration) -> SqliteLog {
    let (live, _) = broadcast::channel(16);
    SqliteLog::open(&dir.path().join("events.sqlite3"), retention, live).unwrap()
}

const WEEK: Duration = Duration::from_secs(7 * 86_400);

#[tokio::test]
async fn events_read_back_in_order_a_page_at_a_time_with_cursors_that_sort_as_strings() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, WEEK);
    let start = log.latest();
    let mut appended = Vec::new();
    for n in 0..5 {
        appended.push(log.append(event(EventKind::Updated, A, n)).await.unwrap());
    }

    let first = log.after(&start, &Filter::default(), 3).await.unwrap();
    let second = log.after(&first.next, &Filter::default(), 3).await.unwrap();
    let third = log
        .after(&second.next, &Filter::default(), 3)
        .await
        .unwrap();

    assert_eq!(first.events, appended[..3]);
    assert_eq!(second.events, appended[3..]);
    assert!(third.events.is_empty());
    assert_eq!(third.next, second.next);
    assert_eq!(second.next, log.latest());
    assert!(
        appended
            .windows(2)
            .all(|w| w[0].id.as_str() < w[1].id.as_str()),
        "ids sort as strings"
    );
    assert!(start.as_str() < appended[0].id.as_str());
}

#[tokio::test]
async fn a_filtered_read_returns_only_matches_and_its_cursor_passes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, WEEK);
    let start = log.latest();
    log.append(event(EventKind::Updated, A, 0)).await.unwrap();
    let wanted = log
        .append(event(EventKind::MessageReceived, A, 1))
        .await
        .unwrap();
    log.append(event(EventKind::MessageReceived, B, 2))
        .await
        .unwrap();
    log.append(event(EventKind::Joined, A, 3)).await.unwrap();
    let filter = Filter {
        types: vec![EventKind::MessageReceived],
        conversation_id: Some(A.into()),
    };

    let page = log.after(&start, &filter, 10).await.unwrap();

    assert_eq!(page.events, vec![wanted]);
    assert_eq!(page.next, log.latest(), "nothing after it is read again");
    let by_type = Filter {
        types: vec![EventKind::Joined, EventKind::Updated],
        conversation_id: None,
    };
    let kinds: Vec<EventKind> = log
        .after(&start, &by_type, 10)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::Updated, EventKind::Joined]);
}

#[tokio::test]
async fn a_cursor_before_pruned_events_or_not_from_this_log_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, Duration::from_millis(300));
    let start = log.latest();
    let old = log.append(event(EventKind::Updated, A, 0)).await.unwrap();
    let last_old = log.append(event(EventKind::Updated, A, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = log.append(event(EventKind::Updated, A, 2)).await.unwrap();

    assert_eq!(log.prune().await.unwrap(), 2, "the two older than 300 ms");

    for gone in [&start, &old.id, &Cursor::new("abc"), &Cursor::new("99999")] {
        let answer = log.after(gone, &Filter::default(), 10).await;
        assert!(matches!(answer, Err(LogError::Gone)), "{gone}: {answer:?}");
    }
    let kept = log.after(&last_old.id, &Filter::default(), 10).await;
    assert_eq!(kept.unwrap().events, vec![new.clone()]);
    let earliest = log
        .after(&Cursor::new(EARLIEST), &Filter::default(), 10)
        .await;
    assert_eq!(
        earliest.unwrap().events,
        vec![new],
        "all that is kept, never gone"
    );
}

#[tokio::test]
async fn events_and_ids_outlive_a_restart_even_when_all_were_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir, Duration::ZERO);
    let before = log.append(event(EventKind::Joined, A, 0)).await.unwrap();
    drop(log);
    let log = open(&dir, WEEK);
    assert_eq!(log.latest(), before.id);
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(log);
    let log = open(&dir, Duration::ZERO);
    log.prune().await.unwrap();
    drop(log);

    let log = open(&dir, WEEK);
    let after = log.append(event(EventKind::Joined, A, 1)).await.unwrap();

    assert!(after.id > before.id, "an id is never given twice");
    let page = log.after(&before.id, &Filter::default(), 10).await.unwrap();
    assert_eq!(page.events, vec![after]);
}

#[tokio::test]
async fn subscribers_get_each_event_once_it_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (live, mut receiver) = broadcast::channel(16);
    let log = SqliteLog::open(&dir.path().join("events.sqlite3"), WEEK, live).unwrap();

    let appended = log
        .append(event(EventKind::MessageSent, A, 0))
        .await
        .unwrap();

    assert_eq!(receiver.try_recv().unwrap(), appended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_each_get_their_own_id_and_all_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&dir, WEEK));
    let start = log.latest();
    let (tasks, each) = (16u64, 200u64);

    let began = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    log.append(event(EventKind::Updated, A, t * each + n))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let elapsed = began.elapsed();

    let mut seen = std::collections::HashSet::new();
    let mut cursor = start;
    loop {
        let page = log.after(&cursor, &Filter::default(), 500).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        seen.extend(page.events.iter().map(|e| e.data["n"].as_u64().unwrap()));
        cursor = page.next;
    }
    assert_eq!(seen.len() as u64, tasks * each);
    eprintln!(
        "sqlite: {} appends from {tasks} tasks in {elapsed:?}: {:.0} appends/s",
        tasks * each,
        (tasks * each) as f64 / elapsed.as_secs_f64()
    );
}

/// The child of the durability test: appends from 8 tasks until it is killed, and
/// prints `ACK <id> <n>` for each append acknowledged. Runs only when asked to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_kill_9_loses_no_acknowledged_event"]
async fn child_appending_until_killed() {
    let Ok(path) = std::env::var("EVENT_LOG_CHILD_FILE") else {
        return;
    };
    let (live, _) = broadcast::channel(16);
    let log = Arc::new(SqliteLog::open(Path::new(&path), WEEK, live).unwrap());
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for n in (t..).step_by(8) {
                    let stored = log.append(event(EventKind::Updated, A, n)).await.unwrap();
                    println!("ACK {} {n}", stored.id);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_kill_9_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.sqlite3");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state::sqlite::tests::child_appending_until_killed",
        ])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env("EVENT_LOG_CHILD_FILE", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 2_000 {
        let line = lines.next().expect("the child appends").unwrap();
        if let Some(ack) = line.strip_prefix("ACK ") {
            acknowledged.push(ack.to_owned());
        }
    }

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What it printed before it died was acknowledged too.
    acknowledged.extend(
        lines
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("ACK ").map(str::to_owned)),
    );

    let log = open(&dir, WEEK);
    let mut stored = std::collections::HashMap::new();
    let mut cursor = Cursor::new("0");
    loop {
        let page = log.after(&cursor, &Filter::default(), 1_000).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        for event in page.events {
            stored.insert(event.id.to_string(), event.data["n"].as_u64().unwrap());
        }
        cursor = page.next;
    }
    for ack in &acknowledged {
        let (id, n) = ack.split_once(' ').unwrap();
        assert_eq!(stored.get(id), Some(&n.parse().unwrap()), "event {id} lost");
    }
    eprintln!(
        "kill -9: {} acknowledged, {} stored, none lost",
        acknowledged.len(),
        stored.len()
    );
}
