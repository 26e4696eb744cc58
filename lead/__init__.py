"""lead: reproducible LEAD (liberal feature-based distillation) for dense retrieval."""

__version__ = "0.1.0"
