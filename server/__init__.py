"""vm-system: long-lived JavaScript sessions on QuickJS, streamed live."""

__version__ = "0.1.0"
