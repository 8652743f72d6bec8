//! Requests applied on the primary and waiting until their entry is confirmed. Each waiter is
//! woken once: when the confirmed index reaches the one it waits for, when the server stops
//! serving in its epoch, or when a sweep finds its deadline past. (A channel that every waiter
//! watches would wake them all on every confirmation — with fifty clients and a confirmation
//! every few entries, most of the primary's wake-ups would be for nothing. A timer per waiter
//! cost a clock read and two trips through the runtime's timer wheel per write: one periodic
//! sweep serves them all.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::replica::Progress;

/// The waiters of one server, and the progress last published.
#[derive(Debug, Default)]
pub struct Confirmations {
    /// Behind a lock held only to publish, to register or to leave (never across an
    /// `.await`).
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The newest progress published: a waiter polled after it sees it at once.
    progress: Progress,
    /// The waiters in the order of the index each waits for. Its room is kept from one request
    /// to the next, so waiting allocates nothing.
    waiting: VecDeque<Waiter>,
    /// When the last sweep ran: a waiter whose deadline is no later has timed out.
    swept: Option<Instant>,
}

/// A waiter in the queue.
#[derive(Debug)]
struct Waiter {
    /// The index it waits for.
    index: u64,
    /// When it gives up.
    deadline: Instant,
    /// Wakes it.
    waker: Waker,
}

/// A wait that reached its deadline first (see [`Confirmations::expire`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

impl Confirmations {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Publish the replica's progress: wake the waiters it settles — those whose index is
    /// confirmed, or all of them if the epoch moved on.
    pub fn publish(&self, progress: Progress) {
        let mut inner = self.lock();
        if inner.progress == progress {
            return;
        }
        let new_epoch = inner.progress.epoch != progress.epoch;
        inner.progress = progress;
        let settled = if new_epoch {
            inner.waiting.len()
        } else {
            inner
                .waiting
                .partition_point(|w| w.index <= progress.confirmed)
        };
        let woken: Vec<Waker> = inner.waiting.drain(..settled).map(|w| w.waker).collect();
        drop(inner);
        woken.into_iter().for_each(Waker::wake);
    }

    /// Time out every wait whose deadline is `now` or earlier: wake it, to find it has.
    pub fn expire(&self, now: Instant) {
        let mut inner = self.lock();
        inner.swept = Some(now);
        let mut woken = Vec::new();
        inner.waiting.retain(|w| {
            let due = w.deadline <= now;
            if due {
                woken.push(w.waker.clone());
            }
            !due
        });
        drop(inner);
        woken.into_iter().for_each(Waker::wake);
    }

    /// Wait until entry `index` is confirmed, or the server no longer serves in `epoch` (the
    /// progress that settled it), or — if neither happens first — until the first sweep at or
    /// after `deadline`.
    pub fn wait(&self, index: u64, epoch: u64, deadline: Instant) -> Confirmed<'_> {
        Confirmed {
            confirmations: self,
            index,
            epoch,
            deadline,
            registered: None,
        }
    }
}

/// A request waiting for its entry to be confirmed (see [`Confirmations::wait`]).
#[derive(Debug)]
pub struct Confirmed<'a> {
    /// Where it waits.
    confirmations: &'a Confirmations,
    /// The entry's index.
    index: u64,
    /// The epoch it was applied in.
    epoch: u64,
    /// When it gives up.
    deadline: Instant,
    /// The waker it left in the queue, until it is woken: taken out again if it gives up.
    registered: Option<Waker>,
}

impl Future for Confirmed<'_> {
    type Output = Result<Progress, TimedOut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut inner = this.confirmations.lock();
        let now = inner.progress;
        if now.confirmed >= this.index || now.epoch != this.epoch {
            // Whoever published this took the waker out of the queue.
            this.registered = None;
            return Poll::Ready(Ok(now));
        }
        // Published progress and sweeps only ever settle a waiter, so one still in the queue
        // stays there; a new waker (the task moved) replaces the old one.
        if let Some(old) = this.registered.take() {
            remove(&mut inner.waiting, this.index, &old);
        }
        if inner.swept.is_some_and(|swept| this.deadline <= swept) {
            return Poll::Ready(Err(TimedOut));
        }
        let at = inner.waiting.partition_point(|w| w.index <= this.index);
        let waiter = Waiter {
            index: this.index,
            deadline: this.deadline,
            waker: cx.waker().clone(),
        };
        inner.waiting.insert(at, waiter);
        this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Confirmed<'_> {
    /// A waiter that gives up (its request timed out) takes its waker out of the queue.
    fn drop(&mut self) {
        if let Some(waker) = self.registered.take() {
            remove(&mut self.confirmations.lock().waiting, self.index, &waker);
        }
    }
}

