//! Caps on open event streams (`GET /deployments/{id}/events`): at most
//! `server.max_event_streams` in all and `server.max_event_streams_per_user` per token
//! subject. A stream holds a [`StreamSlot`] for its whole life; the slot, and the subject's
//! entry once its last stream is gone, are given back when the stream's task ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::ApiError;

#[derive(Default)]
struct Open {
    total: usize,
    by_subject: HashMap<String, usize>,
}

/// The open streams; cheap to clone.
#[derive(Clone)]
pub struct EventStreams {
    open: Arc<Mutex<Open>>,
    max_total: usize,
    max_per_subject: usize,
}

impl EventStreams {
    pub fn new(max_total: usize, max_per_subject: usize) -> Self {
        Self {
            open: Arc::new(Mutex::new(Open::default())),
            max_total,
            max_per_subject,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A slot for one more stream of `subject`: 429 when the subject has its share open,
    /// 503 when the server has.
    pub fn open(&self, subject: &str) -> Result<StreamSlot, ApiError> {
        let mut open = self.lock();
        let mine = open.by_subject.get(subject).copied().unwrap_or(0);
        if mine >= self.max_per_subject {
            return Err(ApiError::RateLimited {
                message: format!(
                    "at most {} event streams per user are open at once; close one first",
                    self.max_per_subject
                ),
                retry_after: 1,
            });
        }
        if open.total >= self.max_total {
            return Err(ApiError::Unavailable(
                "too many event streams are open; retry shortly".into(),
            ));
        }
        open.total += 1;
        *open.by_subject.entry(subject.to_string()).or_default() += 1;
        metrics::gauge!("edgeplane_event_streams_open").set(open.total as f64);
        Ok(StreamSlot {
            streams: self.clone(),
            subject: subject.to_string(),
        })
    }

    /// Streams open now, in all and for `subject`.
    pub fn count(&self, subject: &str) -> (usize, usize) {
        let open = self.lock();
        (
            open.total,
            open.by_subject.get(subject).copied().unwrap_or(0),
        )
    }

    /// Subjects with a stream open (what the bookkeeping holds).
    pub fn subjects(&self) -> usize {
        self.lock().by_subject.len()
    }
}

/// One open stream's place; dropping it gives the place back.
pub struct StreamSlot {
    streams: EventStreams,
    subject: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.by_subject.get_mut(&self.subject) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.by_subject.remove(&self.subject);
            }
        }
        metrics::gauge!("edgeplane_event_streams_open").set(open.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_subject_and_in_all_and_given_back() {
        let streams = EventStreams::new(3, 2);
        let a1 = streams.open("alice").unwrap();
        let a2 = streams.open("alice").unwrap();
        assert!(matches!(
            streams.open("alice"),
            Err(ApiError::RateLimited { .. })
        ));
        let b1 = streams.open("bob").unwrap();
        assert!(matches!(
            streams.open("carol"),
            Err(ApiError::Unavailable(_))
        ));
        drop(a1);
        assert_eq!(streams.count("alice"), (2, 1));
        let c1 = streams.open("carol").unwrap();
        drop((a2, b1, c1));
        assert_eq!(streams.count("alice"), (0, 0));
        assert_eq!(
            streams.subjects(),
            0,
            "nothing is kept for subjects who left"
        );
    }
}
