"""sparcom: find, compare and causally test the instruction-specific neurons and experts of language models."""

__version__ = "0.1.0"

from sparcom.profile.artifacts import ProfileRun, load_run, merge_runs
from sparcom.profile.runner import ProfileSettings, profile, wrap_model

__all__ = ["ProfileRun", "ProfileSettings", "__version__", "load_run", "merge_runs", "profile", "wrap_model"]
