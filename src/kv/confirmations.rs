//! Requests applied on the primary and waiting until their entry is confirmed. Each waiter is
//! woken once: when the confirmed index reaches the one it waits for, or when the server stops
//! serving in its epoch. (A channel that every waiter watches would wake them all on every
//! confirmation — with fifty clients and a confirmation every few entries, most of the
//! primary's wake-ups would be for nothing.)

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::replica::Progress;

/// Fewest distinct waited-for indices at which abandoned waiters (their request timed out)
/// are swept out.
const SWEEP_AT: usize = 1024;

/// The waiters of one server, and the progress last published.
#[derive(Debug, Default)]
pub struct Confirmations {
    /// Behind a lock held only to publish or to register (never across an `.await`).
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The newest progress published: a waiter registering after it sees it at once.
    progress: Progress,
    /// The waiters, by the index each waits for.
    waiting: BTreeMap<u64, Vec<oneshot::Sender<Progress>>>,
    /// Sweep abandoned waiters when `waiting` holds this many indices.
    sweep_at: usize,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            progress: Progress::default(),
            waiting: BTreeMap::new(),
            sweep_at: SWEEP_AT,
        }
    }
}

/// What a waiter gets: the progress that settles it now, or a receiver of it.
#[derive(Debug)]
pub enum Wait {
    /// Settled already.
    Ready(Progress),
    /// Sent the progress that settles it (or dropped if the server is dropped).
    Pending(oneshot::Receiver<Progress>),
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
        let settled = match progress.confirmed.checked_add(1) {
            Some(next) if !new_epoch => {
                let later = inner.waiting.split_off(&next);
                std::mem::replace(&mut inner.waiting, later)
            }
            _ => std::mem::take(&mut inner.waiting),
        };
        drop(inner);
        for waiter in settled.into_values().flatten() {
            // A waiter that gave up (timed out) dropped its receiver: nothing to tell.
            let _ = waiter.send(progress);
        }
    }

    /// Wait until entry `index` is confirmed, or the server no longer serves in `epoch`.
    pub fn wait(&self, index: u64, epoch: u64) -> Wait {
        let mut inner = self.lock();
        let now = inner.progress;
        if now.confirmed >= index || now.epoch != epoch {
            return Wait::Ready(now);
        }
        if inner.waiting.len() >= inner.sweep_at {
            inner.waiting.retain(|_, waiters| {
                waiters.retain(|w| !w.is_closed());
                !waiters.is_empty()
            });
            inner.sweep_at = (inner.waiting.len() * 2).max(SWEEP_AT);
        }
        let (sender, receiver) = oneshot::channel();
        inner.waiting.entry(index).or_default().push(sender);
        Wait::Pending(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(confirmed: u64, epoch: u64) -> Progress {
        Progress { confirmed, epoch }
    }

    fn pending(wait: Wait) -> oneshot::Receiver<Progress> {
        match wait {
            Wait::Pending(receiver) => receiver,
            Wait::Ready(p) => panic!("settled already at {p:?}"),
        }
    }

    #[test]
    fn a_waiter_is_woken_once_its_index_is_confirmed_and_not_before() {
        let c = Confirmations::default();
        c.publish(progress(2, 1));
        assert!(matches!(c.wait(2, 1), Wait::Ready(p) if p == progress(2, 1)));
        let mut third = pending(c.wait(3, 1));
        let mut fifth = pending(c.wait(5, 1));
        let mut fifth_too = pending(c.wait(5, 1));
        c.publish(progress(4, 1));
        assert_eq!(third.try_recv(), Ok(progress(4, 1)));
        assert!(fifth.try_recv().is_err(), "entry 5 is not confirmed yet");
        c.publish(progress(5, 1));
        assert_eq!(fifth.try_recv(), Ok(progress(5, 1)));
        assert_eq!(fifth_too.try_recv(), Ok(progress(5, 1)));
    }

    #[test]
    fn a_new_epoch_wakes_every_waiter_and_settles_older_ones_at_once() {
        let c = Confirmations::default();
        c.publish(progress(1, 1));
        let mut waiter = pending(c.wait(9, 1));
        c.publish(progress(1, 2));
        assert_eq!(waiter.try_recv(), Ok(progress(1, 2)));
        assert!(matches!(c.wait(9, 1), Wait::Ready(p) if p.epoch == 2));
        let mut last = pending(c.wait(u64::MAX, 2));
        c.publish(progress(u64::MAX, 2));
        assert_eq!(last.try_recv(), Ok(progress(u64::MAX, 2)));
    }

    #[test]
    fn abandoned_waiters_are_swept_out() {
        let c = Confirmations::default();
        c.publish(progress(0, 1));
        for index in 1..=(SWEEP_AT as u64 * 3) {
            drop(c.wait(index, 1));
        }
        let held = c.lock().waiting.len();
        assert!(
            held <= SWEEP_AT,
            "{held} indices held for waiters that gave up"
        );
        let mut live = pending(c.wait(u64::MAX - 1, 1));
        c.publish(progress(u64::MAX - 1, 1));
        assert_eq!(live.try_recv(), Ok(progress(u64::MAX - 1, 1)));
    }
}
