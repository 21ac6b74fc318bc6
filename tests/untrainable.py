"""A factory module that offers no fine-tuning data (no modelpress_train_data)."""

from tests.factories import residual_net  # noqa: F401
