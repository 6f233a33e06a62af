//! The open model's queues, apart from goose so they can be tested on a paused clock: one
//! queue of intended send times per stream, earliest first. A user takes its stream's next
//! arrival (noting when it took it), waits until the arrival is due, sends, and says it has
//! finished. An arrival taken after its time had no free user; one taken in time but started
//! late was woken late (the machine) — the recording tells the two apart by these times.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::plan::{Delivery, Scheduled};

/// An arrival a user took, and when (from the schedule's time zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub item: Scheduled,
    pub taken: Duration,
}

/// Every stream's queue, the arrivals in flight, and the schedule's time zero.
#[derive(Debug)]
pub struct Dispatcher {
    queues: Vec<Mutex<BinaryHeap<Reverse<Scheduled>>>>,
    /// Arrivals taken and not yet finished (waiting or sending), all streams.
    in_flight: AtomicUsize,
    /// Wakes idle users when a retry is queued or the run is over.
    wake: Notify,
    epoch: OnceLock<Instant>,
    /// From the first call to time zero, so every user is running when the first is due.
    lead: Duration,
}

impl Dispatcher {
    /// Queues `schedule` over `streams` streams; time zero is `lead` after first asked.
    pub fn new(schedule: Vec<Scheduled>, streams: usize, lead: Duration) -> Self {
        let mut queues: Vec<BinaryHeap<Reverse<Scheduled>>> = vec![BinaryHeap::new(); streams];
        for item in schedule {
            queues[item.stream].push(Reverse(item));
        }
        Self {
            queues: queues.into_iter().map(Mutex::new).collect(),
            in_flight: AtomicUsize::new(0),
            wake: Notify::new(),
            epoch: OnceLock::new(),
            lead,
        }
    }

