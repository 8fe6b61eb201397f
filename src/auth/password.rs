//! Argon2id password hashes (PHC strings with their own salt and parameters), and the small
//! pool of threads that computes them for the server.
//!
//! Each hash takes about 19 MiB of memory for its whole run. Unbounded, a burst of logins
//! multiplies that by the number of requests, and glibc keeps what each thread freed in that
//! thread's arena. So the server hashes on a fixed set of threads, at most
//! `max_concurrent_hashes` at once: its memory for hashing is that many times 19 MiB, reused
//! from one login to the next. A caller that waits longer than the queue timeout for a
//! thread is told the server is busy (429) instead of piling up.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

use super::AuthError;

thread_local! {
    /// Argon2's working memory, kept by each thread that hashes and reused by its next hash.
    /// Allocating 19 MiB per hash and freeing it leaves glibc holding a growing share of
    /// those blocks in the thread's arena (about 100 MiB per thread after a few dozen
    /// hashes); one buffer per thread is exactly 19 MiB, for good.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Hashes asking for more memory than this (a stored hash with unusual parameters) get a
/// buffer of their own instead of growing the kept one.
const MAX_KEPT_BLOCKS: usize = 64 * 1024;

/// Runs Argon2 `argon` over `password` and `salt` into `out`, in this thread's kept memory.
fn compute(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = argon.params().block_count();
    if blocks > MAX_KEPT_BLOCKS {
        return argon.hash_password_into(password, salt, out);
    }
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

/// Hashes a password with Argon2id (the crate's default parameters: 19 MiB, 2 passes) and a
/// fresh random salt, as a PHC string. CPU- and memory-heavy: the server calls it through a
/// [`HashPool`].
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let failed =
        |e: &dyn std::fmt::Display| AuthError::Unavailable(format!("cannot hash password: {e}"));
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| failed(&e))?;
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(&argon, password.as_bytes(), salt_bytes, &mut out).map_err(|e| failed(&e))?;
    let output = Output::new(&out).map_err(|e| failed(&e))?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        salt.as_str(),
        output
    ))
}

/// Checks a password against a stored PHC hash (any Argon2 variant and parameters); a
/// malformed hash never matches. The comparison takes the same time wherever they differ.
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored_hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    if compute(&argon, password.as_bytes(), salt_bytes, &mut out).is_err() {
        return false;
    }
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// A hash to verify against when the user does not exist, so that a login for an unknown
/// name costs as much as one for a known name.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy-password-never-matches").unwrap_or_default())
}

/// Why the pool did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Every hashing thread stayed busy for the whole queue timeout.
    #[error("too many logins at once; retry shortly")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed number of threads that hash and verify passwords, and the queue in front of them.
/// Cheap to clone.
#[derive(Clone)]
pub struct HashPool {
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    jobs: Arc<Mutex<mpsc::Sender<Job>>>,
}

impl HashPool {
    /// Starts `threads` hashing threads (at least one); a caller waits at most
    /// `queue_timeout` for one of them.
    pub fn new(threads: usize, queue_timeout: Duration) -> Self {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    loop {
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            // Every pool handle is gone.
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(threads)),
            queue_timeout,
            jobs: Arc::new(Mutex::new(sender)),
        }
    }

    /// Runs `work` on a hashing thread once one is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        // A permit per thread: the job sent below never waits in the channel, so the queue
        // (and its timeout) is here, where a caller can give up.
        let _permit = tokio::time::timeout(self.queue_timeout, self.permits.acquire())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Failed("the password hashing pool is closed".into()))?;
        metrics::gauge!("edgeplane_password_hashes_running").increment(1.0);
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        let sent = match self.jobs.lock() {
            Ok(jobs) => jobs.send(job),
            Err(poisoned) => poisoned.into_inner().send(job),
        };
        let result = match sent {
            Ok(()) => answered
                .await
                .map_err(|_| HashError::Failed("a password hashing thread stopped".into())),
            Err(_) => Err(HashError::Failed(
                "no password hashing thread is running".into(),
            )),
        };
        metrics::gauge!("edgeplane_password_hashes_running").decrement(1.0);
        result
    }

    /// [`hash_password`] on the pool.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_password(&password))
            .await?
            .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// [`verify_password`] on the pool; `None` verifies against the decoy, so that an
    /// unknown user costs as much as a wrong password (and never matches).
    pub async fn verify(
        &self,
        password: String,
        stored_hash: Option<String>,
    ) -> Result<bool, HashError> {
        self.run(move || match stored_hash {
            Some(stored_hash) => verify_password(&password, &stored_hash),
            None => {
                verify_password(&password, decoy_hash());
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salts differ");
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("wrong horse battery", &a));
        assert!(!verify_password("correct horse battery", "not a hash"));
        // Hashes from the Argon2 crate's own hasher verify, and ours verify with it.
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse battery", &theirs));
        assert!(!verify_password("wrong horse battery", &theirs));
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", &PasswordHash::new(&a).unwrap())
                .is_ok()
        );
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse battery", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify_password("correct horse battery", &argon2i));
    }

    #[tokio::test]
    async fn the_pool_hashes_and_says_busy_when_its_queue_waits_too_long() {
        let pool = HashPool::new(1, Duration::from_secs(30));
        let hash = pool.hash("correct horse battery".into()).await.unwrap();
        assert!(
            pool.verify("correct horse battery".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong".into(), Some(hash)).await.unwrap());
        assert!(
            !pool
                .verify("decoy-password-never-matches".into(), None)
                .await
                .unwrap()
        );

        // The one thread is held until the test lets it go; a caller with a zero queue
        // timeout is refused at once instead of waiting behind it.
        let impatient = HashPool {
            queue_timeout: Duration::ZERO,
            ..pool.clone()
        };
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || released.recv().is_ok()).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pool.permits.available_permits() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the holder never started"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            impatient.verify("x".into(), None).await,
            Err(HashError::Busy)
        );
        release.send(()).unwrap();
        assert_eq!(holder.await.unwrap(), Ok(true));
        assert!(!impatient.verify("x".into(), None).await.unwrap());
    }
}
