"""A built-in benchmark with ground truth: procedural images with per-pixel object masks, and small
CNNs trained on them deterministically on CPU (classification, segmentation, regression)."""
