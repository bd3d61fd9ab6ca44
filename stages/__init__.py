"""DVC stages: one module each, run as ``python -m stages.<name>`` from the project root."""
