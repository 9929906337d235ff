"""Training: typed run settings, learning-rate schedules, the loop, checkpoints, distributed set-up."""
