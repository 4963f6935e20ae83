//! Turning layer blobs into one squashfs: decompress, flatten, squash.
