"""Generation over a file of prompts (`xlagen batch`): read and check the input, resume into
the output, keep the output in input order.

The output is JSON Lines, one object per prompt: {"id", "prompt", "completions"} or, for a bad
line under --on-error skip, {"id", "error"}. Results are appended and flushed batch by batch,
in the order batches finish (by length bucket); when every prompt has its line the file is
rewritten in input order. A rerun reads what is there, drops a last line cut short by a kill,
and generates only the prompts whose id has no line yet: a killed job loses at most the batch
in flight and never writes an id twice.
"""
import json
import os
from typing import NamedTuple, Optional

from xlagen.kernels.errors import BatchFileError


class Prompt(NamedTuple):
    """One input line: line (python int, from 1), id (any JSON value; default: the line
    number), text (str, or None when the line is bad) and error (str, or None)."""
    line: int
    id: object
    text: Optional[str]
    error: Optional[str]


def key(value):
    """A JSON value as a hashable, canonical string (ids 1 and "1" stay different)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def read_input(path, encode=None, max_tokens=None):
    """The prompts of a JSON Lines file (name ending in .jsonl: {"prompt": str, "id": optional})
    or a plain text file (one prompt a line). Blank lines are skipped.

    Args:
      path: str.
      encode: None, or a function str -> list of token ids: a prompt that encodes to nothing
        (or to more than max_tokens) is a bad line.
      max_tokens: python int or None, the longest prompt the model can continue.
    Returns:
      list of Prompt, in file order; bad lines have .error set.
    Raises:
      BatchFileError when the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = _lines(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise BatchFileError(f"cannot read the input file {path}: {e}") from None
    jsonl = path.lower().endswith(".jsonl")
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        prompt = _parse(line, number) if jsonl else Prompt(number, number, line, None)
        if prompt.error is None and encode is not None:
            count = len(encode(prompt.text))
            if count == 0:
                prompt = prompt._replace(error="the prompt encodes to no tokens")
            elif max_tokens is not None and count > max_tokens:
                prompt = prompt._replace(error=f"the prompt is {count} tokens long, beyond the {max_tokens} "
                                               f"the model can continue with these options; shorten it or "
                                               f"lower max_new_tokens")
        prompts.append(prompt)
    return prompts


def _lines(text):
    """Lines split at newlines only (str.splitlines also splits at U+2028 and other characters
    JSON strings may hold), without a trailing carriage return."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def check_unique(path, prompts):
    """Raise BatchFileError when two lines share an id: a resumed job finds its results by id."""
    seen = {}
    for prompt in prompts:
        ident = key(prompt.id)
        if ident in seen:
            raise BatchFileError(f"{path} line {prompt.line}: id {ident} is already used on line {seen[ident]}; "
                                 f"give every line its own id")
        seen[ident] = prompt.line


def _parse(line, number):
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return Prompt(number, number, None, f"not JSON ({e.msg} at column {e.colno})")
    except ValueError as e:
        return Prompt(number, number, None, f"not JSON ({e})")
    if not isinstance(record, dict):
        return Prompt(number, number, None, f"a JSON {type(record).__name__}, not an object with \"prompt\"")
    ident = record.get("id", number)
    if "prompt" not in record:
        return Prompt(number, ident, None, "no \"prompt\" field")
    if not isinstance(record["prompt"], str):
        return Prompt(number, ident, None, f"\"prompt\" is a {type(record['prompt']).__name__}, not a string")
    return Prompt(number, ident, record["prompt"], None)


def describe(path, prompt):
    """The message of a bad line: 'FILE line N: problem'."""
    return f"{path} line {prompt.line}: {prompt.error}"


class Output:
    """The output file of a job over `prompts` (list of Prompt): what it already holds, appends
    flushed per batch, and the final rewrite in input order."""

    def __init__(self, path, prompts, input_path):
        self.path = path
        self._order = {key(p.id): n for n, p in enumerate(prompts)}
        self._text = {key(p.id): p.text for p in prompts}
        self.done = set()
        if os.path.exists(path):
            if not os.path.isfile(path) or os.path.samefile(path, input_path):
                raise BatchFileError(f"the output {path} is {'the input file' if os.path.isfile(path) else 'not a file'}"
                                     f"; pass another --output")
            self._check_existing(input_path)
        try:
            self._file = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise BatchFileError(f"cannot write the output file {path}: {e.strerror}; pass another --output") from None

    def _check_existing(self, input_path):
        """Read the lines a killed or finished run left; refuse a file that is not this job's."""
        path = self.path
        with open(path, "rb") as f:
            data = f.read()
        whole = data[:data.rfind(b"\n") + 1]
        tail = data[len(whole):]
        # A last line without its newline was cut short by a kill, if it starts as our lines do.
        if tail and not (tail.startswith(_LINE_START) or _LINE_START.startswith(tail)):
            raise BatchFileError(f"{path} does not end as a file xlagen batch writes; refusing to add to it: "
                                 f"pass another --output, or move the file away")
        for number, raw in enumerate(whole.split(b"\n")[:-1], 1):
            try:
                record = json.loads(raw)
                ident = key(record["id"])
            except (ValueError, KeyError, TypeError):
                record, ident = None, None
            if not _is_output(record):
                raise BatchFileError(f"{path} line {number} is not a line xlagen batch writes; refusing to add to it: "
                                     f"pass another --output, or move the file away")
            if ident not in self._order or ("error" not in record and record["prompt"] != self._text[ident]):
                raise BatchFileError(f"{path} line {number} (id {ident}) is not from {input_path}; refusing to add "
                                     f"to it: pass another --output, or move the file away")
            if "error" in record and self._text[ident] is not None:
                raise BatchFileError(f"{path} line {number} is the error line of id {ident}, whose input line is good "
                                     f"now: delete that output line to generate it")
            if ident in self.done:
                raise BatchFileError(f"{path} line {number}: id {ident} appears twice; delete one of the two lines, "
                                     f"or pass another --output")
            self.done.add(ident)
        if len(whole) < len(data):
            with open(path, "r+b") as f:
                f.truncate(len(whole))

    def write(self, records):
        """Append result objects (dicts with "id") and flush them to the file; ids that already
        have a line, or are not in the input, are not written."""
        for record in records:
            ident = key(record["id"])
            if ident in self.done or ident not in self._order:
                continue
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.done.add(ident)
        self._file.flush()

    def finish(self):
        """Close the file; when every prompt has its line, rewrite it in input order (through a
        temporary file and a rename, so a kill leaves the old or the new file, whole).
        Returns True when the output is complete."""
        self._file.close()
        if len(self.done) < len(self._order):
            return False
        with open(self.path, encoding="utf-8") as f:
            lines = _lines(f.read())
        lines.sort(key=lambda line: self._order[key(json.loads(line)["id"])])
        temporary = self.path + ".sorting"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        return True


_LINE_START = b'{"id": '  # how json.dumps starts every line write() appends


def _is_output(record):
    """Whether a parsed line is one xlagen batch writes: a result or an error line."""
    return isinstance(record, dict) and (
        set(record) == {"id", "error"} and isinstance(record["error"], str)
        or set(record) == {"id", "prompt", "completions"} and isinstance(record["completions"], list))


def result(ident, prompt, completions):
    """The output object of a prompt that was generated (id: JSON value, prompt: str, completions: list of str)."""
    return {"id": ident, "prompt": prompt, "completions": completions}


def failure(path, prompt):
    """The output object of a bad line under --on-error skip."""
    return {"id": prompt.id, "error": describe(path, prompt)}


def prepare(gen, input_path, output_path, options, on_error="stop"):
    """Read the input, check every line before anything is generated, and open the output.

    Args:
      gen: a Generator with a tokenizer.  input_path, output_path: str.
      options: generation options (dict), as for generate.
      on_error: "stop" (raise at the first bad line) or "skip" (write an error line for it).
    Returns:
      (Output, every Prompt of the input, the good Prompts whose id has no line yet).
    """
    if on_error not in ("stop", "skip"):
        raise BatchFileError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    tokenizer = gen.require_tokenizer()
    positions = gen.config.max_positions
    new = gen.options_for(dict(options), 1).max_new_tokens
    if positions is not None and new >= positions:
        raise BatchFileError(f"max_new_tokens={new} leaves no room for a prompt in the model's {positions} positions; "
                             f"lower max_new_tokens")
    prompts = read_input(input_path, lambda text: tokenizer.encode(text).ids,
                         None if positions is None else positions - new)
    bad = [p for p in prompts if p.error]
    if bad and on_error == "stop":
        more = f" (and {len(bad) - 1} more bad lines: {', '.join(str(p.line) for p in bad[1:6])}"
        more = (more + (", ..." if len(bad) > 6 else "") + ")") if len(bad) > 1 else ""
        raise BatchFileError(f"{describe(input_path, bad[0])}{more}; nothing was generated. Fix the line, or pass "
                             f"--on-error skip (on_error='skip') to write an error line for it and go on")
    check_unique(input_path, prompts)
    out = Output(output_path, prompts, input_path)
    out.write([failure(input_path, p) for p in bad if key(p.id) not in out.done])
    return out, prompts, [p for p in prompts if p.error is None and key(p.id) not in out.done]


def run(gen, input_path, output_path, options=None, batch_size=None, on_error="stop", progress=None, generate=None):
    """The whole job on this machine: generate every prompt of the input that has no output
    line yet, appending each result, then put the output in input order.

    Args: as for prepare; batch_size as for Generator.generate_many; progress: None, or a
      function (prompts done, new tokens, total prompts to generate) called once before the
      first batch with (0, 0, total) and then after each batch; generate: None (this process,
      Generator.generate_many), or a function (todo prompts, options) -> (iterable of result
      objects, new tokens: int), as engine.beam.generate.
    Returns:
      {"prompts": lines of the input, "generated": prompts generated now, "earlier": prompts
      an earlier run had done, "bad": bad lines, "tokens": new tokens generated now}.
    """
    options = dict(options or {})
    out, prompts, todo = prepare(gen, input_path, output_path, options, on_error)
    tokens = [0]
    if progress is not None:
        progress(0, 0, len(todo))

    def counted(done, new):
        tokens[0] += new
        if progress is not None:
            progress(done, new, len(todo))

    try:
        if generate is None:
            for index, completions in gen.generate_many([p.text for p in todo], batch_size=batch_size,
                                                        progress=counted, **options):
                out.write([result(todo[index].id, todo[index].text, completions)])
        elif todo:
            records, tokens[0] = generate(todo, options)
            out.write(records)
            missing = len(todo) - sum(key(p.id) in out.done for p in todo)
            if missing:
                raise BatchFileError(f"the pipeline returned no result for {missing} of {len(todo)} prompts; on a "
                                     f"remote runner pass --staging with a folder every worker can write")
    finally:
        out.finish()
    return summary(prompts, todo, tokens[0])


def summary(prompts, todo, tokens):
    """What a job did (see run)."""
    bad = sum(p.error is not None for p in prompts)
    return {"prompts": len(prompts), "generated": len(todo), "earlier": len(prompts) - bad - len(todo),
            "bad": bad, "tokens": tokens}
