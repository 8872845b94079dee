"""jupyter-remote: a supervised, password-protected HTTPS JupyterLab as one systemd service."""

__version__ = "0.1.0"
