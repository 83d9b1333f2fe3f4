"""llmst: LLM-centric self-training toolkit.

Kept import-light on purpose: `import llmst` and `llmst --help` must not import torch.
"""

__version__ = "0.1.0"