/// Take `waker`, waiting for `index`, out of `waiting` (if it is still there).
fn remove(waiting: &mut VecDeque<Waiter>, index: u64, waker: &Waker) {
    let from = waiting.partition_point(|w| w.index < index);
    let found = (from..waiting.len())
        .take_while(|&at| waiting[at].index == index)
        .find(|&at| waiting[at].waker.will_wake(waker));
    if let Some(at) = found {
        waiting.remove(at);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    fn progress(confirmed: u64, epoch: u64) -> Progress {
        Progress { confirmed, epoch }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waiter of `c` polled once with its own counting waker.
    fn polled(c: &Confirmations, index: u64, epoch: u64) -> (Confirmed<'_>, Arc<Counter>) {
        polled_until(c, index, epoch, far())
    }

    /// A waiter of `c` giving up at `deadline`, polled once with its own counting waker.
    fn polled_until(
        c: &Confirmations,
        index: u64,
        epoch: u64,
        deadline: Instant,
    ) -> (Confirmed<'_>, Arc<Counter>) {
        let counter = Arc::new(Counter::default());
        let mut waiter = c.wait(index, epoch, deadline);
        let waker = Waker::from(counter.clone());
        let first = Pin::new(&mut waiter).poll(&mut Context::from_waker(&waker));
        assert!(first.is_pending(), "settled already");
        (waiter, counter)
    }

    /// A deadline no test reaches.
    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    fn poll(waiter: &mut Confirmed<'_>) -> Poll<Result<Progress, TimedOut>> {
        Pin::new(waiter).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn wakes(counter: &Counter) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_waiter_is_woken_once_its_index_is_confirmed_and_not_before() {
        let c = Confirmations::default();
        c.publish(progress(2, 1));
        assert_eq!(
            poll(&mut c.wait(2, 1, far())),
            Poll::Ready(Ok(progress(2, 1)))
        );
        let (mut fifth, fifth_wakes) = polled(&c, 5, 1);
        let (mut third, third_wakes) = polled(&c, 3, 1);
        let (_other_fifth, other_fifth_wakes) = polled(&c, 5, 1);
        c.publish(progress(4, 1));
        assert_eq!(wakes(&third_wakes), 1);
        assert_eq!(wakes(&fifth_wakes), 0, "entry 5 is not confirmed yet");
        assert_eq!(poll(&mut third), Poll::Ready(Ok(progress(4, 1))));
        c.publish(progress(5, 1));
        assert_eq!((wakes(&fifth_wakes), wakes(&other_fifth_wakes)), (1, 1));
        assert_eq!(poll(&mut fifth), Poll::Ready(Ok(progress(5, 1))));
        assert_eq!(wakes(&third_wakes), 1, "woken once");
        assert!(c.lock().waiting.is_empty());
    }

    #[test]
    fn a_new_epoch_wakes_every_waiter_and_settles_older_ones_at_once() {
        let c = Confirmations::default();
        c.publish(progress(1, 1));
        let (mut waiter, woken) = polled(&c, 9, 1);
        c.publish(progress(1, 2));
        assert_eq!(wakes(&woken), 1);
        assert_eq!(poll(&mut waiter), Poll::Ready(Ok(progress(1, 2))));
        assert_eq!(
            poll(&mut c.wait(9, 1, far())),
            Poll::Ready(Ok(progress(1, 2)))
        );
        let (mut last, _) = polled(&c, u64::MAX, 2);
        c.publish(progress(u64::MAX, 2));
        assert_eq!(poll(&mut last), Poll::Ready(Ok(progress(u64::MAX, 2))));
    }

    #[test]
    fn a_waiter_that_gives_up_or_is_polled_again_leaves_one_waker_at_most() {
        let c = Confirmations::default();
        c.publish(progress(0, 1));
        let (mut waiter, _) = polled(&c, 7, 1);
        for _ in 0..3 {
            assert!(poll(&mut waiter).is_pending());
        }
        assert_eq!(c.lock().waiting.len(), 1, "a poll replaces its waker");
        let (kept, kept_wakes) = polled(&c, 7, 1);
        drop(waiter);
        assert_eq!(c.lock().waiting.len(), 1, "the one that gave up left");
        c.publish(progress(7, 1));
        assert_eq!(wakes(&kept_wakes), 1);
        drop(kept);
        assert!(c.lock().waiting.is_empty());
    }

    #[test]
    fn a_sweep_times_out_the_waits_whose_deadline_passed_and_only_those() {
        let c = Confirmations::default();
        c.publish(progress(0, 1));
        let start = Instant::now();
        let second = std::time::Duration::from_secs(1);
        let (mut early, early_wakes) = polled_until(&c, 5, 1, start + second);
        let (mut late, late_wakes) = polled_until(&c, 3, 1, start + 3 * second);
        c.expire(start);
        assert_eq!(
            (wakes(&early_wakes), wakes(&late_wakes)),
            (0, 0),
            "none due yet"
        );
        c.expire(start + 2 * second);
        assert_eq!((wakes(&early_wakes), wakes(&late_wakes)), (1, 0));
        assert_eq!(poll(&mut early), Poll::Ready(Err(TimedOut)));
        assert_eq!(c.lock().waiting.len(), 1, "the late one still waits");
        assert_eq!(
            poll(&mut c.wait(9, 1, start + second)),
            Poll::Ready(Err(TimedOut)),
            "a wait whose deadline an earlier sweep passed times out at once"
        );
        c.publish(progress(3, 1));
        assert_eq!(wakes(&late_wakes), 1);
        c.expire(start + 4 * second);
        assert_eq!(
            poll(&mut late),
            Poll::Ready(Ok(progress(3, 1))),
            "confirmed before it was polled again: confirmation wins"
        );
        assert!(c.lock().waiting.is_empty());
    }
}
