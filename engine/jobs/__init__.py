"""Host-side jobs over a Generator: the command line (cli.py), generation over a file of prompts
(batch.py) and the same job as an Apache Beam pipeline (beam_pipeline.py)."""