    /// The schedule's time zero.
    pub fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(|| Instant::now() + self.lead)
    }

    /// Time since time zero (zero before it).
    pub fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch())
    }

    /// `stream`'s next arrival, counted in flight until [`Dispatcher::finished`]; `None` when
    /// its queue is empty now.
    pub fn take(&self, stream: usize) -> Option<Taken> {
        let taken = self.now();
        let Reverse(item) = self.queues[stream].lock().expect("queue lock").pop()?;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(Taken { item, taken })
    }

    /// Waits until `item` is due.
    pub async fn wait_due(&self, item: &Scheduled) {
        tokio::time::sleep_until(self.epoch() + item.at).await;
    }

    /// A taken arrival is done with (sent and recorded, or dropped).
    pub fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Queues a retry and wakes idle users.
    pub fn requeue(&self, item: Scheduled) {
        self.queues[item.stream]
            .lock()
            .expect("queue lock")
            .push(Reverse(item));
        self.wake.notify_waiters();
    }

    /// Nothing queued and nothing in flight (a request in flight may still queue a retry).
    pub fn is_done(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.queued() == 0
    }

    /// Arrivals queued, all streams.
    pub fn queued(&self) -> usize {
        self.queues
            .iter()
            .map(|q| q.lock().expect("queue lock").len())
            .sum()
    }

    /// Original arrivals (not retries) still queued: never sent.
    pub fn unsent(&self) -> u64 {
        self.queues
            .iter()
            .map(|q| {
                let q = q.lock().expect("queue lock");
                q.iter()
                    .filter(|Reverse(s)| s.attempt == 0 && s.delivery == Delivery::Original)
                    .count() as u64
            })
            .sum()
    }

    /// Resolves at the next [`Dispatcher::requeue`] or [`Dispatcher::wake_all`].
    pub fn woken(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Wakes every idle user (the run is over).
    pub fn wake_all(&self) {
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn every(stream: usize, n: u64, gap_ms: u64) -> Vec<Scheduled> {
        (0..n)
            .map(|seq| Scheduled {
                at: Duration::from_millis(seq * gap_ms),
                stream,
                seq,
                attempt: 0,
                delivery: Delivery::Original,
            })
            .collect()
    }

    /// `users` users of stream 0, each sending for `service` per arrival; returns per seq
    /// (taken, started), from time zero, on tokio's clock.
    async fn drive(
        d: Arc<Dispatcher>,
        users: usize,
        service: Duration,
    ) -> Vec<(u64, Duration, Duration)> {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..users {
            let d = d.clone();
            tasks.spawn(async move {
                let mut seen = Vec::new();
                while let Some(t) = d.take(0) {
                    d.wait_due(&t.item).await;
                    seen.push((t.item.seq, t.taken, d.now()));
                    tokio::time::sleep(service).await;
                    d.finished();
                }
                seen
            });
        }
        let mut all: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
        all.sort();
        all
    }

    /// Enough users: every arrival starts exactly when it is due — the dispatcher itself adds
    /// no lag, and no arrival is taken late.
    #[tokio::test(start_paused = true)]
    async fn with_enough_users_every_arrival_starts_on_time() {
        let d = Arc::new(Dispatcher::new(every(0, 50, 10), 1, Duration::from_secs(1)));
        let sent = drive(d.clone(), 3, Duration::from_millis(25)).await;

        assert_eq!(sent.len(), 50);
        for (seq, taken, started) in sent {
            assert_eq!(started, Duration::from_millis(seq * 10), "seq {seq}");
            assert!(taken <= started, "seq {seq} taken at {taken:?}");
        }
        assert!(d.is_done());
    }

    /// One user, arrivals every 10 ms, 25 ms each: the open model keeps the intended times,
    /// so arrival n starts at 25·n ms — late by 15·n ms, and taken late (no free user), which
    /// is how the recording tells a full stream from a slow machine.
    #[tokio::test(start_paused = true)]
    async fn a_stream_without_a_free_user_starts_late_by_the_backlog() {
        let d = Arc::new(Dispatcher::new(every(0, 10, 10), 1, Duration::ZERO));
        let sent = drive(d.clone(), 1, Duration::from_millis(25)).await;

        for (seq, taken, started) in sent {
            assert_eq!(started, Duration::from_millis(seq * 25), "seq {seq}");
            assert_eq!(taken, started, "taken the moment the user was free");
            let late = started - Duration::from_millis(seq * 10);
            assert_eq!(late, Duration::from_millis(seq * 15));
        }
    }

    /// Streams have their own queues: one stream's backlog does not delay another's.
    #[tokio::test(start_paused = true)]
    async fn streams_do_not_share_a_queue() {
        let mut schedule = every(0, 10, 10);
        schedule.extend(every(1, 10, 10));
        let d = Arc::new(Dispatcher::new(schedule, 2, Duration::ZERO));
        let slow = drive(d.clone(), 1, Duration::from_millis(50));
        let fast = async {
            let mut starts = Vec::new();
            while let Some(t) = d.take(1) {
                d.wait_due(&t.item).await;
                starts.push(d.now());
                d.finished();
            }
            starts
        };
        let (_, fast) = tokio::join!(slow, fast);
        let due: Vec<Duration> = (0..10).map(|i| Duration::from_millis(i * 10)).collect();
        assert_eq!(fast, due);
    }

    /// A retry goes back into its stream's queue, wakes idle users, and keeps the run from
    /// being done until it is sent; originals left over are counted as unsent.
    #[test]
    fn retries_requeue_and_leftovers_are_counted() {
        let d = Dispatcher::new(every(0, 2, 10), 1, Duration::ZERO);
        let first = d.take(0).unwrap();
        assert!(!d.is_done());
        d.requeue(Scheduled {
            at: Duration::from_millis(500),
            attempt: 1,
            ..first.item
        });
        d.finished();
        assert_eq!(d.queued(), 2);
        assert_eq!(d.unsent(), 1, "the retry is not an unsent original");
        assert!(!d.is_done());
    }
}
