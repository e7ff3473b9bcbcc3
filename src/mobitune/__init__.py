"""mobitune: fine-tune Keras MobileNet on your own images, tracked and swept.

Heavy libraries (TensorFlow, MLflow, Optuna) are imported lazily by the modules
that need them, so that `mobitune --help` and the data commands start fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mobitune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
