"""fairl: failure-aware inverse RL (FA-IRL) for LLM alignment."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fairl")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
