//! The capped exponential backoff of every retry loop: reconnecting to the root or the
//! cluster, registering a worker, redeploying a failing instance.

use std::time::Duration;

/// Capped exponential backoff: `base`, `2·base`, `4·base` … never above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff from `base` doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The wait after `current`: twice as long, at most the cap.
    pub fn next(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.cap)
    }

    /// The wait before retry number `attempt` (0-based) when the first retry is immediate:
    /// 0, base, 2·base, 4·base … ≤ cap.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (attempt - 1).min(16);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn next_doubles_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let mut d = b.base;
        let mut seen = vec![d];
        for _ in 0..6 {
            d = b.next(d);
            seen.push(d);
        }
        assert_eq!(seen, [100, 200, 400, 800, 1000, 1000, 1000].map(|n| n * MS));
    }

    #[test]
    fn delay_starts_immediate_and_is_capped_for_any_attempt() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let secs: Vec<u64> = (0..8).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }
}
