"""auditmi: black-box membership audits of pre-trained image encoders (EncoderMI and beyond)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
