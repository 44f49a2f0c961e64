"""Moved to xlagen.engine.jobs.beam_pipeline (Apache Beam, not beam search); kept importable here."""
from .jobs.beam_pipeline import MAX_PROMPTS_PER_CALL, XlagenModelHandler, generate  # noqa: F401
