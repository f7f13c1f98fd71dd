"""The Triton model repository as the deploy uploads it: checked, then rendered for one host.

One repository in git serves every host (a one-GPU workstation, a two-GPU host, the CPU-only
lab): each model's config.pbtxt is a template whose `instance_group` and `parameters` are
rendered from host data here, so nobody hand-edits a config for a specific GPU. The helpers are
pure (stdlib only, no pyinfra) so unit tests, the contract test and the deploy share them and the
file set tested is byte for byte the file set uploaded.

config.pbtxt is edited as text rather than re-serialised from protobuf, so its comments and layout
survive and a rendered file still reads like the template it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.pbtxt"
REQUIREMENTS = "requirements.txt"
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")
_SKIPPED = ("__pycache__", ".pyc", ".pyo")

_OPENERS = ("{", "[", "<")
_CLOSERS = ("}", "]", ">")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[^\s,#:{}\[\]<>;\"']+")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')


@dataclass(frozen=True)
class Field:
    """One top-level field of a text-format protobuf: `name` and the span of the whole field."""

    name: str
    start: int
    end: int


def validate_model_dir(path: Path) -> list[str]:
    """What keeps Triton from loading this model folder, as messages naming model and file.

    Triton would say the same at load time, on the host, after the upload; checking here stops
    the run before any host is touched.
    """
    path = Path(path)
    config = path / CONFIG
    if not config.is_file():
        return [f"model {path.name!r}: {config} is missing"]
    text = config.read_text()
    try:
        fields = {field.name: text[field.start : field.end] for field in top_level_fields(text)}
    except ValueError as exc:
        return [f"model {path.name!r}: {config} does not parse: {exc}"]
    problems = []
    name = _scalar(fields.get("name", ""))
    if name != path.name:
        problems.append(
            f"model {path.name!r}: {config} has name: {name!r}; "
            f"Triton needs it to equal the folder name {path.name!r}"
        )
    if not (_scalar(fields.get("backend", "")) or _scalar(fields.get("platform", ""))):
        problems.append(f"model {path.name!r}: {config} sets neither backend nor platform")
    if not any(child.is_dir() and child.name.isdigit() for child in path.iterdir()):
        problems.append(
            f"model {path.name!r}: {path} has no numbered version folder (such as {path}/1)"
        )
    return problems


def render_config(
    text: str,
    *,
    instance_kind: str,
    gpus: Sequence[int] | None,
    parameters: Mapping[str, str],
    count: int = 1,
) -> str:
    """config.pbtxt text for one host: its instance_group replaced, its parameters filled.

    KIND_GPU with gpus [0, 1] gives `count` instances on each listed GPU, and with no gpus
    `count` instances on every GPU Triton sees; KIND_CPU gives `count` CPU instances. Only
    parameters the template declares can be filled, so a misspelt key in host data is an
    error here instead of a setting the model silently never reads.
    """
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind must be one of {INSTANCE_KINDS}, not {instance_kind!r}")
    if instance_kind == "KIND_CPU" and gpus:
        raise ValueError(f"instance_kind KIND_CPU takes no gpus (got {list(gpus)})")
    if gpus and any(not isinstance(gpu, int) or gpu < 0 for gpu in gpus):
        raise ValueError(f"gpus must be GPU indexes (integers from 0), not {list(gpus)}")
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")

    text = _fill_parameters(text, parameters)
    kept = []
    position = 0
    for field in top_level_fields(text):
        if field.name == "instance_group":
            kept.append(text[position : field.start])
            position = field.end + len(text[field.end :]) - len(text[field.end :].lstrip())
    kept.append(text[position:])
    body = "".join(kept).rstrip() + "\n"
    group = f"    count: {count}\n    kind: {instance_kind}\n"
    if instance_kind == "KIND_GPU" and gpus:
        group += f"    gpus: [ {', '.join(str(gpu) for gpu in gpus)} ]\n"
    return body + "\ninstance_group [\n  {\n" + group + "  }\n]\n"


def render_repository(
    src_root: Path,
    *,
    instance_kind: str,
    gpus: Sequence[int] | None,
    parameters_by_model: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, bytes]:
    """Every file to upload, relative POSIX path to bytes, with each config.pbtxt rendered.

    A model is a folder of src_root holding config.pbtxt. Files are taken as they are except
    bytecode caches; requirements.txt travels too, as the record on the host of what the model
    needs. Raises ValueError listing every problem (invalid model folder, parameters for a model
    that does not exist) before anything is produced.
    """
    src_root = Path(src_root)
    models = model_dirs(src_root)
    parameters_by_model = dict(parameters_by_model or {})
    problems = [problem for model in models for problem in validate_model_dir(model)]
    unknown = sorted(set(parameters_by_model) - {model.name for model in models})
    problems += [f"parameters given for model {name!r}, which {src_root} lacks" for name in unknown]
    if problems:
        raise ValueError("model repository is not valid:\n  " + "\n  ".join(problems))

    files: dict[str, bytes] = {}
    for model in models:
        for path in _model_files(model):
            relpath = path.relative_to(src_root).as_posix()
            if path == model / CONFIG:
                rendered = render_config(
                    path.read_text(),
                    instance_kind=instance_kind,
                    gpus=gpus,
                    parameters=parameters_by_model.get(model.name, {}),
                )
                files[relpath] = rendered.encode()
            else:
                files[relpath] = path.read_bytes()
    return files


def write_repository(files: Mapping[str, bytes], dest_root: Path) -> None:
    """Lay a rendered file set out under dest_root (tests and local runs; the deploy uploads)."""
    for relpath, data in files.items():
        target = Path(dest_root) / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def model_requirements(src_root: Path) -> dict[str, list[str]]:
    """Each model's requirement lines (comments and blanks dropped), for Triton's Python env.

    A model without requirements.txt maps to an empty list, so the caller sees every model.
    """
    requirements = {}
    for model in model_dirs(Path(src_root)):
        path = model / REQUIREMENTS
        lines = path.read_text().splitlines() if path.is_file() else []
        stripped = (line.split("#", 1)[0].strip() for line in lines)
        requirements[model.name] = [line for line in stripped if line]
    return requirements


def model_dirs(src_root: Path) -> list[Path]:
    """The model folders of a repository: its direct subfolders that hold a config.pbtxt."""
    return sorted(child for child in Path(src_root).iterdir() if (child / CONFIG).is_file())


def top_level_fields(text: str) -> list[Field]:
    """The top-level fields of protobuf text format, each spanning name through value.

    A small scanner rather than a regex, because values nest (`{}` and `[]`) and strings or
    `#` comments may contain braces.
    """
    fields = []
    tokens = _tokens(text)
    for kind, start, end in tokens:
        if kind != "name":
            raise ValueError(f"config.pbtxt: expected a field name at offset {start}")
        name = text[start:end]
        kind, value_start, value_end = next(tokens, ("end", end, end))
        if kind == ":":
            kind, value_start, value_end = next(tokens, ("end", end, end))
        if kind in _OPENERS:
            value_end = _closing(text, tokens, kind)
        elif kind not in ("name", "value", "string"):
            raise ValueError(f"config.pbtxt: field {name!r} has no value at offset {value_start}")
        fields.append(Field(name, start, value_end))
    return fields


def _fill_parameters(text: str, values: Mapping[str, str]) -> str:
    """Replace the string_value of each named `parameters` entry; unknown keys are an error."""
    spans = {}
    for field in top_level_fields(text):
        if field.name != "parameters":
            continue
        block = text[field.start : field.end]
        key = re.search(r"\bkey\s*:\s*(" + _STRING.pattern + ")", block)
        value = re.search(r"\bstring_value\s*:\s*(" + _STRING.pattern + ")", block)
        if key and value:
            spans[_unquote(key.group(1))] = (
                field.start + value.start(1),
                field.start + value.end(1),
            )
    unknown = sorted(set(values) - set(spans))
    if unknown:
        declared = ", ".join(sorted(spans)) or "none"
        raise ValueError(f"config.pbtxt declares no parameter {unknown} (declared: {declared})")
    for key in sorted(values, key=lambda k: spans[k][0], reverse=True):
        start, end = spans[key]
        text = text[:start] + _quote(values[key]) + text[end:]
    return text


def _tokens(text: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) tokens: names/numbers, strings and punctuation; comments skipped."""
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace() or char == ",":
            position += 1
        elif char == "#":
            newline = text.find("\n", position)
            position = len(text) if newline < 0 else newline
        elif char in "\"'":
            match = _STRING.match(text, position)
            if not match:
                raise ValueError(f"config.pbtxt: unterminated string at offset {position}")
            yield "string", position, match.end()
            position = match.end()
        elif char in "{}[]:;<>":
            yield char, position, position + 1
            position += 1
        else:
            match = _WORD.match(text, position)
            assert match is not None  # the character is none of the above, so it starts a word
            yield "name" if _NAME.match(match.group()) else "value", position, match.end()
            position = match.end()


def _closing(text: str, tokens: Iterator[tuple[str, int, int]], opener: str) -> int:
    """Consume tokens through the bracket matching `opener`; return the end offset."""
    depth = 1
    for kind, _, end in tokens:
        if kind in _OPENERS:
            depth += 1
        elif kind in _CLOSERS:
            depth -= 1
            if depth == 0:
                return end
    raise ValueError(f"config.pbtxt: unclosed {opener!r}")


def _scalar(field_text: str) -> str:
    """The value of a scalar field's text (`name: "x"` gives x), or "" when there is none."""
    _, _, value = field_text.partition(":")
    value = value.strip()
    return _unquote(value) if value[:1] in "\"'" and value else value


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _model_files(model: Path) -> list[Path]:
    return sorted(
        path
        for path in model.rglob("*")
        if path.is_file() and not any(part.endswith(_SKIPPED) for part in path.parts)
    )
