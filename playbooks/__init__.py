"""The diagnosis knowledge of the guide, as data (playbooks/data/*.yaml), and the engine that walks it.

Pure Python: no BCC, no UI.  See playbooks/README.md for the file format.
"""

from .engine import Conclusion, StepResult, StepView, Walk, WalkError
from .errors import PlaybookError
from .loader import load_library
from .merge import Accumulator
from .rules import Finding

__all__ = ["Accumulator", "Conclusion", "Finding", "PlaybookError", "StepResult", "StepView", "Walk", "WalkError",
           "load_library"]
