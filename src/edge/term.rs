//! The highest cluster term an edge has seen (SPEC §9 fencing): a push or rollback from a
//! lower term is refused, so a primary that was replaced cannot change the fleet behind the
//! new one's back. The agent keeps the term in its state dir, so a restart does not forget
//! it; a simulated edge keeps it in memory.

use std::sync::Mutex;

/// Writes a newly seen term durably before it is acted on.
pub(crate) type PersistTerm = Box<dyn Fn(u64) -> std::io::Result<()> + Send + Sync>;

/// Why a term was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TermRefusal {
    /// The request's term is lower than `seen`.
    Stale { seen: u64 },
    /// A higher term could not be written down; taking the push without it would let a
    /// restart forget the fence.
    Unrecorded(String),
}

pub(crate) struct TermGuard {
    highest: Mutex<u64>,
    persist: Option<PersistTerm>,
}

impl TermGuard {
    pub(crate) fn in_memory() -> Self {
        Self {
            highest: Mutex::new(0),
            persist: None,
        }
    }

    /// A guard starting at `highest` (read back from disk) that writes every rise with
    /// `persist`.
    pub(crate) fn persistent(highest: u64, persist: PersistTerm) -> Self {
        Self {
            highest: Mutex::new(highest),
            persist: Some(persist),
        }
    }

    pub(crate) fn highest(&self) -> u64 {
        *self.highest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a request from `term`: refused below the highest seen; a higher one becomes the
    /// highest (written down first).
    #[cfg(test)]
    pub(crate) fn admit(&self, term: u64) -> Result<(), TermRefusal> {
        self.admit_then(term, || {})
    }

    /// [`Self::admit`], running `then` once admitted before any other term is admitted: what
    /// a sender's term entitles it to (naming the primary) cannot be overtaken by a request
    /// from a higher term admitted in between.
    pub(crate) fn admit_then(&self, term: u64, then: impl FnOnce()) -> Result<(), TermRefusal> {
        // Held across the write so two rising terms are recorded in order.
        let mut highest = self.highest.lock().unwrap_or_else(|p| p.into_inner());
        if term < *highest {
            return Err(TermRefusal::Stale { seen: *highest });
        }
        if term > *highest {
            if let Some(persist) = &self.persist {
                persist(term).map_err(|e| TermRefusal::Unrecorded(e.to_string()))?;
            }
            *highest = term;
        }
        then();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn lower_terms_are_refused_naming_the_highest_seen() {
        let guard = TermGuard::in_memory();
        assert_eq!(guard.admit(1), Ok(()));
        assert_eq!(guard.admit(3), Ok(()));
        assert_eq!(guard.admit(3), Ok(()));
        assert_eq!(guard.admit(2), Err(TermRefusal::Stale { seen: 3 }));
        assert_eq!(guard.highest(), 3);
    }

    #[test]
    fn a_rise_is_written_before_it_is_admitted() {
        let written = Arc::new(AtomicU64::new(0));
        let sink = written.clone();
        let guard = TermGuard::persistent(
            4,
            Box::new(move |term| {
                sink.store(term, Ordering::SeqCst);
                Ok(())
            }),
        );
        assert_eq!(guard.admit(3), Err(TermRefusal::Stale { seen: 4 }));
        assert_eq!(guard.admit(4), Ok(()));
        assert_eq!(
            written.load(Ordering::SeqCst),
            0,
            "no rise, nothing written"
        );
        assert_eq!(guard.admit(6), Ok(()));
        assert_eq!(written.load(Ordering::SeqCst), 6);

        let failing =
            TermGuard::persistent(1, Box::new(|_| Err(std::io::Error::other("disk full"))));
        assert!(matches!(failing.admit(2), Err(TermRefusal::Unrecorded(_))));
        assert_eq!(failing.highest(), 1, "an unrecorded term is not taken");
    }
}
