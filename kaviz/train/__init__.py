"""Models, masks and schedules, distillation losses, the training loop, data-parallel training."""
