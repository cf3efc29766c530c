"""The DeepSpeed trainer shared by pretraining, distillation and pruning recovery."""
