//! Requests applied on the primary and waiting until their entry is confirmed. Each waiter is
//! woken once: when the confirmed index reaches the one it waits for, or when the server stops
//! serving in its epoch. (A channel that every waiter watches would wake them all on every
//! confirmation — with fifty clients and a confirmation every few entries, most of the
//! primary's wake-ups would be for nothing.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

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
    /// The waiters' wakers by the index each waits for, in index order. Its room is kept
    /// from one request to the next, so waiting allocates nothing.
    waiting: VecDeque<(u64, Waker)>,
}

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
                .partition_point(|(index, _)| *index <= progress.confirmed)
        };
        let woken: Vec<Waker> = inner.waiting.drain(..settled).map(|(_, w)| w).collect();
        drop(inner);
        woken.into_iter().for_each(Waker::wake);
    }

    /// Wait until entry `index` is confirmed, or the server no longer serves in `epoch`: the
    /// progress that settled it.
    pub fn wait(&self, index: u64, epoch: u64) -> Confirmed<'_> {
        Confirmed {
            confirmations: self,
            index,
            epoch,
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
    /// The waker it left in the queue, until it is woken: taken out again if it gives up.
    registered: Option<Waker>,
}

impl Future for Confirmed<'_> {
    type Output = Progress;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Progress> {
        let this = &mut *self;
        let mut inner = this.confirmations.lock();
        let now = inner.progress;
        if now.confirmed >= this.index || now.epoch != this.epoch {
            // Whoever published this took the waker out of the queue.
            this.registered = None;
            return Poll::Ready(now);
        }
        // Published progress only ever settles a waiter, so one still in the queue stays
        // there; a new waker (the task moved) replaces the old one.
        if let Some(old) = this.registered.take() {
            remove(&mut inner.waiting, this.index, &old);
        }
        let at = inner.waiting.partition_point(|(i, _)| *i <= this.index);
        inner.waiting.insert(at, (this.index, cx.waker().clone()));
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
fn remove(waiting: &mut VecDeque<(u64, Waker)>, index: u64, waker: &Waker) {
    let from = waiting.partition_point(|(i, _)| *i < index);
    let found = (from..waiting.len())
        .take_while(|&at| waiting[at].0 == index)
        .find(|&at| waiting[at].1.will_wake(waker));
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
        let counter = Arc::new(Counter::default());
        let mut waiter = c.wait(index, epoch);
        let waker = Waker::from(counter.clone());
        let first = Pin::new(&mut waiter).poll(&mut Context::from_waker(&waker));
        assert!(first.is_pending(), "settled already");
        (waiter, counter)
    }

    fn poll(waiter: &mut Confirmed<'_>) -> Poll<Progress> {
        Pin::new(waiter).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn wakes(counter: &Counter) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_waiter_is_woken_once_its_index_is_confirmed_and_not_before() {
        let c = Confirmations::default();
        c.publish(progress(2, 1));
        assert_eq!(poll(&mut c.wait(2, 1)), Poll::Ready(progress(2, 1)));
        let (mut fifth, fifth_wakes) = polled(&c, 5, 1);
        let (mut third, third_wakes) = polled(&c, 3, 1);
        let (_other_fifth, other_fifth_wakes) = polled(&c, 5, 1);
        c.publish(progress(4, 1));
        assert_eq!(wakes(&third_wakes), 1);
        assert_eq!(wakes(&fifth_wakes), 0, "entry 5 is not confirmed yet");
        assert_eq!(poll(&mut third), Poll::Ready(progress(4, 1)));
        c.publish(progress(5, 1));
        assert_eq!((wakes(&fifth_wakes), wakes(&other_fifth_wakes)), (1, 1));
        assert_eq!(poll(&mut fifth), Poll::Ready(progress(5, 1)));
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
        assert_eq!(poll(&mut waiter), Poll::Ready(progress(1, 2)));
        assert_eq!(poll(&mut c.wait(9, 1)), Poll::Ready(progress(1, 2)));
        let (mut last, _) = polled(&c, u64::MAX, 2);
        c.publish(progress(u64::MAX, 2));
        assert_eq!(poll(&mut last), Poll::Ready(progress(u64::MAX, 2)));
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
}
