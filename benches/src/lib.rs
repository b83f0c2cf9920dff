//! Criterion benchmarks live in `benches/`; `benches/RESULTS.md` records their figures.
