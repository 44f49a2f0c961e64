"""xlagen on Apache Beam: a ModelHandler for RunInference, and `xlagen batch --runner` as a pipeline.

    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from xlagen.engine.jobs.beam_pipeline import XlagenModelHandler

    with beam.Pipeline() as p:
        (p | beam.Create([("a", "The for statement"), ("b", "A class")])
           | RunInference(KeyedModelHandler(XlagenModelHandler(max_new_tokens=16)))
           | beam.Map(lambda kv: (kv[0], kv[1].inference)))   # ("a", ["completion", ...])

Each worker loads the checkpoint once (Beam keeps the model per process) and generates every
batch Beam hands it with Generator.generate_many, so prompts are bucketed by length inside
the batch. Needs the `beam` extra: pip install "xlagen[beam]".
"""
import json
import tempfile
import uuid

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from .batch import result

# The most prompts RunInference groups into one run_inference call: enough for generate_many
# to fill a few length buckets with full batches.
MAX_PROMPTS_PER_CALL = 256
_NEW_TOKENS = Metrics.counter("xlagen", "new_tokens")  # summed over workers: the job's tokens/s


class XlagenModelHandler(ModelHandler):
    """Generates completions of str examples with an xlagen checkpoint.

    Args:
      model: checkpoint folder or Hub id, as for xlagen.engine.load (None: the bundled model);
        every worker must be able to load it.
      revision: Hub branch, tag or commit (Hub ids only).
      batch_size: prompts per generate call, as for Generator.generate_many (None: from the
        memory estimate).
      compile_cache: folder of the persistent compile cache on the workers ("" off, None: the
        default, see xlagen.engine.enable_compile_cache).
      load_kwargs: further arguments of xlagen.engine.load ({"dtype": "bfloat16"}, {"quantize": "int8"}).
      beam_kwargs: ModelHandler's own arguments (min_batch_size, max_batch_size, model_copies,
        large_model, ...); the batch sizes default to MAX_PROMPTS_PER_CALL.
      **options: generation options, as for generate (the same for every prompt; a prompt that
        encodes to no tokens fails its whole batch, as in generate_many).
    run_inference gives one PredictionResult per example: inference is the list of its
    num_return_sequences completions (str), model_id the checkpoint's folder.
    """

    def __init__(self, model=None, revision=None, batch_size=None, compile_cache=None, beam_kwargs=None,
                 load_kwargs=None, **options):
        # A fixed batch size by default: Beam's adaptive batching starts at one element and
        # grows, and every new batch shape is an XLA compile (a bundle's last batch is smaller anyway).
        beam_kwargs = dict({"min_batch_size": MAX_PROMPTS_PER_CALL, "max_batch_size": MAX_PROMPTS_PER_CALL},
                           **(beam_kwargs or {}))
        super().__init__(**beam_kwargs)
        self._model, self._revision, self._batch_size = model, revision, batch_size
        self._compile_cache, self._options, self._load_kwargs = compile_cache, options, dict(load_kwargs or {})

    def load_model(self):
        """Load the checkpoint (once per worker process): a Generator."""
        from xlagen.engine.compile_cache import enable_compile_cache
        from xlagen.engine.generator import load
        enable_compile_cache(self._compile_cache)
        return load(self._model, revision=self._revision, **self._load_kwargs)

    def run_inference(self, batch, model, inference_args=None):
        """batch: a sequence of str prompts; model: the Generator; inference_args: generation
        options that override the handler's. Returns one PredictionResult per prompt, in order."""
        prompts = list(batch)
        options = dict(self._options, **(inference_args or {}))
        done = dict(model.generate_many(prompts, batch_size=self._batch_size,
                                        progress=lambda _, new: _NEW_TOKENS.inc(new), **options))
        return [PredictionResult(prompt, done[n], model.path) for n, prompt in enumerate(prompts)]

    def get_metrics_namespace(self):
        """Beam metrics of this handler (and the new_tokens counter) go under "xlagen"."""
        return "xlagen"


def generate(todo, pipeline_args, model=None, revision=None, batch_size=None, compile_cache=None, options=None,
             staging=None, load_kwargs=None):
    """Run the prompts through a Beam pipeline (Create, RunInference, WriteToText) and read
    back what it wrote.

    Args:
      todo: list of jobs.batch.Prompt to generate.
      pipeline_args: list of str, Beam's own options (--runner DirectRunner, --direct-num-workers 2, ...).
      model, revision, batch_size, compile_cache, options, load_kwargs: as for XlagenModelHandler.
      staging: where the workers write their result shards, a folder every worker and this
        process can reach (gs://... on Dataflow); None: a temporary local folder.
    Returns:
      (list of jobs.batch.result objects (dicts), in no particular order; new tokens generated: int).
    """
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    handler = KeyedModelHandler(XlagenModelHandler(model, revision, batch_size, compile_cache, load_kwargs=load_kwargs,
                                                    **(options or {})))
    records = [(json.dumps(p.id), p.text) for p in todo]  # Beam's coders need the id as a str
    with tempfile.TemporaryDirectory(prefix="xlagen-beam-") as local:
        # A folder of this run's own: shards an earlier, killed run left are never read back.
        folder = FileSystems.join(staging, f"xlagen-{uuid.uuid4().hex}") if staging else local
        prefix = FileSystems.join(folder, "part")
        pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
        (pipeline
         | "prompts" >> beam.Create(records)
         | "generate" >> RunInference(handler)
         | "as json" >> beam.Map(_as_json)
         | "write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl"))
        outcome = pipeline.run()
        outcome.wait_until_finish()
        shards = [m.path for m in FileSystems.match([prefix + "*.jsonl"])[0].metadata_list]
        lines = []
        for shard in sorted(shards):
            with FileSystems.open(shard) as f:
                lines += [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
        if staging:
            FileSystems.delete([folder])
    counters = outcome.metrics().query(MetricsFilter().with_name("new_tokens"))["counters"]
    return lines, sum(c.committed or c.attempted or 0 for c in counters)


def _as_json(keyed):
    ident, prediction = keyed
    return json.dumps(result(json.loads(ident), prediction.example, prediction.inference), ensure_ascii=False)
