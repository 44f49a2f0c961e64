"""A checkpoint folder whose generation_config.json carries generation controls (bad_words_ids,
forced_eos_token_id), built the same way by tools/make_control_fixtures.py (which records what
transformers generates from it) and by the tests (which check xlagen against that). Needs neither
torch nor transformers.

transformers 4.57 applies generation_config.json's controls when generate() is called without
any keyword for them: on gpt2-tiny's fixture batch with max_new_tokens=NEW_TOKENS and nothing else,
the copied folder gives other tokens than the original. The ids were picked from what gpt2-tiny
emits on that batch: [310] is a token its greedy output contains (row 0, 5th new token), [163, 22]
a bigram it contains (row 0, 3rd and 4th), and forced_eos_token_id 17 replaces the last new token of
every row still running.

The copy drops "_from_model_config" from generation_config.json, as a generation config written
on its own would have it (see tools/legacy_folders.py for the derived case).
"""
import json
import os
import shutil

CONTROL = {"source": "gpt2-tiny",
           "generation_keys": {"bad_words_ids": [[310], [163, 22]], "forced_eos_token_id": 17}}


def control_folder(source, folder):
    """Copy checkpoint folder `source` to `folder` with CONTROL's keys written into its
    generation_config.json. Returns folder."""
    shutil.copytree(source, folder)
    path = os.path.join(folder, "generation_config.json")
    with open(path) as f:
        generation = json.load(f)
    generation.pop("_from_model_config", None)
    generation.update(CONTROL["generation_keys"])
    with open(path, "w") as f:
        json.dump(generation, f, indent=1)
    return folder
