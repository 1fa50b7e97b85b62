//! What the criterion benches share: the store sizes they run at.

/// Sizes from `SEGSYNC_BENCH_SIZES` (comma-separated), else `default`.
pub fn sizes(default: &[u64]) -> Vec<u64> {
    std::env::var("SEGSYNC_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}
