"""modelpress: turn a trained model into a deployable, measured, compressed artifact."""

__version__ = "0.1.0"
