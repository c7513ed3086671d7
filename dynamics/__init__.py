"""dynamics: theory simulators for the training dynamics and depth efficiency of self-attention.

Nothing is imported eagerly: topic modules pull in torch only when they are used.
"""

__version__ = "0.1.0"
