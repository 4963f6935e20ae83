//! `warren doctor` (placeholder while the checks are written).
