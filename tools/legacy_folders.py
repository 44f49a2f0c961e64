"""Checkpoint folders whose config.json carries legacy generation keys, built the same way by
tools/make_generation_fixtures.py (which records what transformers generates from them) and by
tests/test_engine.py (which checks xlagen against that). Needs neither torch nor transformers.

transformers 4.57 takes its generation defaults from config.json when a folder has no
generation_config.json, and also when generation_config.json says "_from_model_config": true
(it was derived from config.json) while config.json holds non-default generation keys: the
deprecated path of GenerationMixin._prepare_generation_config. A generation_config.json written
on its own wins.
"""
import json
import os
import shutil

LEGACY = {"config_keys": {"num_beams": 3, "max_length": 9, "no_repeat_ngram_size": 2, "repetition_penalty": 1.4},
          "variants": {"derived": "generation_config.json kept (\"_from_model_config\": true)",
                       "explicit": "generation_config.json without \"_from_model_config\"",
                       "absent": "no generation_config.json"}}


def legacy_folder(source, variant, folder):
    """Copy checkpoint folder `source` to `folder` with LEGACY's keys added to config.json, in one of
    LEGACY's variants. Returns folder."""
    shutil.copytree(source, folder)
    config_path, generation_path = (os.path.join(folder, f) for f in ("config.json", "generation_config.json"))
    with open(config_path) as f:
        config = json.load(f)
    with open(config_path, "w") as f:
        json.dump(dict(config, **LEGACY["config_keys"]), f, indent=1)
    if variant == "absent":
        os.remove(generation_path)
    elif variant == "explicit":
        with open(generation_path) as f:
            generation = json.load(f)
        generation.pop("_from_model_config")
        with open(generation_path, "w") as f:
            json.dump(generation, f, indent=1)
    return folder
