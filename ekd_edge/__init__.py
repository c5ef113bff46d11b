"""ekd-edge: evolving knowledge distillation of small translation students, for the edge."""

__version__ = "0.1.0"
