"""Training: one model's loop, K stacked models at once, and the memory a run needs."""
