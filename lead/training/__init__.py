"""Training: contrastive warm-up (`warmup`) and distillation (`distill`) in one loop.

- loop.py: the loop, one page (accumulation, data parallelism, clipping, logging, evaluation)
- objective.py: the loss of every method; layers.py: which layer pairs LEAD aligns
- data.py: training examples (query, positive, sampled negatives) in each model's own tokens
- teacher_cache.py: a frozen dual-encoder teacher's per-layer vectors, encoded once
- validation.py: dev evaluation that picks the best checkpoint
- checkpoint.py: resumable state, written atomically
- job.py, optim.py, progress.py: what a run reads and writes, its optimizers, its log
"""
