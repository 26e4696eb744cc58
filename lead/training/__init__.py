"""Training: contrastive warm-up (`train`) and distillation (`distill`) in one loop.

- data.py: training examples (query, positive, sampled negatives) in each model's own tokens
- loop.py: the loop (accumulation, data parallelism, clipping, logging, evaluation)
- checkpoint.py: resumable state, written atomically
- validation.py: dev evaluation that picks the best checkpoint
"""
