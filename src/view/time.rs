//! Small readings of times and durations shared by every view of the runs.

use crate::clock::Timestamp;

/// How long ago `then` was, in the largest whole unit: `12s ago`, `5m ago`, `3h ago`,
/// `2d ago` (what the CLI's listings and the dashboard show).
pub fn ago(now: Timestamp, then: Timestamp) -> String {
    let secs = now.since(then).as_secs();
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The `p`-th quantile (0.0 to 1.0, nearest rank) of `sorted`; `None` if it is empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings() {
        let now = Timestamp::from_millis(10 * 86_400_000);
        let ago_s = |s: u64| ago(now, Timestamp::from_millis(now.as_millis() - s * 1000));
        assert_eq!(
            [ago_s(59), ago_s(60), ago_s(3599), ago_s(3600), ago_s(86_400)],
            ["59s ago", "1m ago", "59m ago", "1h ago", "1d ago"]
        );
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[10, 20, 30], 0.5), Some(20));
        assert_eq!(percentile(&[10, 20, 30], 0.95), Some(30));
    }
}
