"""Shared test helpers (study_support) importable from every test module, run alone or in the suite."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
