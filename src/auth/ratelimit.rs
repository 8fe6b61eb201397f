//! Request budgets per token subject and class (SPEC §5), and login budgets.
//!
//! Logins draw from three budgets, all spent before the password is hashed: one per
//! (username, client address), one per client address, and a slower, larger one per
//! username across all addresses. Guessing one account from one address is slow, spraying
//! many accounts from one address is slow, and guessing from many addresses at once is
//! bounded by the per-username budget; while one address guesses, the owner logging in from
//! another still gets in, since one address alone cannot spend the per-username budget.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::LimitSettings;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitClass {
    Read,
    Write,
    Validate,
    DeploymentAction,
    MetricsRead,
    Heartbeat,
    Public,
}

/// What the `X-RateLimit-*` headers say, and whether the request may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the budget is whole again (or, when refused, until one request fits).
    pub reset_seconds: u64,
}

struct Limiter {
    limiter: Keyed,
    limit: u32,
    period: Duration,
}

impl Limiter {
    fn new(limit: u32, period: Duration) -> Self {
        let n = NonZeroU32::new(limit.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period / n.get())
            .unwrap_or_else(|| Quota::per_second(n))
            .allow_burst(n);
        Self {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            limit: n.get(),
            period,
        }
    }

    fn check(&self, key: &str) -> Budget {
        let per_cell = self.period.as_secs_f64() / f64::from(self.limit);
        match self.limiter.check_key(&key.to_string()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Budget {
                    allowed: true,
                    limit: self.limit,
                    remaining,
                    reset_seconds: (f64::from(self.limit - remaining.min(self.limit)) * per_cell)
                        .ceil() as u64,
                }
            }
            Err(not_until) => Budget {
                allowed: false,
                limit: self.limit,
                remaining: 0,
                reset_seconds: not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs_f64()
                    .ceil()
                    .max(1.0) as u64,
            },
        }
    }

    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Every request budget of the server.
pub struct RateLimits {
    read: Limiter,
    write: Limiter,
    validate: Limiter,
    deployment_action: Limiter,
    metrics_read: Limiter,
    heartbeat: Limiter,
    public: Limiter,
    login_user_address: Limiter,
    login_address: Limiter,
    login_user: Limiter,
}

/// Logins per username per hour from all addresses together, unless configured.
pub const DEFAULT_LOGIN_ATTEMPTS_PER_USER_PER_HOUR: u32 = 1_000;

impl RateLimits {
    pub fn new(settings: &LimitSettings) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            read: Limiter::new(settings.reads_per_minute, minute),
            write: Limiter::new(settings.writes_per_minute, minute),
            validate: Limiter::new(settings.validate_per_minute, minute),
            deployment_action: Limiter::new(settings.deployment_actions_per_minute, minute),
            metrics_read: Limiter::new(settings.metrics_reads_per_minute, minute),
            heartbeat: Limiter::new(settings.heartbeats_per_second, Duration::from_secs(1)),
            public: Limiter::new(settings.public_per_minute, minute),
            login_user_address: Limiter::new(settings.login_attempts_per_minute, minute),
            login_address: Limiter::new(
                settings.login_attempts_per_minute.saturating_mul(4),
                minute,
            ),
            login_user: Limiter::new(
                DEFAULT_LOGIN_ATTEMPTS_PER_USER_PER_HOUR,
                Duration::from_secs(3600),
            ),
        }
    }

    /// Sets the per-username login budget (all addresses together) to `per_hour`.
    pub fn with_login_attempts_per_user_per_hour(mut self, per_hour: u32) -> Self {
        self.login_user = Limiter::new(per_hour, Duration::from_secs(3600));
        self
    }

    /// Spends one request of `class` for `key` (a token subject, or a client address).
    pub fn check(&self, class: LimitClass, key: &str) -> Budget {
        match class {
            LimitClass::Read => self.read.check(key),
            LimitClass::Write => self.write.check(key),
            LimitClass::Validate => self.validate.check(key),
            LimitClass::DeploymentAction => self.deployment_action.check(key),
            LimitClass::MetricsRead => self.metrics_read.check(key),
            LimitClass::Heartbeat => self.heartbeat.check(key),
            LimitClass::Public => self.public.check(key),
        }
    }

    /// Spends one login attempt of `username` (compared without case) from `address`;
    /// refused, with the budget that refused it, when any of the three is spent. The
    /// narrowest budget is asked first so that a refused attempt spends nothing of the wider
    /// ones: an address that keeps guessing after its limit does not eat into the owner's
    /// per-username budget.
    pub fn login_attempt(&self, username: &str, address: &str) -> Budget {
        let username = crate::auth::normalise_username(username);
        let pair = self
            .login_user_address
            .check(&format!("{username}\u{0}{address}"));
        if !pair.allowed {
            return pair;
        }
        let by_address = self.login_address.check(address);
        if !by_address.allowed {
            return by_address;
        }
        self.login_user.check(&username)
    }

    /// Drops the state of keys that have been idle for a full period.
    pub fn forget_idle(&self) {
        for limiter in [
            &self.read,
            &self.write,
            &self.validate,
            &self.deployment_action,
            &self.metrics_read,
            &self.heartbeat,
            &self.public,
            &self.login_user_address,
            &self.login_address,
            &self.login_user,
        ] {
            limiter.forget_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_count_down_per_key_and_refuse_when_spent() {
        let limits = RateLimits::new(&LimitSettings {
            writes_per_minute: 3,
            ..LimitSettings::default()
        });
        let seen: Vec<Budget> = (0..4)
            .map(|_| limits.check(LimitClass::Write, "alice"))
            .collect();
        assert_eq!(
            seen.iter().map(|b| b.remaining).collect::<Vec<_>>(),
            vec![2, 1, 0, 0]
        );
        assert!(seen[..3].iter().all(|b| b.allowed && b.limit == 3));
        assert!(!seen[3].allowed);
        assert!(seen[3].reset_seconds >= 1);
        assert!(
            limits.check(LimitClass::Write, "bob").allowed,
            "budgets are per subject"
        );
        assert!(
            limits.check(LimitClass::Read, "alice").allowed,
            "and per class"
        );
    }

    #[test]
    fn login_attempts_are_limited_per_user_and_address_per_address_and_per_user() {
        let limits = RateLimits::new(&LimitSettings {
            login_attempts_per_minute: 2,
            ..LimitSettings::default()
        })
        .with_login_attempts_per_user_per_hour(5);
        assert!(limits.login_attempt("admin", "10.0.0.1").allowed);
        assert!(limits.login_attempt("ADMIN", "10.0.0.1").allowed);
        assert!(
            !limits.login_attempt("admin", "10.0.0.1").allowed,
            "per username and address, without case"
        );
        for _ in 0..5 {
            assert!(
                !limits.login_attempt("admin", "10.0.0.1").allowed,
                "refused attempts spend nothing of the username's budget"
            );
        }
        assert!(
            limits.login_attempt("admin", "10.0.0.2").allowed,
            "another address still gets in"
        );
        assert!(limits.login_attempt("admin", "10.0.0.3").allowed);
        assert!(limits.login_attempt("admin", "10.0.0.4").allowed);
        assert!(
            !limits.login_attempt("admin", "10.0.0.5").allowed,
            "per username across addresses"
        );
        for n in 0..8 {
            assert!(
                limits
                    .login_attempt(&format!("user{n}"), "10.9.9.9")
                    .allowed
            );
        }
        assert!(
            !limits.login_attempt("user-x", "10.9.9.9").allowed,
            "per address"
        );
    }
}
