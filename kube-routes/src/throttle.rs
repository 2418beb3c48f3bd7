//! The wait on 429: a call the API server's priority and fairness turned away unprocessed is
//! made again after the wait the server asks for, a few times, before its caller sees a 503.
//!
//! Not kube's own retry policy (`kube::Config::default_retry`), which retries 429s and 503s
//! unseen for up to minutes, past JupyterHub's patience; give the stores a client without it.

use std::future::Future;
use std::time::Duration;

use crate::answers::Failure;

/// How often a call the API server answered 429 is tried again before its caller sees a 503.
const THROTTLED_RETRIES: u32 = 4;

/// Makes `call` (one API call, counted by [`KubeMetrics::time`](crate::KubeMetrics::time)
/// inside it), and again after the wait the API server asks for each time it answers 429, up
/// to 4 times; any other answer is the caller's.
pub async fn retry_throttled<T, F>(mut call: impl FnMut() -> F) -> Result<T, kube::Error>
where
    F: Future<Output = Result<T, kube::Error>>,
{
    let mut throttled = 0;
    loop {
        match call().await {
            Err(kube::Error::Api(status))
                if Failure::of_status(&status) == Failure::Throttled && throttled < THROTTLED_RETRIES =>
            {
                throttled += 1;
                let wait = throttled_wait(&status, throttled);
                tracing::debug!(?wait, attempt = throttled, "the API server throttled a call; waiting");
                tokio::time::sleep(wait).await;
            }
            result => return result,
        }
    }
}

/// How long to wait before trying a throttled call again: what the server asks for
/// (`retryAfterSeconds`, at most 2 s, since JupyterHub is waiting), else 100 ms doubling.
fn throttled_wait(status: &kube::core::Status, attempt: u32) -> Duration {
    let asked = status.details.as_ref().map_or(0, |details| details.retry_after_seconds);
    if asked > 0 {
        Duration::from_secs(u64::from(asked)).min(Duration::from_secs(2))
    } else {
        Duration::from_millis(100 << attempt.saturating_sub(1).min(4))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use kube::core::Status;

    use super::*;

    fn throttled() -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("too many requests", "TooManyRequests").with_code(429)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_call_is_made_again_four_times_at_most() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_throttled(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(throttled()) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1 + THROTTLED_RETRIES);
    }

    #[tokio::test(start_paused = true)]
    async fn other_answers_are_the_callers() {
        let calls = AtomicU32::new(0);
        let result = retry_throttled(|| {
            let call = calls.fetch_add(1, Ordering::Relaxed);
            async move { if call == 0 { Err(throttled()) } else { Ok(call) } }
        })
        .await;
        assert_eq!(result.unwrap(), 1, "made again once, then answered");
    }
}
