//! Retries: jittered exponential backoff under an attempt limit and a total
//! deadline, on transient failures. Every request the client sends is safe
//! to resend: the two that are not idempotent make up for it where they
//! are sent (CreateMultipartUpload aborts what a lost answer created,
//! CompleteMultipartUpload recognises its own object; see `http`).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::error::S3Error;

#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Attempts in all, the first included. 1 disables retries.
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles with each further one.
    pub initial_backoff: Duration,
    /// Backoff ceiling that doubling stops at.
    pub max_backoff: Duration,
    /// No retry starts after this much time since the first attempt, so a
    /// failing server costs a bounded time, not attempts x timeouts.
    pub deadline: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            // Ten attempts ride out a server restart or a burst of SlowDown
            // (about 20 s of backoff at the ceiling) without hiding an outage.
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryConfig {
    /// The full-jitter backoff before retry number `retry` (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self.initial_backoff.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let ceiling = exp.min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempt limit
    /// or deadline is reached; returns the last error then. `on_retry` is told
    /// of each retry (for counters and logs).
    pub async fn run<T, F, Fut>(
        &self,
        mut on_retry: impl FnMut(&S3Error, u32),
        mut attempt: F,
    ) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, S3Error>>,
    {
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    if tries >= self.max_attempts || !err.is_transient() {
                        return Err(err);
                    }
                    let wait = self.backoff(tries);
                    if start.elapsed() + wait >= self.deadline {
                        return Err(err);
                    }
                    on_retry(&err, tries);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::error::S3ErrorCode;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn internal() -> S3Error {
        S3Error::service("Op", 500, S3ErrorCode::InternalError, "boom", None)
    }

    fn quick() -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            deadline: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn retries_transient_until_success() {
        let calls = AtomicU32::new(0);
        let mut retries = 0;
        let r = quick()
            .run(
                |_, _| retries += 1,
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                        Err(internal())
                    } else {
                        Ok(7)
                    }
                },
            )
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(retries, 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = quick()
            .run(
                |_, _| {},
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(internal())
                },
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = quick()
            .run(
                |_, _| {},
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(S3Error::service(
                        "Op",
                        404,
                        S3ErrorCode::NoSuchKey,
                        "",
                        None,
                    ))
                },
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_bounds_total_time() {
        let cfg = RetryConfig {
            max_attempts: 1000,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
        };
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r: Result<(), _> = cfg
            .run(
                |_, _| {},
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(internal())
                },
            )
            .await;
        assert!(r.is_err());
        // The clock is tokio's (paused here), so backoff sleeps count
        // toward the deadline and the loop stops long before 1000 attempts.
        assert!(calls.load(Ordering::SeqCst) < 100);
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cfg = RetryConfig::default();
        for retry in 1..40 {
            assert!(cfg.backoff(retry) <= cfg.max_backoff);
        }
    }
}
