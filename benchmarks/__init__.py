"""azbai's benchmarks: ``python -m benchmarks`` prints ``name: value`` lines (medians of repeated, side-by-side runs)."""
